"""The prefix cache: greedy output with it equals output without it (fp32, both tiny families, Gemma3's sliding
window included, alone and in mixed batches), a prefix is reused only by the adapter load that computed it,
replacing or unloading an adapter drops its blocks, and the cache stays within its memory bound."""

import asyncio

import pytest

from common.tiny import LORA_MODULES, build_random_adapter
from serve.engine.local import LocalEngine
from serve.engine.types import GenerationRequest, SamplingParams
from tests.serve.reference import greedy_ids

HISTORY = ("My fibre connection drops every evening and the ONT light blinks red; I restarted the router twice. "
           "The cable is plugged in firmly and the other devices in the house lose the connection as well. ")


@pytest.fixture(scope="module", params=["qwen2", "gemma3"])
def engines(request, tiny_model, tiny_gemma, tmp_path_factory):
    """The same model twice, with and without a prefix cache, each with the same two adapters."""
    model_dir = tiny_model if request.param == "qwen2" else tiny_gemma
    store = tmp_path_factory.mktemp(f"prefix-{request.param}")
    dirs = {
        "qv": build_random_adapter(model_dir, store / "qv", r=8, target_modules=("q_proj", "v_proj"), seed=21),
        "all": build_random_adapter(model_dir, store / "all", r=6, alpha=10, target_modules=LORA_MODULES, seed=22),
    }
    cached = LocalEngine(model_dir, dtype="float32", max_batch_size=8, prefix_cache_mb=64)
    plain = LocalEngine(model_dir, dtype="float32", max_batch_size=8, prefix_cache_mb=0)
    for engine in (cached, plain):
        engine.start()
        for name, path in dirs.items():
            engine.load_adapter(name, path)
    yield model_dir, cached, plain, dirs
    cached.stop()
    plain.stop()


def _run(engine, prompt, adapter=None, n=16):
    return asyncio.run(engine.generate(GenerationRequest(prompt, adapter, SamplingParams(max_new_tokens=n))))


def _ids(result):
    return [t.id for t in result.tokens]


def _together(engine, reqs):
    async def run():
        with engine.scheduler.lock:  # queued before the loop looks: admitted and prefilled together
            gens = [engine.submit(r) for r in reqs]
        return await asyncio.gather(*(g.result() for g in gens))
    return asyncio.run(run())


def test_next_turn_reuses_the_history_and_answers_the_same(engines):
    model_dir, cached, plain, dirs = engines
    for adapter in (None, "qv", "all"):
        turn = [{"role": "user", "content": f"[{adapter}] " + HISTORY * 2}]  # longer than Gemma3's sliding window
        first = _run(cached, cached.render_chat(turn), adapter)
        assert first.cached_tokens == 0
        turn += [{"role": "assistant", "content": first.text}, {"role": "user", "content": "What should I try next?"}]
        prompt = cached.render_chat(turn)
        second = _run(cached, prompt, adapter)
        assert second.cached_tokens >= 64, (adapter, second.cached_tokens)  # the first turn's prompt, by blocks
        assert second.cached_tokens % cached.prefix.block_size == 0 and second.cached_tokens < second.prompt_tokens
        assert _ids(second) == _ids(_run(plain, prompt, adapter)) == greedy_ids(model_dir, prompt, 16, dirs.get(adapter))


def test_mixed_batch_with_prefixes_of_different_lengths(engines):
    """One joint prefill of rows that found 0, 1, 2... cached blocks, over different adapters, equals the same
    requests run without a cache."""
    _, cached, plain, _ = engines
    shared = "Account 7781. " + HISTORY * 2
    for adapter in ("qv", "all"):
        _run(cached, cached.render_chat([{"role": "user", "content": shared}]), adapter, n=4)
    reqs = [
        GenerationRequest(cached.render_chat([{"role": "user", "content": shared[:cut] + f" question {i}?"}]),
                          adapter, SamplingParams(max_new_tokens=10 + i))
        for i, (cut, adapter) in enumerate([(len(shared), "qv"), (120, "all"), (len(shared), None), (40, "qv"),
                                            (len(shared), "all"), (len(shared) // 2, "qv")])
    ]
    joint = _together(cached, reqs)
    hits = [r.cached_tokens for r in joint]
    assert len(set(hits)) >= 3 and max(hits) >= 64 and 0 in hits, hits  # different lengths in one batch
    assert [_ids(r) for r in joint] == [_ids(r) for r in _together(plain, reqs)]


def test_a_prefix_is_reused_only_by_the_adapter_that_computed_it(engines):
    _, cached, _, _ = engines
    prompt = cached.render_chat([{"role": "user", "content": "Only for qv. " + HISTORY * 2}])
    _run(cached, prompt, "qv", n=2)
    assert _run(cached, prompt, "all", n=2).cached_tokens == 0
    assert _run(cached, prompt, None, n=2).cached_tokens == 0
    assert _run(cached, prompt, "qv", n=2).cached_tokens > 0


def test_replacing_or_unloading_an_adapter_drops_its_prefixes(engines, tmp_path):
    model_dir, cached, plain, _ = engines
    old = build_random_adapter(model_dir, tmp_path / "old", r=4, target_modules=LORA_MODULES, seed=31)
    new = build_random_adapter(model_dir, tmp_path / "new", r=4, target_modules=LORA_MODULES, seed=32)
    prompt = cached.render_chat([{"role": "user", "content": "Reloaded. " + HISTORY * 2}])
    first = cached.load_adapter("swap", old)
    _run(cached, prompt, "swap")
    assert _run(cached, prompt, "swap").cached_tokens > 0
    assert any(key[0] == first.uid for key in cached.prefix.blocks)

    cached.load_adapter("swap", new)  # same name, new weights: the old prefixes must not be reused
    plain.load_adapter("swap", new)
    after = _run(cached, prompt, "swap")
    assert after.cached_tokens == 0 and _ids(after) == _ids(_run(plain, prompt, "swap"))
    assert not any(key[0] == first.uid for key in cached.prefix.blocks)

    second = cached.adapters()["swap"]
    cached.unload_adapter("swap")
    plain.unload_adapter("swap")
    _run(cached, prompt, None, n=1)  # one more step of the loop, which drops them
    assert not any(key[0] == second.uid for key in cached.prefix.blocks)


def test_the_cache_stays_within_its_memory_bound_and_keeps_what_is_recent(engines):
    _, cached, plain, _ = engines
    prefix = cached.prefix
    saved = prefix.max_bytes
    block_bytes = next(iter(prefix.blocks.values())).nbytes
    try:
        prefix.max_bytes = 6 * block_bytes
        evicted = prefix.evicted
        prompts = [cached.render_chat([{"role": "user", "content": f"Case {i}. " + HISTORY * 2}]) for i in range(4)]
        for prompt in prompts:
            _run(cached, prompt, "all", n=4)
            assert prefix.used <= prefix.max_bytes
        assert prefix.evicted > evicted
        last = _run(cached, prompts[-1], "all")  # the most recent prompt's blocks survive, and stay exact
        assert last.cached_tokens > 0 and _ids(last) == _ids(_run(plain, prompts[-1], "all"))
        assert _run(cached, prompts[0], "all", n=1).cached_tokens == 0  # the oldest went first
    finally:
        prefix.max_bytes = saved


def test_a_row_that_wants_prompt_logprobs_computes_its_whole_prompt(engines):
    _, cached, plain, _ = engines
    prompt = cached.render_chat([{"role": "user", "content": "Details please. " + HISTORY * 2}])
    _run(cached, prompt, "qv", n=2)
    params = SamplingParams(max_new_tokens=4, decoder_input_details=True)
    result = asyncio.run(cached.generate(GenerationRequest(prompt, "qv", params)))
    reference = asyncio.run(plain.generate(GenerationRequest(prompt, "qv", params)))
    assert result.cached_tokens == 0 and len(result.prefill) == result.prompt_tokens
    assert [t.logprob for t in result.prefill] == pytest.approx([t.logprob for t in reference.prefill], abs=1e-4)


def test_the_server_reports_cached_tokens_and_per_adapter_hits(live_server):
    """Through the real server and the OpenAI client: the next turn's usage names its cached prompt tokens, and
    /metrics counts queries and hits per adapter."""
    import httpx
    import openai

    client = openai.OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0)
    chat = [{"role": "user", "content": "Prefix metrics. " + HISTORY * 2}]
    first = client.chat.completions.create(model="support-a", messages=chat, max_tokens=8, temperature=0)
    chat += [{"role": "assistant", "content": first.choices[0].message.content},
             {"role": "user", "content": "Thanks, and then?"}]
    second = client.chat.completions.create(model="support-a", messages=chat, max_tokens=8, temperature=0)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert 0 < cached < second.usage.prompt_tokens

    def value(text, name):
        line = next(ln for ln in text.splitlines() if ln.startswith(name + '{adapter="support-a"}'))
        return float(line.split()[-1])

    metrics = httpx.get(live_server.url + "/metrics").text
    assert value(metrics, "supportkit_prefix_cache_hits_total") >= cached
    assert value(metrics, "supportkit_prefix_cache_queries_total") >= first.usage.prompt_tokens + second.usage.prompt_tokens
    assert "supportkit_prefix_cache_bytes " in metrics and "supportkit_prefix_cache_capacity_bytes " in metrics


def test_eviction_takes_leaves_before_the_blocks_they_extend():
    """The cache on its own: with room for 6 blocks, a second chain that shares 2 blocks with the first evicts
    the first chain's deepest blocks, never the shared ones it extends."""
    import torch

    from serve.engine.prefix_cache import PrefixCache

    def kv(start, end):
        return [(torch.zeros(1, end - start, 2), torch.zeros(1, end - start, 2))]

    cache = PrefixCache(max_bytes=6 * 2 * 4 * 4 * 2, block_size=4)  # 6 blocks of 4 tokens
    first, second = list(range(20)), list(range(8)) + list(range(100, 112))
    assert cache.insert(1, first, kv) == 5
    assert cache.insert(1, second, kv) == 3  # 2 shared, 3 new; 2 of the first chain's leaves go
    assert cache.used <= cache.max_bytes and cache.evicted == 2
    assert len(cache.match(1, second, 20)) == 5
    assert len(cache.match(1, first, 20)) == 3  # its shared root and its third block are left
    assert cache.match(2, first, 20) == []  # another adapter's key finds nothing
    assert cache.drop(1) == 6 and cache.used == 0
