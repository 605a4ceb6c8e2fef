"""What a kit server in front of a remote engine adds: time to first token and total time, front vs direct.

A back kit server (the "remote": it speaks TGI's protocol and OpenAI completions, as TGI and vLLM do) and two
front kit servers (`--engine tgi`, `--engine vllm`) run on loopback; the same greedy streaming requests go to
the back directly (TGI /generate_stream) and through each front (TGI /generate_stream). The difference is
the front's cost: prompt tokenization, one more HTTP hop and SSE parse, re-framing. Medians of sequential
requests; the machine's load average is recorded because other work competes for the CPUs, and so is the
CPU time each server spent per request (psutil), which depends much less on that competition.

    .venv/bin/python benchmarks/remote_overhead.py --model DIR --adapters DIR [--requests 30] [--tokens 32]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import httpx
import psutil

from common.server_process import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "My fibre box shows a red LOS light since this morning and I have no internet. What should I do?"


def one(client: httpx.Client, url: str, adapter: str | None, tokens: int) -> tuple[float, float]:
    params = {"max_new_tokens": tokens, **({"adapter_id": adapter} if adapter else {})}
    t0 = time.perf_counter()
    first = None
    with client.stream("POST", url + "/generate_stream", json={"inputs": PROMPT, "parameters": params}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data:"):
                first = first or time.perf_counter()
    return first - t0, time.perf_counter() - t0


def cpu_s(proc: subprocess.Popen) -> float:
    t = psutil.Process(proc.pid).cpu_times()
    return t.user + t.system


def measure(url: str, adapter: str | None, n: int, tokens: int, procs: dict) -> dict:
    with httpx.Client(timeout=120) as client:
        for _ in range(3):
            one(client, url, adapter, tokens)  # warm-up
        before = {name: cpu_s(p) for name, p in procs.items()}
        runs = [one(client, url, adapter, tokens) for _ in range(n)]
        cpu = {f"{name}_cpu_ms_per_request": 1000 * (cpu_s(p) - before[name]) / n for name, p in procs.items()}
    return {"ttft_ms_median": 1000 * statistics.median(r[0] for r in runs),
            "total_ms_median": 1000 * statistics.median(r[1] for r in runs), **cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapters", required=True)
    ap.add_argument("--adapter", default=None, help="adapter to request (default: the store's first)")
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "remote_overhead_tiny_cpu.json"))
    a = ap.parse_args()
    adapter = a.adapter or sorted(p.name for p in Path(a.adapters).iterdir() if p.is_dir())[0]
    servers = []
    try:
        servers.append(ServerProcess(["--model", a.model, "--adapters", a.adapters, "--dtype", a.dtype]).wait_ready(300))
        back, back_url = servers[0].proc, servers[0].url
        fronts = {}
        for kind, url in (("tgi", back_url), ("vllm", back_url + "/v1")):
            servers.append(ServerProcess(["--model", a.model, "--adapters", a.adapters, "--engine", kind,
                                          "--engine-url", url]).wait_ready(300))
            fronts[kind] = servers[-1].url
        procs = [s.proc for s in servers]
        load_before = os.getloadavg()[0]
        results = {"direct": measure(back_url, adapter, a.requests, a.tokens, {"back": back})}
        for i, (kind, url) in enumerate(fronts.items()):
            results[f"front_{kind}"] = measure(url, adapter, a.requests, a.tokens, {"back": back, "front": procs[1 + i]})
        for kind in fronts:
            r, d = results[f"front_{kind}"], results["direct"]
            r["ttft_overhead_ms"] = r["ttft_ms_median"] - d["ttft_ms_median"]
            r["total_overhead_ms"] = r["total_ms_median"] - d["total_ms_median"]
        report = {"model": Path(a.model).name, "adapter": adapter, "requests": a.requests, "tokens": a.tokens,
                  "cpu_count": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()[0],
                  "results": results}
    finally:
        for server in servers:
            server.stop()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
