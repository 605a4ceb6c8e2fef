"""Per-request energy adds up: the requests' energies plus idle energy equal the meter's total over the same
window (within 1%), under concurrent mixed-adapter load; and the `adapter` metrics label is capped."""

import asyncio
import time

from prometheus_client import generate_latest

from common.tiny import LORA_MODULES, build_random_adapter
from serve.engine.local import LocalEngine
from serve.engine.types import GenerationRequest, SamplingParams
from serve.metrics import Metrics


def test_energy_is_conserved_under_mixed_load(tiny_model, tmp_path):
    engine = LocalEngine(tiny_model, dtype="float32", max_batch_size=4)
    engine.start()
    for i, targets in enumerate((("q_proj", "v_proj"), LORA_MODULES)):
        engine.load_adapter(f"a{i}", build_random_adapter(tiny_model, tmp_path / f"a{i}", target_modules=targets, seed=i))
    prompts = [engine.render_chat([{"role": "user", "content": "Why is my line slow? " * (1 + i % 4)}]) for i in range(12)]

    async def load():
        return await asyncio.gather(*(
            engine.generate(GenerationRequest(p, [None, "a0", "a1"][i % 3], SamplingParams(max_new_tokens=8 + i)))
            for i, p in enumerate(prompts)
        ))

    time.sleep(0.3)  # idle time before, between and after the rounds
    results = asyncio.run(load())
    time.sleep(0.3)
    results += asyncio.run(load())
    time.sleep(0.3)
    engine.stop()  # the loop has stopped reading the meter: the window is closed

    assert all(r.energy_joules > 0 and r.energy_source == engine.meter.source for r in results)
    assert all(abs(r.energy_by_phase["prefill"] + r.energy_by_phase["decode"] - r.energy_joules) < 1e-9 for r in results)
    assert engine.idle_joules > 0
    accounted = sum(r.energy_joules for r in results) + engine.idle_joules
    assert abs(accounted - engine.metered_joules()) <= 0.01 * engine.metered_joules()


def test_adapter_label_cardinality_is_capped(tiny_model):
    engine = LocalEngine(tiny_model, dtype="float32")
    metrics = Metrics(engine, max_adapters=3)
    labels = [metrics.label(f"adapter-{i}") for i in range(10)]
    assert labels[:3] == ["adapter-0", "adapter-1", "adapter-2"]
    assert set(labels[3:]) == {"other"}
    assert metrics.label("adapter-1") == "adapter-1"  # a labelled adapter keeps its label
    assert metrics.label(None) == "other"  # the base model counts like any adapter once the cap is reached
    metrics.handoff("adapter-7")
    assert 'supportkit_handoffs_total{adapter="other"} 1.0' in generate_latest(metrics.registry).decode()
