"""The engine against transformers + peft run directly: same greedy tokens, with and without adapters,
alone and in mixed batches, on both tiny families (Gemma3's sliding-window layer included)."""

import asyncio

import pytest
import torch

from common.tiny import LORA_MODULES, build_random_adapter
from serve.engine.local import LocalEngine
from serve.engine.types import GenerationRequest, SamplingParams
from tests.serve.reference import greedy_ids

LONG = "My fibre connection drops every evening and the ONT light blinks red; I restarted the router twice. "


@pytest.fixture(scope="module", params=["qwen2", "gemma3"])
def setup(request, tiny_model, tiny_gemma, tmp_path_factory):
    model_dir = tiny_model if request.param == "qwen2" else tiny_gemma
    store = tmp_path_factory.mktemp(f"adapters-{request.param}")
    a = build_random_adapter(model_dir, store / "qv", r=8, target_modules=("q_proj", "v_proj"), seed=11)
    b = build_random_adapter(model_dir, store / "all", r=6, alpha=10, target_modules=LORA_MODULES, seed=12)
    engine = LocalEngine(model_dir, dtype="float32", max_batch_size=8)
    engine.start()
    engine.load_adapter("qv", a)
    engine.load_adapter("all", b)
    yield model_dir, engine, {"qv": a, "all": b}
    engine.stop()


def _ids(result):
    return [t.id for t in result.tokens]


def test_greedy_matches_peft_generate(setup):
    model_dir, engine, dirs = setup
    prompt = engine.render_chat([{"role": "user", "content": LONG * 2}])  # longer than the sliding window
    outputs = {}
    for adapter in (None, "qv", "all"):
        result = asyncio.run(engine.generate(GenerationRequest(prompt, adapter, SamplingParams(max_new_tokens=24))))
        outputs[adapter] = _ids(result)
        assert outputs[adapter] == greedy_ids(model_dir, prompt, 24, dirs.get(adapter)), adapter
    assert outputs[None] != outputs["qv"] and outputs[None] != outputs["all"] and outputs["qv"] != outputs["all"]


def test_mixed_batch_equals_one_at_a_time(setup):
    _, engine, _ = setup
    adapters = [None, "qv", "all", "qv", None, "all", "all", "qv"]
    reqs = [
        GenerationRequest(engine.render_chat([{"role": "user", "content": f"Question {i}: " + LONG * (i % 3 + 1)}]),
                          adapter, SamplingParams(max_new_tokens=12 + i))
        for i, adapter in enumerate(adapters)
    ]

    async def alone():
        return [_ids(await engine.generate(r)) for r in reqs]

    async def together():
        with engine.scheduler.lock:  # all queued before the engine's loop looks at the queue: they arrive together
            gens = [engine.submit(r) for r in reqs]
        return [_ids(r) for r in await asyncio.gather(*(g.result() for g in gens))]

    shapes = []
    hook = engine.model.register_forward_pre_hook(lambda m, a, kw: shapes.append(tuple(kw["input_ids"].shape)),
                                                  with_kwargs=True)
    try:
        joint = asyncio.run(together())
    finally:
        hook.remove()
    # Requests that arrive together are prefilled together: prompts of different lengths, left-padded.
    assert any(b > 1 and t > 1 for b, t in shapes), shapes
    assert joint == asyncio.run(alone())


def test_prefill_groups_respect_the_token_budget(setup):
    _, engine, _ = setup
    budget = engine.prefill_tokens
    try:
        engine.prefill_tokens = 60
        rows = [type("R", (), {"prompt_ids": [1] * n, "cached_tokens": 0, "req": GenerationRequest(
            "x", None, SamplingParams(decoder_input_details=d))})()
            for n, d in ((20, False), (25, False), (10, False), (30, True), (5, False))]
        groups = engine._prefill_groups(rows)
        # 2 x 25 fits in 60, 3 x 25 does not; a row asking for prompt log-probabilities goes alone.
        assert [[len(r.prompt_ids) for r in g] for g in groups] == [[20, 25], [10], [30], [5]]
    finally:
        engine.prefill_tokens = budget


def test_seeded_sampling_is_reproducible_and_stops(setup):
    _, engine, _ = setup
    prompt = engine.render_chat([{"role": "user", "content": "Is roaming included?"}])
    params = dict(max_new_tokens=16, do_sample=True, temperature=0.9, top_p=0.95, top_k=50, seed=7)

    def run(**kw):
        return asyncio.run(engine.generate(GenerationRequest(prompt, "qv", SamplingParams(**{**params, **kw}))))

    first, again, other = run(), run(), run(seed=8)
    assert _ids(first) == _ids(again) and first.seed == 7
    assert _ids(first) != _ids(other)
    # A stop sequence taken from the generated text cuts it there.
    text = first.text
    assert len(text) > 3
    stop = text[2:4]
    stopped = run(stop=[stop])
    assert stopped.finish_reason == "stop_sequence" and stop not in stopped.text and text.startswith(stopped.text)


def test_a_failing_row_fails_alone(setup):
    """A request whose sampling breaks (temperature so small the probabilities overflow) fails by itself;
    the other requests of its batch finish normally."""
    from serve.errors import GenerationFailed

    _, engine, _ = setup
    prompt = engine.render_chat([{"role": "user", "content": LONG}])
    good = GenerationRequest(prompt, "qv", SamplingParams(max_new_tokens=16))
    bad = GenerationRequest(prompt, "all", SamplingParams(max_new_tokens=16, do_sample=True, temperature=1e-38))

    async def run():
        return await asyncio.gather(engine.generate(good), engine.generate(bad), return_exceptions=True)

    ok, failed = asyncio.run(run())
    assert isinstance(failed, GenerationFailed)
    alone = asyncio.run(engine.generate(GenerationRequest(prompt, "qv", SamplingParams(max_new_tokens=16))))
    assert _ids(ok) == _ids(alone)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
def test_gpu_engine_matches_peft_and_batches_exactly(tiny_model, tmp_path):
    """On a GPU: greedy tokens equal transformers + peft (fp32, reference run on the CPU), alone and in a
    mixed batch; in bf16 the slots hold the model's dtype (the fp32 LoRA path is for CPUs)."""
    adapter = build_random_adapter(tiny_model, tmp_path / "all", r=6, alpha=10, target_modules=LORA_MODULES, seed=12)
    engine = LocalEngine(tiny_model, dtype="float32", device="cuda", max_batch_size=4)
    engine.start()
    try:
        engine.load_adapter("all", adapter)
        prompt = engine.render_chat([{"role": "user", "content": LONG}])
        reqs = [GenerationRequest(prompt, a, SamplingParams(max_new_tokens=16)) for a in (None, "all", "all", None)]

        async def together():
            return [_ids(r) for r in await asyncio.gather(*(engine.generate(r) for r in reqs))]

        joint = asyncio.run(together())
        assert joint[0] == greedy_ids(tiny_model, prompt, 16) and joint[1] == greedy_ids(tiny_model, prompt, 16, adapter)
        assert joint[2] == joint[1] and joint[3] == joint[0]
    finally:
        engine.stop()
    bf16 = LocalEngine(tiny_model, dtype="bfloat16", device="cuda")
    bf16.load_adapter("all", adapter)
    bf16.slots.warm(bf16.adapters()["all"])
    assert {m.lora_A.dtype for m in bf16.layers.values() if m.lora_A is not None} == {torch.bfloat16}
