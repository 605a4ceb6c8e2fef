"""Adapter slots against peft's LoRA layers on the same inputs: fp32 to rounding, bf16 within a stated tolerance."""

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from common.tiny import LORA_MODULES, build_random_adapter
from serve.engine.adapter_files import read_adapter
from serve.engine.lora_slots import BatchContext, lora_dtype_for, wrap_linear_layers

# bf16 keeps 8 bits of mantissa, and the tiny random models amplify rounding: in bf16 the slot path must stay
# as close to the fp32 result as peft's own bf16 path does, within a factor of 2.
BF16_FACTOR = 2.0
FP32_TOLERANCE = 1e-5  # rounding only


def rel_err(got, expected):
    return float((got - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_slot_logits_match_peft(tiny_model, tmp_path, dtype):
    adapters = {
        "qv": build_random_adapter(tiny_model, tmp_path / "qv", r=8, alpha=16, target_modules=("q_proj", "v_proj"), seed=1),
        "all": build_random_adapter(tiny_model, tmp_path / "all", r=6, alpha=10, target_modules=LORA_MODULES, seed=2),
        # a rank per layer (peft's rank_pattern): slots padded to the largest rank must still match
        "ranks": build_random_adapter(tiny_model, tmp_path / "ranks", r=8, alpha=16, target_modules=LORA_MODULES,
                                      seed=3, rank_pattern={"k_proj": 3, "up_proj": 5, "o_proj": 2}),
    }
    ids = torch.randint(10, 500, (3, 17), generator=torch.Generator().manual_seed(0))

    ctx = BatchContext()
    slotted = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=dtype).eval()
    layers = wrap_linear_layers(slotted, ctx, num_slots=5, max_rank=16, lora_dtype=lora_dtype_for(dtype, "cpu"))
    shapes = {n: (m.in_features, m.out_features) for n, m in layers.items()}
    for slot, (name, path) in enumerate(adapters.items(), start=1):
        weights = read_adapter(path, name, shapes, max_rank=16)
        for module, (a, b, scaling) in weights.layers.items():
            layers[module].write_slot(slot, a, b, scaling)  # as the engine does: the file's tensors

    def slot_logits(slots):
        ctx.set(slots, "cpu")
        with torch.inference_mode():
            return slotted(input_ids=ids).logits.float()

    def peft_logits(name, dt):
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=dt), adapters[name])
        with torch.inference_mode():
            return model.eval()(input_ids=ids).logits.float()

    for name, slot in (("qv", 1), ("all", 2), ("ranks", 3)):
        reference = peft_logits(name, torch.float32)
        tolerance = FP32_TOLERANCE if dtype == torch.float32 else BF16_FACTOR * rel_err(peft_logits(name, dtype), reference)
        other = 1 + slot % 3
        for got in (slot_logits([slot] * 3), slot_logits([slot, 0, other])[:1]):  # alone, and in a mixed batch
            assert rel_err(got, reference[: got.shape[0]]) <= tolerance, (name, dtype)
    # Rows on the base model (slot 0) get exactly the base model's logits.
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=dtype).eval()
    with torch.inference_mode():
        expected = base(input_ids=ids[:1]).logits.float()[0]
    assert rel_err(slot_logits([0, 1, 2])[0], expected) <= (1e-5 if dtype == torch.float32 else 1e-2)

    # A slot rewritten while the batch's composition stays the same: the rows' gathered weights follow it.
    if dtype == torch.float32:
        before = slot_logits([0, 1, 2])
        weights = read_adapter(adapters["ranks"], "ranks", shapes, max_rank=16)
        for layer in layers.values():
            layer.clear_slot(2)
        for module, (a, b, scaling) in weights.layers.items():
            layers[module].write_slot(2, a, b, scaling)
        after = slot_logits([0, 1, 2])
        assert torch.equal(after[:2], before[:2])
        assert rel_err(after[2:], peft_logits("ranks", torch.float32)[2:]) <= FP32_TOLERANCE


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_by_module(tiny_model, tmp_path, bad):
    from safetensors.torch import load_file, save_file

    from serve.errors import AdapterInvalid

    path = build_random_adapter(tiny_model, tmp_path / "bad", r=4, target_modules=LORA_MODULES, seed=5)
    tensors = load_file(path / "adapter_model.safetensors")
    key = next(k for k in sorted(tensors) if "layers.1.mlp.up_proj.lora_B" in k)
    tensors[key][0, 0] = bad
    save_file(tensors, path / "adapter_model.safetensors")
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    layers = wrap_linear_layers(model, BatchContext(), num_slots=2, max_rank=8, lora_dtype=torch.float32)
    shapes = {n: (m.in_features, m.out_features) for n, m in layers.items()}
    with pytest.raises(AdapterInvalid, match=r"layers\.1\.mlp\.up_proj'? has non-finite weights"):
        read_adapter(path, "bad", shapes, max_rank=8)
