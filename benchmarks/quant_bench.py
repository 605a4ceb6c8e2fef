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

    .venv/bin/python benchmarks/quant_bench.py [--part speed|quality] [--quick]

Results: benchmarks/results/quant.json and quant.md. Needs `supportkit model prepare` done once.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.cpu import describe  # noqa: E402
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


async def greedy_replies(engine: LocalEngine, prompts: list[str], n: int, together: int = DECODER_MAX_ROWS) -> list[list[int]]:
    """Greedy replies, `together` at a time: few enough rows that a quantized engine decodes on its packed kernel."""
    out = []
    for i in range(0, len(prompts), together):
        reqs = [GenerationRequest(p, ADAPTER, SamplingParams(max_new_tokens=n)) for p in prompts[i : i + together]]
        out += [[t.id for t in r.tokens] for r in await asyncio.gather(*(engine.generate(q) for q in reqs))]
    return out


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


def running(engine: LocalEngine) -> LocalEngine:
    """Start (or restart after stop) the engine's loop thread."""
    engine._stop = False
    engine.start()
    return engine


def load_engines(model_dir: Path) -> dict[str, LocalEngine]:
    engines = {}
    for mode in MODES:
        t0 = time.perf_counter()
        engine = LocalEngine(model_dir, dtype="bfloat16", max_batch_size=8, weights=mode)
        engine.load_adapter(ADAPTER, ADAPTER_DIR)
        engine.slots.warm(engine.adapters()[ADAPTER])
        engines[mode] = engine
        print(f"[{mode}] ready in {time.perf_counter() - t0:.1f} s", flush=True)
    return engines


def quality_part(engines: dict[str, LocalEngine], n_reply: int, val_cap: int | None) -> dict:
    bf16 = engines["bf16"]
    tok = bf16.tokenizer
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
    running(bf16)
    reference = asyncio.run(greedy_replies(bf16, prompts, n_reply))
    bf16.stop()
    quality = {}
    for mode in ("int8", "int4"):
        e = engines[mode]
        use_adapter(e, True)
        agree = teacher_forced_agreement(e, prompt_ids, reference)  # direct passes, before its loop thread runs
        running(e)
        replies = asyncio.run(greedy_replies(e, prompts, n_reply))
        e.stop()
        quality[mode] = {"teacher_forced_agreement": agree, **free_running(reference, replies)}
        print(f"  {mode}: {quality[mode]}", flush=True)
    return {"validation_perplexity": ppl, "validation_examples": len(val), "greedy_vs_bf16": quality,
            "reply_tokens": n_reply, "questions": len(questions)}


def speed_part(engines: dict[str, LocalEngine], repeats: int, n_decode: int) -> dict:
    print("decode speed ...", flush=True)
    bf16 = engines["bf16"]
    prompt = bf16.render_chat([{"role": "system", "content": bf16.adapters()[ADAPTER].system_prompt},
                               *load_questions([QUESTIONS])[0].messages])
    cases = [("batch 1, base model", None, 1), ("batch 1, demo adapter", ADAPTER, 1),
             ("batch 4, demo adapter", ADAPTER, 4), ("batch 8, demo adapter", ADAPTER, 8)]
    speed = {label: {m: [] for m in MODES} for label, _, _ in cases}
    for e in engines.values():
        running(e)
    for _ in range(repeats):
        for label, adapter, batch in cases:
            for mode, e in engines.items():
                speed[label][mode].append(asyncio.run(decode_tok_s(e, prompt, adapter, batch, n_decode)))
        print(f"  {json.dumps({k: {m: round(v[-1], 1) for m, v in by.items()} for k, by in speed.items()})}", flush=True)
    for e in engines.values():
        e.stop()
    return {"decode_tok_s": {label: {m: statistics.median(v) for m, v in by.items()} for label, by in speed.items()},
            "decode_repeats": repeats, "decode_tokens": n_decode}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model directory (default: the embedded Gemma 3 270M)")
    ap.add_argument("--part", choices=("all", "speed", "quality"), default="all",
                    help="one part per run keeps a run short on a shared machine; parts merge into one result")
    ap.add_argument("--quick", action="store_true", help="fewer repeats, tokens and examples")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    quick = args.quick
    repeats, n_decode, n_reply = (1, 16, 24) if quick else (3, 32, 64)
    torch.set_num_threads(os.cpu_count() or 1)
    model_dir = resolve_model_dir(args.model)
    started = time.time()
    engines = load_engines(model_dir)
    command = "python benchmarks/quant_bench.py" + (f" --part {args.part}" if args.part != "all" else "") + (
        " --quick" if quick else "")
    results = {
        "model": engines["bf16"].name, "dtype": "bfloat16",
        "machine": f"{describe()} (shared with other jobs: compare ratios within one run), torch {torch.__version__}, "
                   f"CPU capability {torch.backends.cpu.get_cpu_capability()}",
        "thresholds": {"decoder_max_rows": DECODER_MAX_ROWS, "head_max_rows": HEAD_MAX_ROWS},
        "memory": {mode: tensor_bytes(e) for mode, e in engines.items()},
    }
    previous = args.out / "quant.json"
    if args.part != "all" and previous.is_file():
        results = {**json.loads(previous.read_text()), **results}
    runs = results.setdefault("runs", {})
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if args.part in ("all", "speed"):
        print("kernels ...", flush=True)
        results["kernels_ms"] = kernel_table(engines["bf16"], 6 if quick else 20)
        results.update(speed_part(engines, repeats, n_decode))
        runs["speed"] = {"command": command, "date": date}
    if args.part in ("all", "quality"):
        results.update(quality_part(engines, n_reply, 8 if quick else None))
        runs["quality"] = {"command": command, "date": date}
    results["elapsed_s"] = time.time() - started
    write_results(results, args.out)


def write_results(r: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "quant.json").write_text(json.dumps(r, indent=2) + "\n")
    mib = 1 << 20
    base_mem = r["memory"]["bf16"]["model_bytes"]
    lines = [f"# Quantized base weights ({r['model']}, {r['dtype']} activations)", "",
             f"Machine: {r['machine']}. Each part ran under the heavy lock, its three engines measured interleaved "
             "in one process; other jobs ran beside it, so the ratios within a part are the result, not absolute "
             "speeds.", ""]
    for part, run in r.get("runs", {}).items():
        lines.append(f"- {part}: `{run['command']}`, {run['date']}")
    if "decode_tok_s" in r:
        lines += ["", f"## Decode speed (tokens/s, median of {r['decode_repeats']} interleaved repeats of "
                  f"{r['decode_tokens']} tokens)", "",
                  "| case | bf16 | int8 | int4 | int8 / bf16 | int4 / bf16 |", "|---|---|---|---|---|---|"]
        for label, by in r["decode_tok_s"].items():
            lines.append(f"| {label} | {by['bf16']:.1f} | {by['int8']:.1f} | {by['int4']:.1f} | "
                         f"{by['int8'] / by['bf16']:.2f}x | {by['int4'] / by['bf16']:.2f}x |")
    if "validation_perplexity" in r:
        ppl0 = r["validation_perplexity"]["bf16"]
        lines += ["", "## Quality against bf16 (demo adapter)", "",
                  "| weights | val perplexity | change | teacher-forced greedy agreement | identical replies | "
                  "positions before the first difference |", "|---|---|---|---|---|---|",
                  f"| bf16 | {ppl0:.4f} | | | | |"]
        for mode in ("int8", "int4"):
            q, p = r["greedy_vs_bf16"][mode], r["validation_perplexity"][mode]
            lines.append(f"| {mode} | {p:.4f} | {100 * (p / ppl0 - 1):+.2f}% | "
                         f"{100 * q['teacher_forced_agreement']:.1f}% | {q['identical_replies']}/{q['replies']} | "
                         f"{100 * q['share_before_first_difference']:.1f}% |")
        lines += ["", f"{r['questions']} demo questions (eval/configs/questions-demo.jsonl) with the adapter's system "
                  f"prompt, {r['reply_tokens']} greedy tokens each, 4 at a time (the packed kernel's path); "
                  "teacher-forced: at each position of bf16's reply, the quantized model's greedy pick. Perplexity: "
                  f"the {r['validation_examples']} validation conversations of train/configs/demo.yaml "
                  "(assistant tokens)."]
    lines += ["", "## Memory (bytes of the model's tensors)", "",
              "| weights | total | packed copies | vs bf16 |", "|---|---|---|---|"]
    for mode, m in r["memory"].items():
        lines.append(f"| {mode} | {m['model_bytes'] / mib:.0f} MiB | {m['packed_bytes'] / mib:.0f} MiB | "
                     f"{m['model_bytes'] / base_mem:.2f}x |")
    if "kernels_ms" in r:
        lines += ["", "## Kernels: speed-up over bf16 F.linear, by rows in the call (int8 / int4)", "",
                  "| layer | shape | " + " | ".join(f"{m} rows" for m in (1, 2, 4, 8, 16)) + " |",
                  "|---|---|" + "---|" * 5]
        by_layer: dict[str, list[dict]] = {}
        for k in r["kernels_ms"]:
            by_layer.setdefault(k["layer"], []).append(k)
        for layer, ks in by_layer.items():
            lines.append(f"| {layer} | {ks[0]['shape'][0]}x{ks[0]['shape'][1]} | " + " | ".join(
                f"{k['int8_speedup']:.2f} / {k['int4_speedup']:.2f}" for k in ks) + " |")
    t = r["thresholds"]
    lines += ["", f"Switch: decoder layers take the packed kernel at <= {t['decoder_max_rows']} rows per call, the LM "
              f"head at <= {t['head_max_rows']['int8']} (int8) / {t['head_max_rows']['int4']} (int4); more rows take "
              "the dense dequantized weight."]
    (out_dir / "quant.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
