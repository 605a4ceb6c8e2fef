"""Question files: plain questions, the data step's conversation records, the demo set, bad input."""

import json

import pytest

from eval.questions import DEMO_QUESTIONS, QuestionFileError, load_questions


def write(path, records):
    path.write_text("\n".join(json.dumps(r) if not isinstance(r, str) else r for r in records) + "\n")
    return path


def test_demo_questions_are_complete():
    questions = load_questions([DEMO_QUESTIONS])
    assert len(questions) >= 20
    assert all(q.reference and q.text for q in questions)


def test_conversation_records_use_the_last_assistant_turn_as_reference(tmp_path):
    path = write(tmp_path / "conversations.jsonl", [
        {"id": "c1", "split": "test", "scenario": {"term": "APN", "cause": "misconfiguration", "context": "mobile"},
         "messages": [{"role": "system", "content": "You are a support agent."},
                      {"role": "user", "content": "Data does not work."},
                      {"role": "assistant", "content": "Check the APN."},
                      {"role": "user", "content": "Where is it?"},
                      {"role": "assistant", "content": "Settings > Mobile network."}]},
        {"id": "c2", "split": "train", "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]},
    ])
    [q] = load_questions([path])
    assert q.id == "c1" and q.reference == "Settings > Mobile network."
    assert [m["role"] for m in q.messages] == ["system", "user", "assistant", "user"]
    assert q.text == "Where is it?" and q.scenario["term"] == "APN"


def test_plain_questions_limit_and_no_reference(tmp_path):
    path = write(tmp_path / "q.jsonl", [{"id": 1, "question": "a?"}, "", {"id": 2, "question": "b?", "reference": "b"}])
    questions = load_questions([path], limit=1)
    assert [(q.id, q.reference) for q in questions] == [("1", None)]


@pytest.mark.parametrize("records, message", [
    (["not json"], "not JSON"),
    ([{"question": "no id"}], "needs an `id`"),
    ([{"id": 1}], "needs `question`"),
    ([{"id": 1, "messages": "hello"}], "list of"),
    ([{"id": 1, "messages": [{"role": "assistant", "content": "only me"}]}], "no user turn"),
    ([{"id": 1, "question": "a"}, {"id": 1, "question": "b"}], "duplicate"),
    ([{"id": 1, "question": "a", "reference": 3}], "reference"),
])
def test_bad_question_files_are_clear_errors(tmp_path, records, message):
    with pytest.raises(QuestionFileError, match=message):
        load_questions([write(tmp_path / "bad.jsonl", records)])


def test_missing_file(tmp_path):
    with pytest.raises(QuestionFileError, match="not found"):
        load_questions([tmp_path / "nope.jsonl"])


def test_the_data_steps_dataset_is_a_question_file(tmp_path):
    """The contract between the steps: `supportkit data generate` output, test split only."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    subprocess.run([sys.executable, "-m", "supportkit.cli", "data", "generate", "--offline", "--out", str(tmp_path),
                    "--scenarios", "40"], cwd=ROOT, check=True, capture_output=True)
    records = [json.loads(line) for line in (tmp_path / "conversations.jsonl").read_text().splitlines()]
    test_ids = {r["id"] for r in records if r["split"] == "test"}
    questions = load_questions([tmp_path])
    assert {q.id for q in questions} == test_ids and test_ids
    for q in questions:
        assert q.messages[-1]["role"] == "user" and q.reference and q.scenario
