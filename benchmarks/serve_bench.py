"""Serving benchmark: adapter overhead, mixed-adapter batching, hot-load, stream stalls, server vs generate.

Everything is measured in one run on the same model, interleaved and repeated, and reported as ratios (the
machines are shared and noisy). Results go to benchmarks/results/serve.json and serve.md.

    .venv/bin/python benchmarks/serve_bench.py            # the embedded default model (Gemma 3 270M, bf16)
    .venv/bin/python benchmarks/serve_bench.py --quick    # fewer repeats
    .venv/bin/python benchmarks/serve_bench.py --model DIR --dtype float32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.cpu import describe  # noqa: E402
from common.models import resolve_model_dir  # noqa: E402
from common.server_process import ServerProcess  # noqa: E402
from common.tiny import LORA_MODULES, build_random_adapter  # noqa: E402
from serve.engine.local import LocalEngine  # noqa: E402
from serve.engine.types import GenerationRequest, SamplingParams  # noqa: E402

PROMPT = [{"role": "user", "content": "My fibre box shows a red LOS light since this morning and I have no internet. "
                                      "I already restarted the router. What should I do?"}]


def median(xs):
    return statistics.median(xs)


def params(n: int) -> SamplingParams:
    return SamplingParams(max_new_tokens=n, ignore_eos=True)


async def timed_generate(engine, prompt, adapter, n):
    t0 = time.perf_counter()
    r = await engine.generate(GenerationRequest(prompt, adapter, params(n)))
    return time.perf_counter() - t0, r


async def per_token_time(engine, prompt, adapter, batch: int, n: int) -> float:
    """Decode seconds per step for `batch` concurrent requests of n tokens (prefill excluded)."""
    results = await asyncio.gather(*(timed_generate(engine, prompt, adapter, n) for _ in range(batch)))
    r = results[0][1]
    decode = r.timings.total_s - r.timings.first_token_s
    return decode / (n - 1)


async def throughput(engine, prompt, adapters: list, n: int, concurrent: bool) -> float:
    """Wall seconds to serve len(adapters) requests, together or one after another."""
    t0 = time.perf_counter()
    if concurrent:
        await asyncio.gather(*(engine.generate(GenerationRequest(prompt, a, params(n))) for a in adapters))
    else:
        for a in adapters:
            await engine.generate(GenerationRequest(prompt, a, params(n)))
    return time.perf_counter() - t0


async def stall_during_load(engine, prompt, store: Path, n: int) -> dict:
    """Token gaps of a running stream while another adapter is loaded (read, validated, slotted)."""
    gaps, last = [], None
    loaded = asyncio.Event()

    async def stream():
        nonlocal last
        async for ev in engine.stream(GenerationRequest(prompt, "r16-all-0", params(n))):
            now = time.perf_counter()
            if last is not None:
                gaps.append(now - last)
            last = now

    async def load():
        await asyncio.sleep(0.5)
        await asyncio.to_thread(engine.load_adapter, "stall-probe", store / "r16-all-3")
        loaded.set()

    await asyncio.gather(stream(), load())
    engine.unload_adapter("stall-probe")
    return {"max_gap_s": max(gaps), "median_gap_s": median(gaps), "ratio": max(gaps) / median(gaps)}


def hot_load_times(engine, store: Path, repeats: int) -> list[float]:
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        engine.load_adapter(f"hot-{i}", store / "r16-all-1")
        times.append(time.perf_counter() - t0)
        engine.unload_adapter(f"hot-{i}")
    return times


BANDWIDTH_SCRIPT = """
import statistics, time, torch
x = torch.ones(256 * 1024 * 1024, dtype=torch.float32)
rates = []
for _ in range(9):
    t0 = time.perf_counter()
    x.sum()
    rates.append(x.numel() * 4 / (time.perf_counter() - t0))
print(statistics.median(rates))
"""


def memory_bandwidth() -> float:
    """Read bandwidth in bytes/s: summing a 1 GiB tensor with all threads streams it from memory once; the
    median of 9 (a shared host's best single reading can be twice its usual one). In a child process: a large
    multi-threaded op in this process's main thread was measured to slow the engine's loop thread by up to 40%
    for the rest of the run (two OpenMP pools on two cores)."""
    out = subprocess.run([sys.executable, "-c", BANDWIDTH_SCRIPT], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def server_vs_generate(model_dir: Path, store: Path, dtype: str, prompt_ids, n: int, repeats: int) -> tuple[float, float]:
    """Tokens/s of raw `model.generate` and of one stream from the server, interleaved, after a warm-up of each."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
    for p in model.parameters():
        p.requires_grad_(True)  # the same fast path the engine uses
    ids = torch.tensor([prompt_ids])
    body = {"inputs": PROMPT_TEXT, "parameters": {"max_new_tokens": n, "details": False}, "stream": True}
    server = ServerProcess(["--model", str(model_dir), "--adapters", str(store), "--dtype", dtype],
                           env={"SUPPORTKIT_SERVE_WATCH_INTERVAL_S": "0"}).wait_ready(600)
    url = server.url
    gen, srv = [], []
    try:
        with httpx.Client(timeout=300) as client, torch.inference_mode():
            for _ in range(repeats + 1):
                t0 = time.perf_counter()
                model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)  # prefill included, as served
                gen.append(n / (time.perf_counter() - t0))
                t0, count = time.perf_counter(), 0
                with client.stream("POST", url + "/generate_stream", json=body) as r:
                    for line in r.iter_lines():
                        if line.startswith("data:"):
                            count += 1
                srv.append(count / (time.perf_counter() - t0))
    finally:
        server.stop()
    return median(gen[1:]), median(srv[1:])  # the first of each warms up


async def engine_suite(engine, store: Path, prompt: str, n: int, repeats: int) -> dict:
    out: dict = {}
    await timed_generate(engine, prompt, None, 4)  # warm-up
    bandwidth = []
    for batch in (1, 8):
        rows = {"base": [], "r16-all": [], "r16-qv": []}
        for _ in range(repeats):  # interleaved, so that noise hits all variants alike
            rows["base"].append(await per_token_time(engine, prompt, None, batch, n))
            if batch == 1:  # the host's bandwidth drifts: read it next to the batch-1 decode it is compared with
                bandwidth.append(memory_bandwidth())
            rows["r16-all"].append(await per_token_time(engine, prompt, "r16-all-0", batch, n))
            rows["r16-qv"].append(await per_token_time(engine, prompt, "r16-qv", batch, n))
        base = median(rows["base"])
        out[f"batch{batch}"] = {
            "base_s_per_token": base,
            "r16_all_over_base": median(rows["r16-all"]) / base,
            "r16_qv_over_base": median(rows["r16-qv"]) / base,
        }
    mixed = [f"r16-all-{i % 4}" for i in range(8)]
    single = ["r16-all-0"] * 8
    t = {"mixed": [], "single": [], "sequential": []}
    for _ in range(repeats):
        t["mixed"].append(await throughput(engine, prompt, mixed, n, True))
        t["single"].append(await throughput(engine, prompt, single, n, True))
        t["sequential"].append(await throughput(engine, prompt, mixed, n, False))
    out["eight_requests"] = {
        "mixed_s": median(t["mixed"]), "single_adapter_s": median(t["single"]), "sequential_s": median(t["sequential"]),
        "concurrent_speedup": median(t["sequential"]) / median(t["mixed"]),
        "mixed_over_single": median(t["mixed"]) / median(t["single"]),
    }
    loads = hot_load_times(engine, store, max(5, repeats))
    out["hot_load_s"] = {"median": median(loads), "max": max(loads)}
    out["stall_during_load"] = await stall_during_load(engine, prompt, store, max(n, 48))
    out["memory_bandwidth"] = median(bandwidth)
    return out


def write_results(results: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "serve.json").write_text(json.dumps(results, indent=2) + "\n")
    e = results["engine"]
    rows = [
        ("8 requests over 4 adapters: concurrent speed-up vs one at a time", ">= 5x", f"{e['eight_requests']['concurrent_speedup']:.2f}x"),
        ("8 requests, mixed adapters / all on one adapter (time)", "<= 1.10", f"{e['eight_requests']['mixed_over_single']:.3f}"),
        ("per-token time, LoRA r16 all 7 modules / base, batch 1", "<= 1.10", f"{e['batch1']['r16_all_over_base']:.3f}"),
        ("per-token time, LoRA r16 all 7 modules / base, batch 8", "<= 1.10", f"{e['batch8']['r16_all_over_base']:.3f}"),
        ("per-token time, LoRA r16 q,v / base, batch 1", "<= 1.05", f"{e['batch1']['r16_qv_over_base']:.3f}"),
        ("per-token time, LoRA r16 q,v / base, batch 8", "<= 1.05", f"{e['batch8']['r16_qv_over_base']:.3f}"),
        ("adapter hot-load (r16, 7 modules), median", "<= 50 ms", f"{e['hot_load_s']['median'] * 1000:.1f} ms"),
        ("longest token gap while an adapter loads / median gap", "<= 1.5", f"{e['stall_during_load']['ratio']:.2f}"),
        ("server single-stream tokens/s / raw model.generate", ">= 0.95", f"{results['server_over_generate']:.3f}"),
        ("batch-1 decode bytes/s / memory bandwidth", ">= 35%", f"{results['bandwidth_use'] * 100:.0f}%"),
    ]
    lines = [
        f"# Serving benchmark ({results['model']}, {results['dtype']}, {results['machine']})", "",
        f"Measured {results['date']} with `{results['command']}`.", "",
        "| metric | target | measured |", "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows], "",
        f"Batch-1 decode: {e['batch1']['base_s_per_token'] * 1000:.1f} ms/token on the base model; "
        f"batch 8: {e['batch8']['base_s_per_token'] * 1000:.1f} ms/step. Memory read bandwidth: "
        f"{results['memory_bandwidth_gbs']:.1f} GB/s; weights read per token: {results['weight_bytes'] / 1e6:.0f} MB.",
        f"Server stream: {results['server_tokens_per_s']:.1f} tokens/s; raw generate: {results['generate_tokens_per_s']:.1f} tokens/s.",
    ]
    (out_dir / "serve.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


PROMPT_TEXT = ""


def main() -> None:
    global PROMPT_TEXT
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    repeats = 2 if args.quick else 4
    model_dir = resolve_model_dir(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        print("building adapters ...", flush=True)
        for i in range(4):
            build_random_adapter(model_dir, store / f"r16-all-{i}", r=16, alpha=32, target_modules=LORA_MODULES,
                                 seed=i, scale=0.01)
        build_random_adapter(model_dir, store / "r16-qv", r=16, alpha=32, target_modules=("q_proj", "v_proj"),
                             seed=9, scale=0.01)
        engine = LocalEngine(model_dir, dtype=args.dtype, max_batch_size=8, max_adapters=8)
        engine.start()
        for name in ("r16-all-0", "r16-all-1", "r16-all-2", "r16-all-3", "r16-qv"):
            engine.load_adapter(name, store / name)
        PROMPT_TEXT = engine.render_chat(PROMPT)
        prompt_ids = engine.tokenizer(PROMPT_TEXT, add_special_tokens=False)["input_ids"]
        weight_bytes = sum(p.numel() * p.element_size() for p in engine.model.parameters())
        print("engine suite ...", flush=True)
        results_engine = asyncio.run(engine_suite(engine, store, PROMPT_TEXT, args.tokens, repeats))
        engine.stop()
        del engine
        print("server vs generate ...", flush=True)
        n = 64
        gen_tps, srv_tps = server_vs_generate(model_dir, store, args.dtype, prompt_ids, n, repeats)
    bandwidth = results_engine["memory_bandwidth"]
    base_tok = results_engine["batch1"]["base_s_per_token"]
    results = {
        "model": model_dir.name, "dtype": args.dtype, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{describe()}, torch {torch.__version__}",
        "command": "python benchmarks/serve_bench.py" + (" --quick" if args.quick else ""),
        "engine": results_engine, "generate_tokens_per_s": gen_tps, "server_tokens_per_s": srv_tps,
        "server_over_generate": srv_tps / gen_tps, "memory_bandwidth_gbs": bandwidth / 1e9,
        "weight_bytes": weight_bytes, "bandwidth_use": weight_bytes / base_tok / bandwidth,
    }
    write_results(results, args.out)


if __name__ == "__main__":
    main()
