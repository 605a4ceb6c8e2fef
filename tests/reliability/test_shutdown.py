"""Graceful shutdown (Kubernetes rolling updates): on SIGTERM the server stops accepting connections, lets the
requests in flight finish, and exits 0."""

from __future__ import annotations

import asyncio
import json
import signal

import httpx

from tests.conftest import LiveServer
from tests.reliability.conftest import SMALL_LIMITS, gauge

TOKENS = 120
CHAT = {"messages": [{"role": "user", "content": "Tell me everything."}], "max_tokens": TOKENS, "temperature": 0}


async def _stream(client, model):
    events, done = [], False
    body = {**CHAT, "model": model, "stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events, done


async def _plain(client, model):
    r = await client.post("/v1/chat/completions", json={**CHAT, "model": model})
    assert r.status_code == 200, r.text
    return r.json()


def _refused(url) -> bool:
    try:
        httpx.get(url + "/health", timeout=2)
    except httpx.ConnectError:
        return True
    return False


def test_sigterm_drains_in_flight_requests_and_exits_0(serve_args, tmp_path):
    server = LiveServer(serve_args, env={**SMALL_LIMITS, "SUPPORTKIT_SERVE_MAX_NEW_TOKENS": str(TOKENS)},
                        log=tmp_path / "server.log").wait_ready()
    try:
        async def scenario():
            async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
                streams = [asyncio.create_task(_stream(client, m)) for m in ("support-a",) * 3]
                plains = [asyncio.create_task(_plain(client, m)) for m in ("support-a",) * 2]
                for _ in range(200):  # all five admitted or waiting before the signal
                    await asyncio.sleep(0.05)
                    if gauge(server, "supportkit_batch_size") + gauge(server, "supportkit_queue_size") >= 5:
                        break
                server.proc.send_signal(signal.SIGTERM)
                refused_while_draining = False
                for _ in range(100):  # the listening socket closes at once, long before the requests end
                    if await asyncio.to_thread(_refused, server.url):
                        refused_while_draining = any(not t.done() for t in streams + plains)
                        break
                    await asyncio.sleep(0.05)
                return await asyncio.gather(*streams), await asyncio.gather(*plains), refused_while_draining

        streams, plains, refused = asyncio.run(scenario())
        assert refused, "new connections were still accepted after SIGTERM while requests ran"
        # Every request ran to its own end: its token limit, or the end-of-sequence token a random tiny model may
        # reach first ("stop"; a request cut short would have no final chunk and no [DONE]).
        for events, done in streams:
            finish = next(e["choices"][0]["finish_reason"] for e in reversed(events) if e["choices"])
            usage = events[-1]["usage"]
            assert done and finish in ("length", "stop"), events[-2:]
            assert (usage["completion_tokens"] == TOKENS) == (finish == "length"), usage
        for body in plains:
            finish, tokens = body["choices"][0]["finish_reason"], body["usage"]["completion_tokens"]
            assert finish in ("length", "stop") and (tokens == TOKENS) == (finish == "length"), body
        assert server.proc.wait(60) == 0, server.log.read_text()[-3000:]
        log = server.log.read_text()
        assert "Waiting for connections to close" in log or "Shutting down" in log
    finally:
        server.stop()
