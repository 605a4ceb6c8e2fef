"""`supportkit serve` with no options: the embedded Gemma 3 270M with the shipped telecom-support adapter answers
customers like a support agent and ends its turns. The real model, the real adapter, the real server."""

import asyncio
from pathlib import Path

import httpx
import pytest

from common.models import prepare_default_model
from eval.questions import load_questions

QUESTIONS = load_questions([Path(__file__).resolve().parents[2] / "eval/configs/questions-demo.jsonl"], limit=8)


@pytest.fixture(scope="module")
def default_server(server_factory):
    prepare_default_model()  # converts the packaged GGUF once per machine (about a minute)
    return server_factory()


def test_the_demo_adapter_answers_and_ends_its_turns(default_server):
    models = {m["id"]: m for m in httpx.get(default_server.url + "/v1/models").json()["data"]}
    assert "telecom-support" in models and models["telecom-support"]["parent"] == "gemma-3-270m"

    async def ask(client, question):
        r = await client.post("/v1/chat/completions", json={
            "model": "telecom-support", "messages": [{"role": "user", "content": question}],
            "temperature": 0, "max_tokens": 320})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]

    async def ask_all():
        async with httpx.AsyncClient(base_url=default_server.url, timeout=900) as client:
            return await asyncio.gather(*(ask(client, q.text) for q in QUESTIONS))

    replies = asyncio.run(ask_all())
    ended = [c for c in replies if c["finish_reason"] == "stop"]
    # Greedy, so deterministic on one machine; one reply in eight may run long on another CPU's arithmetic.
    assert len(ended) >= len(QUESTIONS) - 1, [c["message"]["content"][-200:] for c in replies]
    for choice in replies:
        text = choice["message"]["content"]
        assert len(text.split()) >= 15, text  # an answer, not a fragment
        assert "<start_of_turn>" not in text and "<end_of_turn>" not in text


PORTING = "How do I keep my phone number when I move to your network?"


def _ask(server, question: str) -> dict:
    r = httpx.post(server.url + "/v1/chat/completions", timeout=900, json={
        "model": "telecom-support", "temperature": 0, "max_tokens": 320,
        "messages": [{"role": "user", "content": question}]})
    assert r.status_code == 200, r.text
    return r.json()


def test_the_demo_adapter_is_grounded_and_names_its_sources(default_server):
    """Trained grounded in the kit's glossary: the server retrieves for it and the reply names its sources."""
    models = {m["id"]: m for m in httpx.get(default_server.url + "/v1/models").json()["data"]}
    knowledge = models["telecom-support"]["manifest"]["knowledge"]
    assert knowledge["k"] == 2 and knowledge["fingerprint"].startswith("sha256:")
    body = _ask(default_server, PORTING)
    assert "porting" in [s["id"] for s in body["sources"]]
    assert body["choices"][0]["finish_reason"] == "stop"


@pytest.fixture(scope="module")
def porting_reply(default_server) -> str:
    return _ask(default_server, PORTING)["choices"][0]["message"]["content"].lower()


def test_the_demo_adapter_answers_an_account_question_without_a_fault_script(porting_reply):
    from train.data.glossary import load_glossary

    assert not any(c.name in porting_reply for c in load_glossary().causes), porting_reply
    assert "number" in porting_reply and "operator" in porting_reply, porting_reply  # about porting, not a fault


@pytest.mark.xfail(strict=True, reason="the shipped adapter answers this how-to question with the term's definition "
                   "(what porting is, not how to do it); benchmarks/answer_quality.py measures how often")
def test_the_demo_adapter_says_how_to_keep_the_number(porting_reply):
    assert "porting code" in porting_reply, porting_reply
