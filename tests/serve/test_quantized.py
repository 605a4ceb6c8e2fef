"""`--weights int8|int4`: the quantized base against what it must equal.

The served model is the dequantized one: the packed kernel (few rows) and the dense path (many rows) compute
it alike, so on float32 tiny models the engine's greedy tokens equal transformers + peft run on a copy of the
model whose weights were replaced by their dequantized values, with and without adapters, alone (kernel
decode) and in mixed batches (dense decode). Its distance from the unquantized model is bounded separately.
"""

import asyncio

import pytest
import torch
from torch import nn

from common.tiny import LORA_MODULES, build_random_adapter
from serve.engine.local import LocalEngine
from serve.engine.quantize import QuantizedLinear, WeightsError, check_weights, dequantize_int4, quantize_int4
from serve.engine.types import GenerationRequest, SamplingParams
from tests.serve.reference import greedy_ids

LONG = "My fibre connection drops every evening and the ONT light blinks red; I restarted the router twice. "
MODES = ("int8", "int4")


def _ids(result):
    return [t.id for t in result.tokens]


def _dequantized_copy(model_dir, weights, out):
    """The model with every layer the engine quantizes (decoder linears, LM head) replaced by its dequantized
    weights, saved as a plain HF directory: the reference the quantized engine must equal."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and (".layers." in f".{name}" or module is model.get_output_embeddings()):
            QuantizedLinear(module, weights, max_rows=0)  # writes the dequantized values into module.weight
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module", params=[(f, w) for f in ("qwen2", "gemma3") for w in MODES], ids=lambda p: "-".join(p))
def setup(request, tiny_model, tiny_gemma, tmp_path_factory):
    family, weights = request.param
    model_dir = tiny_model if family == "qwen2" else tiny_gemma
    store = tmp_path_factory.mktemp(f"adapters-{family}")
    dirs = {
        "qv": build_random_adapter(model_dir, store / "qv", r=8, target_modules=("q_proj", "v_proj"), seed=11),
        "all": build_random_adapter(model_dir, store / "all", r=6, alpha=10, target_modules=LORA_MODULES, seed=12),
    }
    reference = _dequantized_copy(model_dir, weights, tmp_path_factory.mktemp(f"deq-{family}-{weights}"))
    engine = LocalEngine(model_dir, dtype="float32", max_batch_size=8, weights=weights)
    engine.start()
    for name, path in dirs.items():
        engine.load_adapter(name, path)
    yield reference, engine, dirs
    engine.stop()


def _quantized(engine):
    return [m for m in engine.model.modules() if isinstance(m, QuantizedLinear)]


def test_every_base_layer_and_the_head_are_quantized(setup):
    _, engine, _ = setup
    layers = _quantized(engine)
    assert len(layers) == len(engine.layers) + 1  # the 14 wrapped linears of 2 layers, plus the LM head
    assert all(engine.layers[n].base in layers for n in engine.layers)
    assert engine.quantization["extra_bytes"] > 0 and engine.quantization["skipped"] == []


def test_greedy_matches_peft_on_the_dequantized_model(setup):
    """Prefill takes the dense path, batch-1 decode the packed kernel: same model, so same tokens; the LoRA
    product on top of the quantized base is the one peft computes."""
    reference, engine, dirs = setup
    prompt = engine.render_chat([{"role": "user", "content": LONG * 2}])  # longer than Gemma's sliding window
    before = sum(m.quantized_calls for m in _quantized(engine))
    outputs = {}
    for adapter in (None, "qv", "all"):
        result = asyncio.run(engine.generate(GenerationRequest(prompt, adapter, SamplingParams(max_new_tokens=24))))
        outputs[adapter] = _ids(result)
        assert outputs[adapter] == greedy_ids(reference, prompt, 24, dirs.get(adapter)), adapter
    assert sum(m.quantized_calls for m in _quantized(engine)) > before  # the kernel was used
    assert outputs[None] != outputs["qv"] and outputs[None] != outputs["all"] and outputs["qv"] != outputs["all"]


def _requests(engine):
    adapters = [None, "qv", "all", "qv", None, "all", "all", "qv"]
    return [
        GenerationRequest(engine.render_chat([{"role": "user", "content": f"Question {i}: " + LONG * (i % 3 + 1)}]),
                          adapter, SamplingParams(max_new_tokens=12 + i))
        for i, adapter in enumerate(adapters)
    ]


def _with_max_rows(engine, rows):
    for m in _quantized(engine):
        m.max_rows = rows


def test_paths_chosen_by_batch_size_give_the_tokens_of_either_path_forced(setup):
    """A mixed batch of 8 decodes on the dense path, the same requests one at a time on the kernel; both equal
    the engine forced onto the kernel everywhere (prefill included) and forced onto the dense path."""
    _, engine, _ = setup
    reqs = _requests(engine)
    limits = {m: m.max_rows for m in _quantized(engine)}

    async def alone():
        return [_ids(await engine.generate(r)) for r in reqs]

    async def together():
        return [_ids(r) for r in await asyncio.gather(*(engine.generate(r) for r in reqs))]

    try:
        auto_joint, auto_alone = asyncio.run(together()), asyncio.run(alone())
        _with_max_rows(engine, 1 << 30)
        kernel = asyncio.run(together())
        _with_max_rows(engine, 0)
        calls = sum(m.quantized_calls for m in _quantized(engine))
        dense = asyncio.run(together())
        assert sum(m.quantized_calls for m in _quantized(engine)) == calls
    finally:
        for m, rows in limits.items():
            m.max_rows = rows
    assert auto_joint == auto_alone == kernel == dense


def test_kernel_equals_the_dequantized_dense_weight():
    torch.manual_seed(0)
    for weights in MODES:
        for bias in (False, True):
            linear = nn.Linear(96, 40, bias=bias)  # 40 output rows: int4 pads to 48
            layer = QuantizedLinear(linear, weights, max_rows=3)
            x = torch.randn(3, 96)
            y = layer(x)
            assert layer.quantized_calls == 1
            torch.testing.assert_close(y, nn.functional.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
            layer(torch.randn(2, 2, 96))  # 4 rows > 3: dense
            assert layer.quantized_calls == 1


def test_int4_groups_are_asymmetric_groups_of_32():
    w = torch.randn(4, 64)
    q, scale_zero = quantize_int4(w, torch.float32)
    assert q.min() >= 0 and q.max() <= 15 and scale_zero.shape == (4, 2, 2)
    # Each group's extremes are represented to within half a step.
    err = (dequantize_int4(q, scale_zero) - w).abs().reshape(4, 2, 32).amax(-1)
    assert (err <= scale_zero[..., 0] / 2 + 1e-6).all()


def test_layer_error_is_what_the_scheme_allows():
    """Output error of one layer on Gaussian weights: int8 (step = row max / 127, ~0.025 sigma) gives ~0.7%
    relative RMS error, int4 (step = group range / 15, ~0.27 sigma) ~8%."""
    torch.manual_seed(0)
    w, x = torch.randn(512, 640) * 0.02, torch.randn(16, 640)
    for weights, bound in (("int8", 0.01), ("int4", 0.1)):
        linear = nn.Linear(640, 512, bias=False)
        with torch.no_grad():
            linear.weight.copy_(w)
        y = QuantizedLinear(linear, weights, max_rows=16)(x)
        rel = ((y - x @ w.t()).norm() / (x @ w.t()).norm()).item()
        assert rel < bound, (weights, rel)


@pytest.mark.parametrize("family", ["qwen2", "gemma3"])
def test_quantized_logits_stay_close_to_the_unquantized_model(family, tiny_model, tiny_gemma, tmp_path):
    """End to end on a tiny model at a trained model's weight scale (std 0.02 in the decoder; the tiny
    fixtures' 0.2 makes a chaotic network that amplifies any error). Measured over three seeds: cosine of the
    logits >= 0.99998 (int8) and >= 0.983 (int4). Greedy agreement is meaningless on random weights (their
    top tokens are near ties); benchmarks/quant_bench.py measures it on the embedded model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = tiny_model if family == "qwen2" else tiny_gemma
    model = AutoModelForCausalLM.from_pretrained(source)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embed" not in name:
                p.mul_(0.1)
    model.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(source).save_pretrained(tmp_path)
    ids = torch.tensor([list(range(5, 69))])
    logits = {}
    for weights in ("bf16", *MODES):
        engine = LocalEngine(tmp_path, dtype="float32", weights=weights)
        with torch.inference_mode():
            logits[weights] = engine.model(input_ids=ids).logits[0].float()
    for weights, bound in (("int8", 0.9995), ("int4", 0.97)):
        cos = nn.functional.cosine_similarity(logits[weights], logits["bf16"], dim=-1)
        assert cos.min() > bound, (weights, cos.min())


def test_a_bad_weights_value_is_a_clear_error(tiny_model):
    from pydantic import ValidationError
    from typer.testing import CliRunner

    from serve.settings import ServeSettings
    from supportkit.cli import app

    with pytest.raises(ValidationError, match="weights"):
        ServeSettings(weights="int3")
    result = CliRunner().invoke(app, ["serve", "--model", str(tiny_model), "--weights", "fp8"])
    assert result.exit_code == 2 and "weights" in result.output and "int4" in result.output
    with pytest.raises(WeightsError, match="bf16, int8, int4"):
        check_weights("q4", "cpu")
    with pytest.raises(WeightsError, match="--weights bf16"):
        check_weights("int4", "cuda")
    with pytest.raises(WeightsError, match="got 'int3'"):
        LocalEngine(tiny_model, dtype="float32", weights="int3")
