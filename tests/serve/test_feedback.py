"""Feedback store (SQLite, WAL, redacted), its export as an eval question file, and persistence across restarts."""

import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys

import pytest
from gradio_client import Client

from eval.questions import load_questions
from serve.feedback import FeedbackStore, export_jsonl
from tests.conftest import ROOT

CONVERSATION = [
    {"role": "user", "content": "My line is down. Call me on +33 6 12 34 56 78 or mail jane.doe@example.com"},
    {"role": "assistant", "content": "Sorry to hear that. Please restart the router."},
    {"role": "user", "content": "Done, still down. My IBAN is DE89 3704 0044 0532 0130 00 for the refund."},
    {"role": "assistant", "content": "I will open a ticket with our technicians."},
]


def test_rating_is_stored_redacted_and_replaced_on_rerating(tmp_path):
    store = FeedbackStore(tmp_path / "f.db")
    fid = store.rate("conv-1", 1, "support-a", 1, CONVERSATION)
    assert store.rate("conv-1", 1, "support-a", -1, CONVERSATION) == fid  # same reply: the rating is replaced
    assert store.comment(fid, "wrong answer, customer is jane@example.org")
    [rec] = store.records()
    assert rec.rating == -1 and rec.turn == 1 and rec.model == "support-a"
    assert rec.comment == "wrong answer, customer is [EMAIL]"
    assert rec.messages[0]["content"] == "My line is down. Call me on [PHONE] or mail [EMAIL]"
    assert len(rec.messages) == 2  # the conversation up to and including the rated reply
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("f.db*"))
    assert b"12 34 56 78" not in raw and b"jane.doe" not in raw
    with sqlite3.connect(tmp_path / "f.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_rating_taken_back_is_removed(tmp_path):
    store = FeedbackStore(tmp_path / "f.db")
    store.rate("conv-1", 1, "support-a", 1, CONVERSATION, side="B")
    assert not store.clear("conv-1", 1, side="A")
    assert store.clear("conv-1", 1, side="B")
    assert list(store.records()) == []


def test_only_replies_can_be_rated(tmp_path):
    store = FeedbackStore(tmp_path / "f.db")
    with pytest.raises(ValueError):
        store.rate("c", 0, "m", 1, CONVERSATION)  # a user turn
    with pytest.raises(ValueError):
        store.rate("c", 1, "m", 0, CONVERSATION)
    assert not store.comment("no-such-id", "x")


def _writer(path, worker):
    store = FeedbackStore(path)
    for i in range(20):
        store.rate(f"conv-{worker}-{i}", 3, "support-b", 1 if i % 2 else -1, CONVERSATION)


def test_several_processes_share_one_file(tmp_path):
    path = tmp_path / "shared.db"
    procs = [multiprocessing.get_context("spawn").Process(target=_writer, args=(path, w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert len(list(FeedbackStore(path).records())) == 60


def test_export_is_an_eval_question_file(tmp_path):
    store = FeedbackStore(tmp_path / "f.db")
    store.rate("conv-1", 3, "support-a", 1, CONVERSATION, comment="good")
    store.rate("conv-2", 1, "support-b", -1, CONVERSATION)
    out = tmp_path / "questions.jsonl"
    assert export_jsonl(store, out) == 2
    liked, disliked = load_questions([out])
    assert liked.messages[-1]["role"] == "user" and "[IBAN]" in liked.messages[-1]["content"]
    assert liked.reference == "I will open a ticket with our technicians."
    assert disliked.reference is None and len(disliked.messages) == 1
    assert export_jsonl(store, out, rating=-1) == 1


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "supportkit.cli", "feedback", *args], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=120)


def test_export_command_errors_are_clear(tmp_path):
    missing = cli("export", "--db", str(tmp_path / "none.db"), "--out", str(tmp_path / "q.jsonl"))
    assert missing.returncode == 2 and "no feedback database" in missing.stderr and "Traceback" not in missing.stderr
    FeedbackStore(tmp_path / "f.db")
    bad = cli("export", "--db", str(tmp_path / "f.db"), "--out", str(tmp_path / "q.jsonl"), "--rating", "meh")
    assert bad.returncode == 2 and "--rating" in bad.stderr


def test_feedback_given_on_the_page_survives_a_restart(server_factory, tiny_model, adapter_store, tmp_path):
    db = tmp_path / "feedback.db"
    args = ("--model", str(tiny_model), "--adapters", str(adapter_store), "--dtype", "float32")
    env = {"SUPPORTKIT_SERVE_FEEDBACK_DB": str(db)}
    first = server_factory(*args, env=env)
    client = Client(first.url + "/demo/", verbose=False)
    client.predict("My router is dead, call me at +44 20 7946 0958", "support-a", False, "", 8, 0, api_name="/send")
    status = client.predict("A", 1, False, "too vague; customer id is account number: 99887766", api_name="/rate")
    assert status == "Saved."
    assert client.predict("A", 0, True, "", api_name="/rate") == "only the assistant's replies can be rated"
    assert first.stop() == 0

    second = server_factory(*args, env=env)  # a restarted (or another) replica on the same database file
    client = Client(second.url + "/demo/", verbose=False)
    client.predict("Is there an outage in Lyon?", "support-b", False, "", 8, 0, api_name="/send")
    assert client.predict("A", 1, True, "", api_name="/rate") == "Saved."

    out = tmp_path / "feedback.jsonl"
    done = cli("export", "--out", str(out), env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["feedback"]["rating"] for r in records] == [-1, 1]
    assert [r["feedback"]["model"] for r in records] == ["support-a", "support-b"]
    assert records[0]["messages"] == [{"role": "user", "content": "My router is dead, call me at [PHONE]"}]
    assert records[0]["feedback"]["comment"] == "too vague; customer id is account number: [ACCOUNT]"
    assert "reference" not in records[0] and records[1]["reference"] == records[1]["feedback"]["reply"]
    assert [q.id for q in load_questions([out])] == [r["id"] for r in records]


def test_an_unwritable_database_is_a_warning_not_a_crash(tmp_path, caplog):
    from serve.demo.conversation import Session, rate
    from serve.feedback import open_store

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert open_store(blocker / "feedback.db") is None
    assert "SUPPORTKIT_SERVE_FEEDBACK_DB" in caplog.text
    with pytest.raises(ValueError, match="no writable feedback database"):
        rate(None, Session(), "A", 1, True)
