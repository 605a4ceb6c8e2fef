"""Grounding in the support-chat layer: train = serve byte for byte, only adapters trained grounded are
grounded, sources on both APIs, retrieval latency on /metrics, a broken knowledge base stops the start."""

import json
import subprocess
import sys

import httpx
import pytest

from common.chat_template import KIT_CHAT_TEMPLATE
from common.knowledge import load_knowledge, manifest_section
from common.manifest import AdapterManifest, write_manifest
from common.records import Conversation
from common.server_process import ROOT

SYSTEM = "You are a telecom support agent."
QUESTION = "How do I keep my phone number when I move to your network?"


@pytest.fixture(scope="module")
def grounding_store(tiny_model, tmp_path_factory):
    """`grounded` (manifest: knowledge base fingerprint, k=2) and `plain` (no knowledge section)."""
    from common.tiny import build_random_adapter

    store = tmp_path_factory.mktemp("grounding-adapters")
    kb = load_knowledge()
    for name, knowledge in (("grounded", manifest_section(kb, 2)), ("plain", None)):
        build_random_adapter(tiny_model, store / name, r=4, seed=3)
        write_manifest(store / name, AdapterManifest(name=name, system_prompt=SYSTEM, chat_template=KIT_CHAT_TEMPLATE,
                                                     knowledge=knowledge))
    return store


def test_training_and_serving_render_the_same_prompt_byte_for_byte(tiny_model, grounding_store, tmp_path, monkeypatch):
    from serve.chat import ChatService
    from serve.engine.local import LocalEngine
    from train.grounding import ground_rows

    monkeypatch.setenv("SUPPORTKIT_CACHE", str(tmp_path))
    conv = Conversation(id="c", split="train", scenario={"term": "porting", "cause": "info", "context": "home"},
                        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION},
                                  {"role": "assistant", "content": "Ask your operator for the porting code."}])
    trained = ground_rows([conv], load_knowledge(), k=2)[0]
    engine = LocalEngine(tiny_model, dtype="float32")
    engine.load_adapter("grounded", grounding_store / "grounded")
    engine.load_adapter("plain", grounding_store / "plain")
    train_prompt = engine.tokenizer.apply_chat_template(
        [m.model_dump() for m in trained.messages[:-1]], chat_template=KIT_CHAT_TEMPLATE, tokenize=False,
        add_generation_prompt=True)
    chat = ChatService(engine, "server default", knowledge=load_knowledge(), knowledge_cache=tmp_path)
    served, sources = chat.prompt_and_sources([{"role": "user", "content": QUESTION}], "grounded")
    assert served == train_prompt  # the same bytes the adapter was trained on
    assert "Knowledge base:\n[porting] number porting:" in served and "porting" in [e.id for e in sources]
    plain, none = chat.prompt_and_sources([{"role": "user", "content": QUESTION}], "plain")
    assert none == [] and "Knowledge base:" not in plain and SYSTEM in plain  # trained ungrounded: served as before
    base, _ = chat.prompt_and_sources([{"role": "user", "content": QUESTION}], None)
    assert "Knowledge base:" not in base

    from serve.errors import AdapterInvalid

    without = ChatService(engine, "server default", knowledge=None)
    with pytest.raises(AdapterInvalid, match="trained with a knowledge base, but this server has none"):
        without.prompt_and_sources([{"role": "user", "content": QUESTION}], "grounded")
    assert without.prompt_and_sources([{"role": "user", "content": QUESTION}], "plain")[1] == []


@pytest.fixture(scope="module")
def grounding_server(server_factory, tiny_model, grounding_store):
    return server_factory("--model", str(tiny_model), "--adapters", str(grounding_store), "--dtype", "float32")


def test_responses_carry_their_sources_and_metrics_time_the_retrieval(grounding_server):
    url = grounding_server.url
    ask = {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 4, "temperature": 0}
    grounded = httpx.post(url + "/v1/chat/completions", json={"model": "grounded", **ask}, timeout=60).json()
    plain = httpx.post(url + "/v1/chat/completions", json={"model": "plain", **ask}, timeout=60).json()
    assert "porting" in [s["id"] for s in grounded["sources"]] and grounded["sources"][0]["title"]
    assert plain["sources"] == []
    assert grounded["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"] + 40  # the entries are in the prompt

    with httpx.stream("POST", url + "/v1/chat/completions", json={"model": "grounded", "stream": True, **ask},
                      timeout=60) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert [c.get("sources") for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]] == [grounded["sources"]]

    from common.chat_template import render_chat

    text = render_chat([{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}])
    tgi = httpx.post(url + "/generate", timeout=60, json={
        "inputs": text, "parameters": {"adapter_id": "grounded", "max_new_tokens": 4, "details": True}}).json()
    assert tgi["details"]["sources"] == grounded["sources"]
    tgi_plain = httpx.post(url + "/generate", timeout=60, json={
        "inputs": text, "parameters": {"adapter_id": "plain", "max_new_tokens": 4, "details": True}}).json()
    assert tgi_plain["details"]["sources"] == []

    metrics = httpx.get(url + "/metrics").text
    count = [line for line in metrics.splitlines()
             if line.startswith('supportkit_retrieval_duration_seconds_count{adapter="grounded"}')]
    assert count and float(count[0].split()[-1]) >= 3
    assert 'supportkit_retrieval_duration_seconds_count{adapter="plain"}' not in metrics


def test_a_broken_knowledge_base_stops_the_start_with_its_reason(tiny_model, tmp_path):
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "plans.jsonl").write_text('{"id": "plan", "title": "Plan"}\n')
    proc = subprocess.run([sys.executable, "-m", "supportkit.cli", "serve", "--model", str(tiny_model),
                           "--knowledge", str(tmp_path / "kb"), "--port", "9"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    said = " ".join(proc.stderr.split())  # the console wraps long lines
    assert "plans.jsonl:1: entry 'plan': text: Field required" in said and "Traceback" not in said
