"""Quantized base weights (`--weights bf16|int8|int4`) on the embedded model: speed, memory and quality.

One run, one process, the three engines side by side and measured interleaved (the machine is shared and
noisy: the ratios within a run are what count):

- kernels: F.linear (bf16) against the int8 / int4 kernels on the model's layer shapes at 1-16 rows (where the
  per-call switch, serve.engine.quantize.DECODER_MAX_ROWS / HEAD_MAX_ROWS, comes from);
- decode tok/s at batch 1 (base model and the shipped demo adapter), 4 and 8 (the demo adapter);
- memory: bytes of the model's tensors, and what the packed copies add;
- quality against bf16, with the demo adapter: greedy tokens on the 20 demo questions (teacher-forced: at each
  position of bf16's greedy reply, does the quantized model pick the same token; and free-running at batch 1,
  the packed kernel's own path: how many replies are identical, and the share of positions before the first
  difference), and the perplexity of the demo adapter's validation split (train/configs/demo.yaml).

    flock /work/locks/heavy.lock nice -n 10 .venv/bin/python benchmarks/quant_bench.py [--quick]

Results: benchmarks/results/quant.json and quant.md. Needs `supportkit model prepare` done once.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.models import resolve_model_dir  # noqa: E402
from eval.questions import load_questions  # noqa: E402
from serve.engine.local import LocalEngine  # noqa: E402
from serve.engine.quantize import (  # noqa: E402
    DECODER_MAX_ROWS, HEAD_MAX_ROWS, INT4_GROUP, QuantizedLinear, quantize_int4, quantize_int8,
)
from serve.engine.types import GenerationRequest, SamplingParams  # noqa: E402

MODES = ("bf16", "int8", "int4")
ADAPTER = "telecom-support"
ADAPTER_DIR = ROOT / "serve" / "adapters" / ADAPTER
QUESTIONS = ROOT / "eval" / "configs" / "questions-demo.jsonl"
DEMO_CONFIG = ROOT / "train" / "configs" / "demo.yaml"


def _median_ms(fn, n: int) -> float:
    fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def kernel_table(engine: LocalEngine, repeats: int) -> list[dict]:
    """Per layer shape: ms per call of each path at 1-16 rows, in the model's dtype."""
    shapes = {}
    for name, layer in engine.layers.items():
        shapes.setdefault(name.rsplit(".", 1)[-1], (layer.out_features, layer.in_features))
    head = engine.model.get_output_embeddings()
    shapes["lm_head"] = (head.out_features, head.in_features)
    rows_out = []
    torch.manual_seed(0)
    with torch.inference_mode():
        for name, (n, k) in shapes.items():
            w = torch.nn.Parameter(torch.randn(n, k, dtype=engine.dtype) * 0.02)  # requires_grad: the engine's path
            q8, s8 = quantize_int8(w.detach(), engine.dtype)
            q4, sz = quantize_int4(w.detach(), engine.dtype)
            p4 = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q4, 1)
            sz = sz.transpose(0, 1).contiguous()
            reps = max(3, repeats // 8) if name == "lm_head" else repeats
            for m in (1, 2, 4, 8, 16):
                x = torch.randn(m, k, dtype=engine.dtype)
                bf16 = _median_ms(lambda: F.linear(x, w), reps)
                int8 = _median_ms(lambda: torch.ops.aten._weight_int8pack_mm(x, q8, s8), reps)
                int4 = _median_ms(lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(x, p4, INT4_GROUP, sz), reps)
                rows_out.append({"layer": name, "shape": [n, k], "rows": m, "bf16_ms": bf16, "int8_ms": int8,
                                 "int4_ms": int4, "int8_speedup": bf16 / int8, "int4_speedup": bf16 / int4})
            del w, q8, q4, p4
    return rows_out


def tensor_bytes(engine: LocalEngine) -> dict:
    seen, total, packed = set(), 0, 0
    for t in [*engine.model.parameters(), *engine.model.buffers()]:
        if t.data_ptr() in seen:  # a tied embedding counts once
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    for m in engine.model.modules():
        if isinstance(m, QuantizedLinear):
            packed += sum(b.numel() * b.element_size() for b in m.buffers())
    return {"model_bytes": total, "packed_bytes": packed}


async def decode_tok_s(engine: LocalEngine, prompt: str, adapter: str | None, batch: int, n: int) -> float:
    """Decode tokens per second over `batch` concurrent requests of n tokens (prefill excluded)."""
    params = SamplingParams(max_new_tokens=n, ignore_eos=True)
    results = await asyncio.gather(*(engine.generate(GenerationRequest(prompt, adapter, params)) for _ in range(batch)))
    decode_s = max(r.timings.total_s for r in results) - max(r.timings.first_token_s for r in results)
    return batch * (n - 1) / decode_s


def use_adapter(engine: LocalEngine, adapter: bool) -> None:
    """For direct forward passes outside the loop thread (before the engine starts): the demo adapter or none."""
    slot = engine.slots.slot_of(engine.adapters()[ADAPTER]) if adapter else 0
    engine.ctx.set([slot], engine.device)


def log_probs(engine: LocalEngine, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return engine.model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)


def val_perplexity(engine: LocalEngine, examples: list[dict]) -> float:
    nll, count = 0.0, 0
    for ex in examples:
        lp = log_probs(engine, ex["input_ids"])
        labels = torch.tensor(ex["labels"][1:])
        keep = labels != -100
        nll -= lp[:-1][keep].gather(1, labels[keep][:, None]).sum().item()
        count += int(keep.sum())
    return math.exp(nll / count)


def validation_examples(tokenizer, cap: int | None) -> list[dict]:
    from train.config import load_config
    from train.examples import load_records, select_split, tokenize_all

    cfg = load_config(DEMO_CONFIG)
    rows, _ = load_records(cfg)
    val = select_split(rows, "val", cfg.max_val_examples, cfg.data_seed)
    return tokenize_all(tokenizer, val, cfg.max_length)[:cap]


def teacher_forced_agreement(engine: LocalEngine, prompts: list[list[int]], replies: list[list[int]]) -> float:
    same = total = 0
    for p, r in zip(prompts, replies):
        picks = log_probs(engine, p + r)[len(p) - 1 : len(p) + len(r) - 1].argmax(-1).tolist()
        same += sum(a == b for a, b in zip(picks, r))
        total += len(r)
    return same / total


async def greedy_replies(engine: LocalEngine, prompts: list[str], n: int, concurrent: bool) -> list[list[int]]:
    reqs = [GenerationRequest(p, ADAPTER, SamplingParams(max_new_tokens=n)) for p in prompts]
    if concurrent:
        return [[t.id for t in r.tokens] for r in await asyncio.gather(*(engine.generate(q) for q in reqs))]
    return [[t.id for t in (await engine.generate(q)).tokens] for q in reqs]


def free_running(reference: list[list[int]], replies: list[list[int]]) -> dict:
    prefix = same_positions = 0
    for ref, got in zip(reference, replies):
        k = 0
        while k < min(len(ref), len(got)) and ref[k] == got[k]:
            k += 1
        prefix += k
        same_positions += len(ref)
    return {"identical_replies": sum(a == b for a, b in zip(reference, replies)), "replies": len(reference),
            "share_before_first_difference": prefix / same_positions}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model directory (default: the embedded Gemma 3 270M)")
    ap.add_argument("--quick", action="store_true", help="fewer repeats, tokens and examples")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    quick = args.quick
    repeats, n_decode, n_reply = (1, 16, 24) if quick else (3, 32, 64)
    val_cap = 8 if quick else None
    torch.set_num_threads(os.cpu_count() or 1)
    model_dir = resolve_model_dir(args.model)
    started = time.time()

    engines = {}
    for mode in MODES:
        t0 = time.perf_counter()
        engine = LocalEngine(model_dir, dtype="bfloat16", max_batch_size=8, weights=mode)
        engine.load_adapter(ADAPTER, ADAPTER_DIR)
        engine.slots.warm(engine.adapters()[ADAPTER])
        engines[mode] = engine
        print(f"[{mode}] ready in {time.perf_counter() - t0:.1f} s", flush=True)
    bf16 = engines["bf16"]
    tok = bf16.tokenizer
    memory = {mode: tensor_bytes(e) for mode, e in engines.items()}

    print("kernels ...", flush=True)
    kernels = kernel_table(bf16, 6 if quick else 20)

    print("validation perplexity ...", flush=True)
    val = validation_examples(tok, val_cap)
    ppl = {}
    for mode, e in engines.items():
        use_adapter(e, True)
        ppl[mode] = val_perplexity(e, val)
        print(f"  {mode}: {ppl[mode]:.4f}", flush=True)

    questions = load_questions([QUESTIONS])
    system = bf16.adapters()[ADAPTER].system_prompt  # what the chat service puts first for this adapter
    prompts = [bf16.render_chat([{"role": "system", "content": system}, *q.messages]) for q in questions]
    prompt_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    print("bf16 greedy replies ...", flush=True)
    bf16.start()
    reference = asyncio.run(greedy_replies(bf16, prompts, n_reply, concurrent=False))
    quality = {}
    for mode in ("int8", "int4"):
        e = engines[mode]
        use_adapter(e, True)
        agree = teacher_forced_agreement(e, prompt_ids, reference)  # direct passes, before its loop thread runs
        e.start()
        replies = asyncio.run(greedy_replies(e, prompts, n_reply, concurrent=False))  # batch 1: the packed kernel
        quality[mode] = {"teacher_forced_agreement": agree, **free_running(reference, replies)}
        print(f"  {mode}: {quality[mode]}", flush=True)

    print("decode speed ...", flush=True)
    prompt = prompts[0]
    cases = [("batch 1, base model", None, 1), ("batch 1, demo adapter", ADAPTER, 1),
             ("batch 4, demo adapter", ADAPTER, 4), ("batch 8, demo adapter", ADAPTER, 8)]
    speed = {label: {m: [] for m in MODES} for label, _, _ in cases}
    for _ in range(repeats):
        for label, adapter, batch in cases:
            for mode, e in engines.items():
                speed[label][mode].append(asyncio.run(decode_tok_s(e, prompt, adapter, batch, n_decode)))
    for e in engines.values():
        e.stop()
    speed = {label: {m: statistics.median(v) for m, v in by.items()} for label, by in speed.items()}

    results = {
        "model": bf16.name, "dtype": "bfloat16", "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/quant_bench.py" + (" --quick" if quick else ""),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores "
                   f"(shared with other jobs: compare ratios within this run), torch {torch.__version__}, "
                   f"CPU capability {torch.backends.cpu.get_cpu_capability()}",
        "thresholds": {"decoder_max_rows": DECODER_MAX_ROWS, "head_max_rows": HEAD_MAX_ROWS},
        "decode_tok_s": speed, "memory": memory, "validation_perplexity": ppl,
        "validation_examples": len(val), "greedy_vs_bf16": quality, "reply_tokens": n_reply,
        "questions": len(questions), "kernels_ms": kernels, "elapsed_s": time.time() - started,
    }
    write_results(results, args.out)


def write_results(r: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "quant.json").write_text(json.dumps(r, indent=2) + "\n")
    mib = 1 << 20
    base_mem = r["memory"]["bf16"]["model_bytes"]
    ppl0 = r["validation_perplexity"]["bf16"]
    lines = [
        f"# Quantized base weights ({r['model']}, {r['dtype']} activations)", "",
        f"Measured {r['date']} with `{r['command']}` under the heavy lock, on {r['machine']}.", "",
        "## Decode speed (tokens/s, median of interleaved repeats)", "",
        "| case | bf16 | int8 | int4 | int8 / bf16 | int4 / bf16 |", "|---|---|---|---|---|---|",
    ]
    for label, by in r["decode_tok_s"].items():
        lines.append(f"| {label} | {by['bf16']:.1f} | {by['int8']:.1f} | {by['int4']:.1f} | "
                     f"{by['int8'] / by['bf16']:.2f}x | {by['int4'] / by['bf16']:.2f}x |")
    lines += ["", "## Quality against bf16 (demo adapter)", "",
              "| weights | val perplexity | change | teacher-forced greedy agreement | identical replies | "
              "positions before the first difference |", "|---|---|---|---|---|---|",
              f"| bf16 | {ppl0:.4f} | | | | |"]
    for mode in ("int8", "int4"):
        q, p = r["greedy_vs_bf16"][mode], r["validation_perplexity"][mode]
        lines.append(f"| {mode} | {p:.4f} | {100 * (p / ppl0 - 1):+.2f}% | {100 * q['teacher_forced_agreement']:.1f}% | "
                     f"{q['identical_replies']}/{q['replies']} | {100 * q['share_before_first_difference']:.1f}% |")
    lines += ["", f"{r['questions']} demo questions (eval/configs/questions-demo.jsonl), {r['reply_tokens']} greedy tokens "
              f"each; perplexity over the {r['validation_examples']} validation conversations of train/configs/demo.yaml "
              "(assistant tokens).", "",
              "## Memory (bytes of the model's tensors)", "", "| weights | total | packed copies | vs bf16 |", "|---|---|---|---|"]
    for mode, m in r["memory"].items():
        lines.append(f"| {mode} | {m['model_bytes'] / mib:.0f} MiB | {m['packed_bytes'] / mib:.0f} MiB | "
                     f"{m['model_bytes'] / base_mem:.2f}x |")
    lines += ["", "## Kernels: speed-up over bf16 F.linear by rows in the call", "",
              "| layer | shape | " + " | ".join(f"{m} rows int8 / int4" for m in (1, 2, 4, 8, 16)) + " |",
              "|---|---|" + "---|" * 5]
    by_layer: dict[str, list[dict]] = {}
    for k in r["kernels_ms"]:
        by_layer.setdefault(k["layer"], []).append(k)
    for layer, ks in by_layer.items():
        lines.append(f"| {layer} | {ks[0]['shape'][0]}x{ks[0]['shape'][1]} | " + " | ".join(
            f"{k['int8_speedup']:.2f} / {k['int4_speedup']:.2f}" for k in ks) + " |")
    t = r["thresholds"]
    lines += ["", f"Switch used: decoder layers take the packed kernel at <= {t['decoder_max_rows']} rows, the LM head "
              f"at <= {t['head_max_rows']['int8']} (int8) / {t['head_max_rows']['int4']} (int4) rows."]
    (out_dir / "quant.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
