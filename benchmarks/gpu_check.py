"""The GPU check's Python part (run by benchmarks/gpu_check.sh): the local engine on a Qwen2.5-3B-shaped model.

A model with Qwen2.5-3B's shapes and random bf16 weights (36 layers, hidden 2048, MLP 11008, 16 heads / 2 KV
heads, vocabulary 151936, tied embeddings) is written to a scratch directory and served by the kit's engine with
16 random adapters (r16 on all 7 modules) resident at once. It records decode tokens/s at batch 1, 8 and 32 with
each row on a different adapter (batch 1: an adapter; 8 and 32: rows round-robin over the 16), adapter hot-load
time (read + validate, then written into a slot by the loop thread), and NVML joules per generated token.

    python benchmarks/gpu_check.py --out gpu_check.json               # on one NVIDIA GPU
    python benchmarks/gpu_check.py --device cpu --tiny --out x.json   # the same code on a tiny shape, no GPU

Random weights: the speeds and joules are those of the real shapes; the text is meaningless (ids are decoded
with a small in-process tokenizer, ids outside it decode to nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.tiny import LORA_MODULES, train_tokenizer  # noqa: E402
from serve.engine.local import LocalEngine  # noqa: E402
from serve.engine.types import GenerationRequest, SamplingParams  # noqa: E402

QWEN25_3B = dict(
    hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
    vocab_size=151936, max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)
TINY = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    vocab_size=1024, max_position_embeddings=4096, tie_word_embeddings=True,
)
PROMPT = [{"role": "user", "content": "My fibre box shows a red LOS light since this morning and I have no internet. "
                                      "I already restarted the router. What should I do?"}]


def write_model(out: Path, shape: dict, device: str) -> Path:
    """Random weights at the usual init scale, built on `device` (fast on a GPU), saved as safetensors in bf16."""
    from transformers import AutoModelForCausalLM, GenerationConfig, Qwen2Config

    tok = train_tokenizer()
    config = Qwen2Config(**shape, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                         bos_token_id=tok.bos_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.config.name_or_path = "qwen2.5-3b-shaped-random"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "supportkit.json").write_text(json.dumps({"name": "qwen2.5-3b-shaped-random", "license": "random weights"}))
    del model
    return out


def write_adapter(out: Path, shapes: dict[str, tuple[int, int]], r: int, seed: int) -> Path:
    """A PEFT LoRA directory with random A and B on every given layer (all 7 modules), without loading the
    base model: the layout `read_adapter` and peft read."""
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for module, (fan_in, fan_out) in shapes.items():
        key = f"base_model.model.{module}"
        tensors[f"{key}.lora_A.weight"] = (torch.randn(r, fan_in, generator=gen) / fan_in**0.5).to(torch.bfloat16)
        tensors[f"{key}.lora_B.weight"] = (torch.randn(fan_out, r, generator=gen) * 0.01).to(torch.bfloat16)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "target_modules": list(LORA_MODULES), "bias": "none",
        "task_type": "CAUSAL_LM",
    }))
    return out


async def decode(engine: LocalEngine, prompt: str, adapters: list[str | None], n: int) -> dict:
    params = SamplingParams(max_new_tokens=n, ignore_eos=True)
    t0 = time.perf_counter()
    results = await asyncio.gather(*(engine.generate(GenerationRequest(prompt, a, params)) for a in adapters))
    wall = time.perf_counter() - t0
    decode_s = max(r.timings.total_s for r in results) - max(r.timings.first_token_s for r in results)
    tokens = sum(len(r.tokens) for r in results)
    return {
        "batch": len(adapters), "adapters": len({a for a in adapters if a}), "tokens": tokens,
        "decode_tok_s": len(adapters) * (n - 1) / decode_s, "wall_tok_s": tokens / wall,
        "joules_per_token": sum(r.energy_joules for r in results) / tokens,
        "decode_joules_per_token": sum(r.energy_by_phase["decode"] for r in results) / (len(adapters) * (n - 1)),
        "energy_source": results[0].energy_source,
    }


def wait_resident(engine: LocalEngine, name: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while name not in engine.stats()["resident_adapters"]:
        if time.monotonic() > end:
            raise TimeoutError(f"adapter {name} never reached a slot")
        time.sleep(0.001)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a tiny Qwen2 instead of the 3B shape (a dry run)")
    ap.add_argument("--adapters", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=64, help="generated tokens per request")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temporary one)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA GPU is visible to torch; for a dry run use --device cpu --tiny")
    started = time.time()
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    timings = {}

    t0 = time.perf_counter()
    model_dir = write_model(work / "model", TINY if args.tiny else QWEN25_3B, args.device)
    timings["write_model_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine = LocalEngine(model_dir, dtype="bfloat16", device=args.device, max_batch_size=32,
                         max_adapters=args.adapters, max_lora_rank=16, max_queue=64)
    timings["engine_load_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    dirs = [write_adapter(work / "adapters" / f"a{i:02d}", engine.layer_shapes, 16, seed=i) for i in range(args.adapters)]
    timings["write_adapters_s"] = time.perf_counter() - t0
    engine.start()
    try:
        hot_load = []  # read + validate in this thread, then the loop thread's write into a slot
        for i, path in enumerate(dirs):
            t0 = time.perf_counter()
            engine.load_adapter(f"a{i:02d}", path)
            read_s = time.perf_counter() - t0
            wait_resident(engine, f"a{i:02d}")
            hot_load.append({"read_validate_s": read_s, "until_resident_s": time.perf_counter() - t0})
        names = [f"a{i:02d}" for i in range(args.adapters)]
        prompt = engine.render_chat(PROMPT)
        asyncio.run(decode(engine, prompt, names[:2], 8))  # warm-up: kernels, allocator
        cases = {"batch_1": names[:1], "batch_8": [names[i % len(names)] for i in range(8)],
                 "batch_32": [names[i % len(names)] for i in range(32)]}
        runs = {label: [] for label in cases}
        for _ in range(args.repeats):
            for label, adapters in cases.items():
                runs[label].append(asyncio.run(decode(engine, prompt, adapters, args.tokens)))
        decode_results = {
            label: {**{k: v for k, v in rs[0].items() if not isinstance(v, float)},
                    **{k: statistics.median(r[k] for r in rs) for k, v in rs[0].items() if isinstance(v, float)}}
            for label, rs in runs.items()
        }
    finally:
        engine.stop()

    gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor() or "cpu"
    result = {
        "check": "gpu_check", "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "device": args.device, "device_name": gpu, "tiny": args.tiny, "torch": torch.__version__,
        "cuda": torch.version.cuda, "python": platform.python_version(), "host_cpus": os.cpu_count(),
        "model_shape": TINY if args.tiny else QWEN25_3B, "dtype": "bfloat16", "adapters": args.adapters,
        "lora": {"r": 16, "alpha": 32, "target_modules": list(LORA_MODULES)},
        "tokens_per_request": args.tokens, "repeats": args.repeats, "decode": decode_results,
        "hot_load": {
            "median_read_validate_s": statistics.median(h["read_validate_s"] for h in hot_load),
            "median_until_resident_s": statistics.median(h["until_resident_s"] for h in hot_load),
            "max_until_resident_s": max(h["until_resident_s"] for h in hot_load), "adapters": len(hot_load),
        },
        "energy_source": engine.meter.source, "setup": timings, "elapsed_s": time.time() - started,
    }
    if args.device.startswith("cuda"):
        result["gpu_peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
