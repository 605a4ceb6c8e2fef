"""Unmodified real clients against a real kit server on loopback (tiny model, two adapters)."""

import openai
import pytest
from huggingface_hub import InferenceClient

from tests.serve.reference import greedy_ids

QUESTION = [{"role": "user", "content": "My 4G data does not work abroad. What can I do?"}]


@pytest.fixture(scope="module")
def oai(live_server):
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0)


def test_openai_models_list_adapters_with_parent(oai):
    models = {m.id: m for m in oai.models.list().data}
    assert {"tiny-qwen2", "support-a", "support-b"} <= set(models)
    assert models["support-a"].parent == "tiny-qwen2"
    assert models["tiny-qwen2"].parent is None


def test_openai_chat_with_adapter_differs_from_base_and_counts_usage(oai):
    answers = {}
    for model in ("tiny-qwen2", "support-a", "support-b"):
        r = oai.chat.completions.create(model=model, messages=QUESTION, max_tokens=16, temperature=0)
        n = r.usage.completion_tokens
        assert 1 <= n <= 16 and r.usage.prompt_tokens > 10
        assert r.usage.total_tokens == r.usage.prompt_tokens + n
        assert r.choices[0].finish_reason == ("length" if n == 16 else "stop")
        assert r.model_extra["energy"]["source"] in ("estimate", "rapl", "nvml")
        answers[model] = r.choices[0].message.content
    assert len(set(answers.values())) == 3


def test_openai_stream_equals_non_stream(oai):
    full = oai.chat.completions.create(model="support-b", messages=QUESTION, max_tokens=20, temperature=0)
    chunks = list(oai.chat.completions.create(model="support-b", messages=QUESTION, max_tokens=20, temperature=0,
                                              stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_openai_unknown_adapter_is_404(oai):
    with pytest.raises(openai.NotFoundError) as err:
        oai.chat.completions.create(model="no-such-adapter", messages=QUESTION, max_tokens=4)
    assert "no-such-adapter" in str(err.value)


def test_tgi_text_generation_matches_peft(live_server, tiny_model, adapter_store):
    client = InferenceClient(base_url=live_server.url)
    prompt = "Hello, my router shows a red light and"
    out = client.text_generation(prompt, max_new_tokens=12, adapter_id="support-a", details=True, decoder_input_details=True)
    ids = [t.id for t in out.details.tokens]
    assert ids == greedy_ids(tiny_model, prompt, 12, adapter_store / "support-a")
    assert out.details.generated_tokens == 12 and out.details.finish_reason == "length"
    assert len(out.details.prefill) > 0 and out.details.prefill[1].logprob is not None
    base = client.text_generation(prompt, max_new_tokens=12, details=True)
    assert [t.id for t in base.details.tokens] == greedy_ids(tiny_model, prompt, 12)
    assert [t.id for t in base.details.tokens] != ids


def test_tgi_stream_with_details(live_server):
    client = InferenceClient(base_url=live_server.url)
    prompt = "Why is my VDSL sync rate low"
    events = list(client.text_generation(prompt, max_new_tokens=10, adapter_id="support-b", stream=True, details=True))
    assert len(events) == 10
    assert all(e.details is None for e in events[:-1])
    last = events[-1]
    assert last.details.finish_reason == "length" and last.details.generated_tokens == 10
    plain = client.text_generation(prompt, max_new_tokens=10, adapter_id="support-b")
    assert last.generated_text == plain == "".join(e.token.text for e in events)


def test_tgi_chat_completion(live_server):
    client = InferenceClient(base_url=live_server.url)
    out = client.chat_completion(QUESTION, model="support-a", max_tokens=8, temperature=0)
    assert out.choices[0].message.content and 1 <= out.usage.completion_tokens <= 8


def test_per_adapter_base_urls(live_server):
    """Clients that cannot pass an adapter id use /adapters/{name} as their base URL."""
    client = InferenceClient(base_url=live_server.url + "/adapters/support-a")
    direct = InferenceClient(base_url=live_server.url)
    prompt = "The eSIM profile"
    assert client.text_generation(prompt, max_new_tokens=8) == direct.text_generation(
        prompt, max_new_tokens=8, adapter_id="support-a")
    oai = openai.OpenAI(base_url=live_server.url + "/adapters/support-b/v1", api_key="x")
    r = oai.chat.completions.create(model="whatever", messages=QUESTION, max_tokens=6, temperature=0)
    assert r.model == "support-b"
