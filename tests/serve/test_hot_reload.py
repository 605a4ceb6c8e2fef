"""Adapters loaded and unloaded at run time, by the admin API and by the store watcher, while streams run."""

import asyncio
import os
import shutil
import threading
import time

import httpx
import pytest

from common.tiny import build_random_adapter
from tests.conftest import ADMIN_TOKEN

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def hot(server_factory, tiny_model, tmp_path_factory):
    store = tmp_path_factory.mktemp("hot-store")
    spare = tmp_path_factory.mktemp("spare")
    for i in range(3):
        build_random_adapter(tiny_model, store / f"hot-{i}", seed=20 + i)
    build_random_adapter(tiny_model, spare / "late", seed=30)
    server = server_factory("--model", str(tiny_model), "--adapters", str(store), "--dtype", "float32",
                            env={"SUPPORTKIT_ADMIN_TOKEN": ADMIN_TOKEN, "SUPPORTKIT_SERVE_WATCH_INTERVAL_S": "0.3"})
    return server, store, spare


async def _stream_chat(client, url, model, n, started: asyncio.Event | None = None):
    body = {"model": model, "messages": [{"role": "user", "content": "My router reboots"}], "max_tokens": n,
            "temperature": 0, "stream": True}
    text, done = "", False
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if started is not None and line.startswith("data: "):
                started.set()  # the request was accepted with its adapter and is generating
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                import json

                chunk = json.loads(line[6:])
                assert "error" not in chunk, chunk
                text += chunk["choices"][0]["delta"].get("content") or ""
    return text, done


async def _complete(client, url, model, n):
    body = {"model": model, "messages": [{"role": "user", "content": "My router reboots"}], "max_tokens": n, "temperature": 0}
    r = await client.post(url + "/v1/chat/completions", json=body)
    return r.json()["choices"][0]["message"]["content"]


def test_unload_and_reload_during_streams(hot):
    server, store, _ = hot

    async def scenario():
        async with httpx.AsyncClient(timeout=120) as client:
            expected = {m: await _complete(client, server.url, m, 60) for m in ("hot-0", "hot-1", "hot-2")}
            started = [asyncio.Event() for _ in range(6)]
            streams = [asyncio.create_task(_stream_chat(client, server.url, m, 60, ev))
                       for m, ev in zip(("hot-0", "hot-1", "hot-2") * 2, started)]
            await asyncio.gather(*(ev.wait() for ev in started))  # every stream runs before its adapter changes
            r = await client.delete(server.url + "/admin/adapters/hot-0", headers=AUTH)
            assert r.status_code == 200
            r = await client.post(server.url + "/admin/adapters/hot-1", headers=AUTH)  # reload while in use
            assert r.status_code == 201
            results = await asyncio.gather(*streams)
            for (text, done), model in zip(results, ("hot-0", "hot-1", "hot-2") * 2):
                assert done and text == expected[model], model
            r = await client.post(server.url + "/v1/chat/completions",
                                  json={"model": "hot-0", "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 404
            r = await client.post(server.url + "/admin/adapters/hot-0", headers=AUTH)
            assert r.status_code == 201
            assert await _complete(client, server.url, "hot-0", 60) == expected["hot-0"]

    asyncio.run(scenario())


def _models(server):
    return {m["id"] for m in httpx.get(server.url + "/v1/models").json()["data"]}


def _wait_for(predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_store_watcher_picks_up_new_and_removed_directories(hot):
    server, store, spare = hot
    assert "late" not in _models(server)
    shutil.copytree(spare / "late", store / ".late.tmp")
    (store / ".late.tmp").rename(store / "late")  # how training publishes: complete, then renamed into place
    assert _wait_for(lambda: "late" in _models(server))
    shutil.rmtree(store / "late")
    assert _wait_for(lambda: "late" not in _models(server))
    # A valid adapter whose files are still changing (being written) is not loaded until they stay unchanged
    # across two scans. The writer touches the weights far more often than the watcher scans; a marker adapter
    # published meanwhile shows that the watcher has done two scans while "partial" kept changing.
    shutil.copytree(spare / "late", store / "partial")
    writing = threading.Event()
    writing.set()

    def writer():
        weights, n = store / "partial" / "adapter_model.safetensors", 0
        while writing.is_set():
            n += 1
            os.utime(weights, ns=(time.time_ns(), time.time_ns() + n))  # a new mtime each time: still changing
            time.sleep(0.02)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        shutil.copytree(spare / "late", store / ".marker.tmp")
        (store / ".marker.tmp").rename(store / "marker")
        assert _wait_for(lambda: "marker" in _models(server))
        assert "partial" not in _models(server)
    finally:
        writing.clear()
        thread.join()
    assert _wait_for(lambda: "partial" in _models(server))
