"""Load with backpressure (bounded CI version of benchmarks/load_test.py: 64 clients for 15 s instead of 60 s),
and slots freed by request timeouts and client disconnects."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import sys

import httpx
import pytest

from tests.conftest import ROOT
from tests.reliability.conftest import SMALL_LIMITS, gauge, idle, wait_until

_spec = importlib.util.spec_from_file_location("load_test", ROOT / "benchmarks" / "load_test.py")
load_test = importlib.util.module_from_spec(_spec)
sys.modules["load_test"] = load_test  # dataclasses look their module up there
_spec.loader.exec_module(load_test)

MAX_QUEUE = 4


@pytest.mark.slow
def test_64_clients_complete_or_are_refused_early(server_factory, serve_args):
    server = server_factory(*serve_args, env={
        **SMALL_LIMITS, "SUPPORTKIT_SERVE_MAX_QUEUE": str(MAX_QUEUE), "SUPPORTKIT_SERVE_MAX_BATCH_SIZE": "4",
    })
    report = load_test.run_load(server.url, ["support-a", "support-b"], clients=64, seconds=15, max_new_tokens=8,
                                pid=server.proc.pid, warmup_s=4)
    summary = {k: v for k, v in report.__dict__.items() if k != "latencies"}
    print("load:", json.dumps(summary))
    assert report.bad == 0, report.bad_examples
    assert report.served > 0 and report.refused > 0, summary  # both paths taken: the queue really filled up
    assert set(report.refused_status) <= {"429", "503"}
    assert report.refused_without_retry_after == 0  # refusals say when to come back
    assert all(c["served"] for c in report.by_kind.values()), report.by_kind  # every kind and stream mode served
    assert report.max_queue_seen <= MAX_QUEUE, summary
    assert report.drained, "batch or queue did not return to 0"
    assert report.rss_growth_pct < 5, summary
    assert server.proc.poll() is None


@pytest.fixture(scope="module")
def slow_server(server_factory, serve_args):
    """Long generations (up to 3,000 tokens) and a 1 s request timeout."""
    return server_factory(*serve_args, env={
        **SMALL_LIMITS, "SUPPORTKIT_SERVE_MAX_NEW_TOKENS": "3000", "SUPPORTKIT_SERVE_REQUEST_TIMEOUT_S": "1",
    })


@pytest.fixture(scope="module")
def patient_server(server_factory, serve_args):
    """Long generations and the default (long) request timeout: only a disconnect can cut them short."""
    return server_factory(*serve_args, env={**SMALL_LIMITS, "SUPPORTKIT_SERVE_MAX_NEW_TOKENS": "3000"})


def _cancelled(server) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(r'^supportkit_requests_total\{[^}]*outcome="cancelled"[^}]*\} (\S+)$', text, re.M))


LONG = {"model": "support-a", "messages": [{"role": "user", "content": "Tell me everything."}], "max_tokens": 3000,
        "temperature": 0, "stop": None}


def test_request_timeout_frees_the_slot(slow_server):
    """Three long generations, plain and streamed, cut at 1 s. A random tiny model may reach its end-of-sequence
    token early (a batch's numerics can change the greedy path), so a request may also end normally; every
    one that timed out must have been cancelled in the engine, and at least one must time out."""
    before, timed_out = _cancelled(slow_server), 0
    r = httpx.post(slow_server.url + "/v1/chat/completions", json=LONG, timeout=60)
    if r.status_code == 504:
        assert "within 1 s" in r.json()["error"]["message"]
        timed_out += 1
    else:
        assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "stop", r.text[:300]
    r = httpx.post(slow_server.url + "/generate", json={"inputs": "Tell me everything.", "parameters": {
        "max_new_tokens": 3000, "adapter_id": "support-a"}}, timeout=60)
    if r.status_code == 504:
        assert r.json()["error_type"] == "timeout"
        timed_out += 1
    else:
        assert r.status_code == 200 and r.json()["details"]["finish_reason"] == "eos_token", r.text[:300]
    with httpx.stream("POST", slow_server.url + "/generate_stream", json={"inputs": "Tell me everything.", "parameters": {
            "max_new_tokens": 3000}}, timeout=60) as s:
        events = [json.loads(line[5:]) for line in s.iter_lines() if line.startswith("data:")]
    if "error_type" in events[-1]:
        assert events[-1]["error_type"] == "timeout" and len(events) > 1  # tokens, then TGI's error event
        timed_out += 1
    else:
        assert events[-1]["details"]["finish_reason"] == "eos_token"
    assert timed_out >= 1
    assert wait_until(lambda: idle(slow_server))
    assert _cancelled(slow_server) - before == timed_out  # cut short in the engine, not left to run to the end


def test_client_disconnect_frees_the_slot(patient_server):
    server = patient_server
    before = _cancelled(server)

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            # A stream whose reader goes away after a few events.
            async with client.stream("POST", "/v1/chat/completions", json={**LONG, "stream": True}) as r:
                seen = 0
                async for line in r.aiter_lines():
                    seen += line.startswith("data:")
                    if seen >= 3:
                        break
            assert await asyncio.to_thread(wait_until, lambda: idle(server))  # the stream's row is freed
            # A plain request abandoned while it runs (seen in the batch first).
            task = asyncio.create_task(client.post("/generate", json={"inputs": "Tell me everything.", "parameters": {
                "max_new_tokens": 3000}}))
            assert await asyncio.to_thread(wait_until, lambda: gauge(server, "supportkit_batch_size") >= 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(scenario())
    # Both rows leave the batch as "cancelled" (a generation that ran to its end would count as "success").
    assert wait_until(lambda: idle(server), timeout=120)
    assert _cancelled(server) - before == 2
