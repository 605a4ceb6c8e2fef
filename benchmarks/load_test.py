"""Load with backpressure: N concurrent async clients for T seconds over several adapters, streaming and not.

Every request must either complete (a full answer: a JSON body, or a stream that ends properly) or be refused
early with 429/503 and a JSON error; anything else (another status, a dropped connection, a stream cut short or
ending in an error event, a client-side timeout) counts as `bad`. Also recorded: p50/p99 latency of completed
requests, the largest queue and batch seen on /metrics, the server's RSS (psutil) before and after, and
whether the batch and queue drain back to 0.

    .venv/bin/python benchmarks/load_test.py --model DIR --adapters DIR          # starts its own server
    .venv/bin/python benchmarks/load_test.py --url http://127.0.0.1:8000 --pid PID --adapters-list a,b

The CI test (tests/reliability/test_load.py) runs `run_load` for fewer seconds against a small queue.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from common.server_process import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "My fibre box shows a red LOS light since this morning and I have no internet. What should I do?"


@dataclass
class LoadReport:
    clients: int
    duration_s: float
    max_new_tokens: int
    served: int = 0
    refused: int = 0
    bad: int = 0
    bad_examples: list[str] = field(default_factory=list)
    by_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    refused_status: dict[str, int] = field(default_factory=dict)
    refused_without_retry_after: int = 0
    p50_s: float | None = None
    p99_s: float | None = None
    max_queue_seen: float = 0.0
    max_batch_seen: float = 0.0
    rss_before_mb: float | None = None
    rss_after_mb: float | None = None
    rss_growth_pct: float | None = None
    drained: bool | None = None
    requests_per_s: float = 0.0
    cpu_count: int = field(default_factory=os.cpu_count)
    loadavg_before: float | None = None  # the machine's 1-min load average: other work competes for the CPUs
    loadavg_after: float | None = None
    latencies: list[float] = field(default_factory=list, repr=False)


def _scenarios(adapters: list[str], max_new_tokens: int):
    """The request mix, in rotation: (kind, method path, body)."""
    models = adapters + [""]  # "" = the base model
    mix = []
    for model in models:
        chat = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_new_tokens,
                "temperature": 0}
        gen = {"inputs": PROMPT, "parameters": {"max_new_tokens": max_new_tokens, **({"adapter_id": model} if model else {})}}
        mix += [
            ("openai", "/v1/chat/completions", chat),
            ("openai-stream", "/v1/chat/completions", {**chat, "stream": True}),
            ("tgi", "/generate", gen),
            ("tgi-stream", "/generate_stream", gen),
        ]
    return mix


def _refusal(status: int, body: bytes) -> bool:
    if status not in (429, 503):
        return False
    try:
        return bool(json.loads(body).get("error"))
    except ValueError:
        return False


def _retry_after(r: httpx.Response) -> float:
    try:
        return min(5.0, float(r.headers.get("retry-after", "0")))
    except ValueError:
        return 0.0


async def _one(client: httpx.AsyncClient, kind: str, path: str, body: dict) -> tuple[str, str, float]:
    """('served' | 'refused' | 'bad', detail, seconds the server asked to wait before retrying)."""
    if not kind.endswith("stream"):
        r = await client.post(path, json=body)
        if r.status_code == 200:
            data = r.json()
            ok = ("choices" in data) if kind == "openai" else ("generated_text" in data)
            return ("served", "", 0) if ok else ("bad", f"{kind}: 200 without an answer: {r.text[:200]}", 0)
        if _refusal(r.status_code, r.content):
            return "refused", str(r.status_code), _retry_after(r)
        return "bad", f"{kind}: {r.status_code} {r.text[:200]}", 0
    try:
        return await _one_stream(client, kind, path, body)
    except httpx.HTTPError as exc:
        raise type(exc)(f"{exc} ({kind}, {getattr(exc, 'phase', 'before the response headers')})") from exc


async def _one_stream(client: httpx.AsyncClient, kind: str, path: str, body: dict) -> tuple[str, str, float]:
    events = 0
    async with client.stream("POST", path, json=body) as r:
        if r.status_code != 200:
            content = await r.aread()
            if _refusal(r.status_code, content):
                return "refused", str(r.status_code), _retry_after(r)
            return "bad", f"{kind}: {r.status_code} {content[:200]!r}", 0
        finished = False
        lines = r.aiter_lines()
        while True:
            try:
                line = await lines.__anext__()
            except StopAsyncIteration:
                break
            except httpx.HTTPError as exc:
                exc.phase = f"mid-stream, after {events} events"
                raise
            if not line.startswith("data:"):
                continue
            events += 1
            data = line[5:].strip()
            if data == "[DONE]":
                finished = True
                continue
            event = json.loads(data)
            if "error" in event:
                return "bad", f"{kind}: error event {data[:200]}", 0
            if kind == "tgi-stream" and event.get("details"):
                finished = True
        return ("served", "", 0) if finished else ("bad", f"{kind}: stream ended without its last event", 0)


def _gauges(text: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(supportkit_\w+_size) ([0-9.eE+-]+)$", text, re.M)}


def _rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


async def _drive(url: str, adapters: list[str], clients: int, seconds: float, max_new_tokens: int,
                 report: LoadReport | None) -> None:
    mix = _scenarios(adapters, max_new_tokens)
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    timeout = httpx.Timeout(120.0, connect=10.0)  # a hang shows as a client timeout, counted as bad
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        stop_sampling = asyncio.Event()

        async def sample():
            while not stop_sampling.is_set():
                try:
                    g = _gauges((await client.get("/metrics")).text)
                    if report:
                        report.max_queue_seen = max(report.max_queue_seen, g.get("supportkit_queue_size", 0))
                        report.max_batch_seen = max(report.max_batch_seen, g.get("supportkit_batch_size", 0))
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.25)

        async def worker(i: int):
            n = i
            while time.monotonic() < deadline:
                kind, path, body = mix[n % len(mix)]
                n += clients
                started = time.monotonic()
                try:
                    outcome, detail, wait = await _one(client, kind, path, body)
                except (httpx.HTTPError, ValueError) as exc:
                    outcome, detail, wait = "bad", f"{kind}: {type(exc).__name__}: {exc}", 0
                if outcome == "refused":
                    # As a polite client does: wait what Retry-After says (never past the end of the run).
                    await asyncio.sleep(max(0.0, min(wait or 0.05, deadline - time.monotonic())))
                if report is None:
                    continue
                counts = report.by_kind.setdefault(kind, {"served": 0, "refused": 0, "bad": 0})
                counts[outcome] += 1
                if outcome == "served":
                    report.served += 1
                    report.latencies.append(time.monotonic() - started)
                elif outcome == "refused":
                    report.refused += 1
                    report.refused_status[detail] = report.refused_status.get(detail, 0) + 1
                    report.refused_without_retry_after += not wait
                else:
                    report.bad += 1
                    if len(report.bad_examples) < 10:
                        report.bad_examples.append(detail)

        sampler = asyncio.create_task(sample())
        await asyncio.gather(*(worker(i) for i in range(clients)))
        stop_sampling.set()
        await sampler


def run_load(url: str, adapters: list[str], clients: int = 64, seconds: float = 60.0, max_new_tokens: int = 16,
             pid: int | None = None, warmup_s: float = 5.0) -> LoadReport:
    """Warm up (allocator and caches settle), then measure; RSS is read after the warm-up and at the end."""
    if warmup_s > 0:
        asyncio.run(_drive(url, adapters, clients, warmup_s, max_new_tokens, None))
    _wait_idle(url, 30)
    report = LoadReport(clients=clients, duration_s=seconds, max_new_tokens=max_new_tokens)
    report.rss_before_mb = _rss_mb(pid)
    report.loadavg_before = os.getloadavg()[0]
    started = time.monotonic()
    asyncio.run(_drive(url, adapters, clients, seconds, max_new_tokens, report))
    elapsed = time.monotonic() - started
    report.loadavg_after = os.getloadavg()[0]
    report.drained = _wait_idle(url, 30)
    report.rss_after_mb = _rss_mb(pid)
    if report.rss_before_mb:
        report.rss_growth_pct = 100 * (report.rss_after_mb - report.rss_before_mb) / report.rss_before_mb
    if report.latencies:
        ordered = sorted(report.latencies)
        report.p50_s = statistics.median(ordered)
        report.p99_s = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    report.requests_per_s = (report.served + report.refused) / elapsed
    return report


def _wait_idle(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        g = _gauges(httpx.get(url + "/metrics", timeout=10).text)
        if g.get("supportkit_batch_size") == 0 and g.get("supportkit_queue_size") == 0:
            return True
        time.sleep(0.2)
    return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="An already running server (else one is started from --model/--adapters)")
    ap.add_argument("--pid", type=int, help="Its process id, for RSS")
    ap.add_argument("--model", help="Base model directory for the server this script starts")
    ap.add_argument("--adapters", help="Adapter store for the server this script starts")
    ap.add_argument("--adapters-list", help="Comma-separated adapters to use (default: all in /v1/models)")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--max-queue", type=int, default=16, help="SUPPORTKIT_SERVE_MAX_QUEUE of a server started here")
    ap.add_argument("--max-batch-size", type=int, default=8)
    ap.add_argument("--out", type=Path, help="Write the report as JSON")
    ap.add_argument("--server-log", type=Path, help="Where the server this script starts writes its log (warnings)")
    args = ap.parse_args()
    server = None
    url, pid = args.url, args.pid
    if not url:
        if not (args.model and args.adapters):
            ap.error("give --url, or --model and --adapters")
        server = ServerProcess(["--model", args.model, "--adapters", args.adapters, "--log-level", "warning"], env={
            "SUPPORTKIT_SERVE_MAX_QUEUE": str(args.max_queue), "SUPPORTKIT_SERVE_MAX_BATCH_SIZE": str(args.max_batch_size),
            "SUPPORTKIT_SERVE_DTYPE": "float32",
        }, log=args.server_log).wait_ready(180)
        url, pid = server.url, server.proc.pid
    try:
        names = args.adapters_list.split(",") if args.adapters_list else [
            m["id"] for m in httpx.get(url + "/v1/models").json()["data"] if m.get("parent")]
        report = run_load(url, names, args.clients, args.seconds, args.max_new_tokens, pid, args.warmup)
    finally:
        if server:
            server.stop(60)
    out = {k: v for k, v in asdict(report).items() if k != "latencies"}
    out.update(adapters=names, max_queue=args.max_queue if server else None,
               max_batch_size=args.max_batch_size if server else None, date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               command=" ".join(sys.argv))
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
