"""Structured output: JSON schemas, JSON objects and regexes enforced token by token on a tiny random model (whose
free text is garbage), over both APIs with real clients, streamed and not, per row in mixed batches; invalid
grammars refused with the protocol's error; the judge panel gets parseable verdicts from the kit's server."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import jsonschema_rs
import pytest
import torch
from huggingface_hub import InferenceClient
from openai import BadRequestError, OpenAI

from serve.engine.grammar import Grammar
from serve.engine.local import LocalEngine
from serve.engine.remote_protocols import TGIProtocol, VLLMProtocol
from serve.engine.types import GenerationRequest, SamplingParams

TICKET = {  # bounded everywhere, so that any walk through it ends well within max_tokens
    "type": "object",
    "properties": {
        "category": {"enum": ["fibre", "mobile", "billing"]},
        "priority": {"type": "integer", "minimum": 1, "maximum": 5},
        "summary": {"type": "string", "maxLength": 12},
        "escalate": {"type": "boolean"},
        "tags": {"type": "array", "items": {"enum": ["wifi", "ont", "sim"]}, "maxItems": 2},
        "contact": {"type": "object", "properties": {"callback": {"type": "boolean"}}, "required": ["callback"]},
    },
    "required": ["category", "priority", "summary", "escalate", "tags", "contact"],
}
VERDICT = {"type": "object", "properties": {"score": {"type": "integer", "enum": [1, 2, 3, 4, 5]}}, "required": ["score"]}
PHONE = r"\+33 [1-9]( [0-9]{2}){4}"
MESSAGES = [{"role": "user", "content": "My fibre drops every evening. Open a ticket as JSON."}]


def _schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "ticket", "schema": schema, "strict": True}}


def _valid(text: str, schema: dict) -> dict:
    value = json.loads(text)
    jsonschema_rs.validate(schema, value)
    return value


@pytest.fixture(scope="module")
def openai_client(live_server):
    return OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("model", ["", "support-a"])
def test_json_schema_replies_match_the_schema(openai_client, model):
    for seed in (0, 1):
        reply = openai_client.chat.completions.create(
            model=model, messages=MESSAGES, max_tokens=200, temperature=1.0 if seed else 0, seed=seed,
            response_format=_schema_format(TICKET))
        choice = reply.choices[0]
        assert choice.finish_reason == "stop", choice
        _valid(choice.message.content, TICKET)


def test_json_object_mode_yields_an_object(openai_client, live_server):
    # Any object may hold strings of any length, and a random model closes a string about once in a thousand
    # tokens: a reply may be cut by max_tokens (finish_reason "length"); every one that ends is an object.
    ended = 0
    for model in ("", "support-a", "support-b"):
        for seed in (0, 1):
            choice = openai_client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=60, temperature=seed,
                seed=seed, response_format={"type": "json_object"}).choices[0]
            assert choice.message.content.startswith("{")
            if choice.finish_reason == "stop":
                ended += 1
                assert isinstance(json.loads(choice.message.content), dict)
    assert ended >= 3
    # vLLM's structured_outputs on the completions route (what the kit's remote engine sends to vLLM or a kit)
    r = httpx.post(live_server.url + "/v1/completions", timeout=60, json={
        "prompt": "Priority:", "max_tokens": 40, "temperature": 0, "structured_outputs": {"regex": "[1-5]"}})
    assert r.status_code == 200 and re.fullmatch("[1-5]", r.json()["choices"][0]["text"])


def test_tgi_grammar_json_and_regex(live_server):
    client = InferenceClient(base_url=live_server.url)
    prompt = "Customer: my fibre drops.\nAgent:"
    out = client.text_generation(prompt, max_new_tokens=200, details=True, grammar={"type": "json", "value": TICKET})
    assert out.details.finish_reason == "eos_token"
    _valid(out.generated_text, TICKET)
    phone = client.text_generation(prompt, max_new_tokens=40, adapter_id="support-b",
                                   grammar={"type": "regex", "value": PHONE})
    assert re.fullmatch(PHONE, phone), phone


def test_streaming_gives_the_same_text(openai_client, live_server):
    kwargs = dict(model="support-b", messages=MESSAGES, max_tokens=200, temperature=0,
                  response_format=_schema_format(TICKET))
    whole = openai_client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = [c.choices[0].delta.content or "" for c in openai_client.chat.completions.create(**kwargs, stream=True)
              if c.choices]
    assert len([c for c in chunks if c]) > 5  # token by token, not one block at the end
    assert "".join(chunks) == whole
    _valid(whole, TICKET)

    client = InferenceClient(base_url=live_server.url)
    grammar = {"type": "regex", "value": PHONE}
    text = client.text_generation("Call me on", max_new_tokens=40, grammar=grammar)
    events = list(client.text_generation("Call me on", max_new_tokens=40, grammar=grammar, stream=True, details=True))
    assert "".join(e.token.text for e in events) == text and events[-1].details.finish_reason == "eos_token"


def test_invalid_grammars_are_refused_with_the_problem_named(openai_client, live_server):
    with pytest.raises(BadRequestError) as bad:
        openai_client.chat.completions.create(model="", messages=MESSAGES, max_tokens=8,
                                              response_format=_schema_format({"type": "colour"}))
    error = bad.value.body
    assert bad.value.status_code == 400 and "colour" in error["message"], error
    assert error["param"] == "response_format.json_schema.schema" and error["type"] == "invalid_request_error"
    r = httpx.post(live_server.url + "/v1/chat/completions", timeout=30, json={
        "messages": MESSAGES, "response_format": {"type": "json_schema"}})
    assert r.status_code == 400 and "json_schema" in r.json()["error"]["message"]

    cases = [({"type": "json", "value": {"properties": 3}}, "properties"),
             ({"type": "json", "value": "{not json"}, "parameters.grammar.json.value"),
             ({"type": "regex", "value": "(unclosed"}, "parameters.grammar.value"),
             ({"type": "lark", "value": "start: 'a'"}, "does not match any of the expected tags")]
    for grammar, named in cases:
        for path in ("/generate", "/generate_stream"):
            r = httpx.post(live_server.url + path, timeout=30,
                           json={"inputs": "hi", "parameters": {"grammar": grammar, "max_new_tokens": 4}})
            assert r.status_code == 422, (grammar, r.text)
            body = r.json()
            assert body["error_type"] == "validation" and named in body["error"], (grammar, body)


def test_the_remote_engine_passes_grammars_on():
    params = SamplingParams(max_new_tokens=8, grammar=Grammar.json_schema(VERDICT, "x"))
    req = GenerationRequest("hi", None, params)
    assert TGIProtocol.parameters(req, None, None)["grammar"] == {"type": "json", "value": VERDICT}
    assert VLLMProtocol.body(req, "m")["structured_outputs"] == {"json": VERDICT}
    req.params.grammar = Grammar.pattern(PHONE, "x")
    assert TGIProtocol.parameters(req, None, None)["grammar"] == {"type": "regex", "value": PHONE}
    assert VLLMProtocol.body(req, "m")["structured_outputs"] == {"regex": PHONE}


@pytest.fixture(scope="module")
def engine(tiny_gemma):
    engine = LocalEngine(tiny_gemma, dtype="float32", max_batch_size=8)
    engine.start()
    yield engine
    engine.stop()


def test_constrained_rows_leave_the_others_of_their_batch_unchanged(engine):
    prompts = [engine.render_chat([{"role": "user", "content": f"Question {i}: my router blinks red."}]) for i in range(6)]
    short_ticket = {**TICKET, "required": ["category", "escalate"],
                    "properties": {k: TICKET["properties"][k] for k in ("category", "escalate")}}
    grammars = [None, Grammar.json_schema(short_ticket, "x"), None, Grammar.pattern(PHONE, "x"), None,
                Grammar.json_schema(VERDICT, "x")]
    for g in grammars:
        if g is not None:
            engine.output.grammars.compile(g)  # as the API layer does before queueing
    reqs = [GenerationRequest(p, None, SamplingParams(max_new_tokens=40, grammar=g)) for p, g in zip(prompts, grammars)]

    async def alone():
        return [await engine.generate(r) for r in reqs if r.params.grammar is None]

    async def together():
        with engine.scheduler.lock:  # all queued before the engine's loop looks: admitted together
            gens = [engine.submit(r) for r in reqs]
        return await asyncio.gather(*(g.result() for g in gens))

    joint = asyncio.run(together())
    free = [r for r, g in zip(joint, grammars) if g is None]
    assert [[t.id for t in r.tokens] for r in free] == [[t.id for t in r.tokens] for r in asyncio.run(alone())]
    assert all(r.finish_reason == "eos_token" for r, g in zip(joint, grammars) if g is not None)
    _valid(joint[1].text, short_ticket)
    _valid(joint[5].text, VERDICT)
    assert re.fullmatch(PHONE, joint[3].text)


@pytest.mark.parametrize("api", ["openai", "tgi"])
def test_the_panel_gets_schema_verdicts_from_the_kit(live_server, api):
    from eval.llm_judge import LLMJudge
    from eval.panel import JudgeConfig, PanelConfig

    judge_config = JudgeConfig(name="kit", kind="llm", api=api, url=live_server.url, max_tokens=120, parse_retries=0)
    judge = LLMJudge(judge_config, PanelConfig(judges=[judge_config]), None)
    rubric = judge.rubric("My fibre drops.", "Restart the ONT.", "Please restart the ONT and wait two minutes.")
    pair = judge.pairwise("My fibre drops.", "Restart the ONT.", "Restart the ONT.", "Our shops open at nine.")
    for verdict in (rubric, pair):
        assert verdict["status"] == "ok" and verdict["structured"] and verdict["attempts"] == 1, verdict
    assert set(rubric["verdict"]) >= {"correctness", "empathy"} and all(1 <= s <= 5 for s in rubric["verdict"].values())
    assert pair["verdict"] in ("A", "B", "tie")


def test_the_mask_is_the_same_on_every_path(engine):
    """The numpy path (fp32 on CPU) and the torch path (other dtypes and devices) forbid the same tokens."""
    from serve.engine.grammar import GrammarState

    state = GrammarState(engine.output.grammars.compile(Grammar.pattern(PHONE, "x")))
    logits = torch.randn(engine.model.config.vocab_size)
    fast, other = state.mask(logits), state.mask(logits.to(torch.bfloat16))
    assert torch.equal(fast.isinf(), other.isinf()) and 0 < int((~fast.isinf()).sum()) < logits.numel() // 4
