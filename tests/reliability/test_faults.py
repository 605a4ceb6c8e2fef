"""Faults survived with nothing lost: an adapter deleted or corrupted while loaded and in use, a model
directory missing at start-up, the disk filling up while a training run saves its adapter.

Covered elsewhere (and listed in docs/reliability.md): refused corrupt / pickled / other-base adapters
(tests/serve/test_bad_input.py), unload and reload during streams (tests/serve/test_hot_reload.py), training
killed and resumed (tests/train/test_resume.py), eval killed mid-judging and resumed (tests/eval/test_resume.py).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from common.tiny import build_random_adapter
from tests.conftest import ROOT
from tests.reliability.conftest import AUTH, SMALL_LIMITS, wait_until

CHAT = {"messages": [{"role": "user", "content": "Tell me everything."}], "max_tokens": 60, "temperature": 0}


@pytest.fixture(scope="module")
def watched(server_factory, tiny_model, tmp_path_factory):
    store = tmp_path_factory.mktemp("fault-store")
    for name, seed in (("doomed", 41), ("mangled", 42)):
        build_random_adapter(tiny_model, store / name, seed=seed, target_modules=("q_proj", "v_proj"))
    server = server_factory("--model", str(tiny_model), "--adapters", str(store), "--dtype", "float32", env={
        **SMALL_LIMITS, "SUPPORTKIT_SERVE_MAX_NEW_TOKENS": "60", "SUPPORTKIT_SERVE_WATCH_INTERVAL_S": "0.3"})
    return server, store


def _models(server) -> set[str]:
    return {m["id"] for m in httpx.get(server.url + "/v1/models", timeout=10).json()["data"]}


def _answer(server, model) -> str:
    r = httpx.post(server.url + "/v1/chat/completions", json={**CHAT, "model": model}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def test_adapter_directory_deleted_while_streaming(watched):
    server, store = watched
    expected = _answer(server, "doomed")

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            async with client.stream("POST", "/v1/chat/completions", json={**CHAT, "model": "doomed", "stream": True}) as r:
                assert r.status_code == 200
                text, lines = "", r.aiter_lines()
                async for line in lines:
                    if line.startswith("data: {"):
                        text += json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                        break
                shutil.rmtree(store / "doomed")  # the files go; the running request keeps its weights
                async for line in lines:
                    if line.startswith("data: {"):
                        chunk = json.loads(line[6:])
                        assert "error" not in chunk, chunk
                        text += chunk["choices"][0]["delta"].get("content") or ""
                return text

    assert asyncio.run(scenario()) == expected
    assert wait_until(lambda: "doomed" not in _models(server))
    r = httpx.post(server.url + "/v1/chat/completions", json={**CHAT, "model": "doomed"}, timeout=60)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert httpx.get(server.url + "/health").status_code == 200


def test_adapter_corrupted_in_place_keeps_the_loaded_version(watched):
    server, store = watched
    expected = _answer(server, "mangled")
    (store / "mangled" / "adapter_model.safetensors").write_bytes(b"\x00not safetensors" * 64)

    def refused():
        listing = httpx.get(server.url + "/admin/adapters", headers=AUTH, timeout=10).json()
        return "mangled" in listing["failed"]

    assert wait_until(refused)
    assert "mangled" in _models(server)  # the version loaded before keeps serving
    assert _answer(server, "mangled") == expected


def test_missing_model_directory_is_a_clear_error(tmp_path):
    missing = tmp_path / "no-such-model"
    proc = subprocess.run(
        [sys.executable, "-m", "supportkit.cli", "serve", "--model", str(missing), "--port", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert str(missing) in out.replace("\n", "") and "Traceback" not in out, out[-2000:]


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_disk_full_while_saving_leaves_no_half_adapter(tmp_path, tiny_model):
    """The adapter store on a 12 KiB tmpfs: saving the adapter fails with ENOSPC part-way. The previous adapter
    of the same name must survive untouched, and no partial directory may remain in the store."""
    store = tmp_path / "store"
    if not _mount_tmpfs(store, "12k"):
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN) here")
    try:
        previous = store / "disk-run"
        previous.mkdir()
        (previous / "adapter_config.json").write_text('{"marker": "previous"}')
        data = tmp_path / "data"
        subprocess.run([sys.executable, "-m", "supportkit.cli", "data", "generate", "--offline", "--out", str(data),
                        "--scenarios", "30", "--per-scenario", "1"], cwd=ROOT, check=True, capture_output=True, timeout=300)
        config = tmp_path / "disk-run.yaml"
        config.write_text(json.dumps({
            "name": "disk-run", "model": str(tiny_model), "data": str(data), "max_steps": 2, "batch_size": 2,
            "eval_steps": 2, "save_steps": 2, "logging_steps": 1, "max_val_examples": 4, "max_length": 1024, "r": 8,
            "alpha": 16, "target_modules": "all", "learning_rate": 1e-2,
        }))  # JSON is YAML
        proc = subprocess.run(
            [sys.executable, "-m", "supportkit.cli", "train", "run", "--config", str(config), "--out", str(store),
             "--work-dir", str(tmp_path / "work"), "--no-progress"],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, out[-3000:]
        assert "No space left on device" in out or "ENOSPC" in out, out[-3000:]
        assert sorted(p.name for p in store.iterdir()) == ["disk-run"], list(store.iterdir())
        assert sorted(p.name for p in previous.iterdir()) == ["adapter_config.json"]
        assert json.loads((previous / "adapter_config.json").read_text()) == {"marker": "previous"}
    finally:
        subprocess.run(["umount", str(store)], capture_output=True)
