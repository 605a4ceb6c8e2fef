"""Shared fixtures: tiny models and adapters built in-process, and real kit servers on loopback (common.server_process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.server_process import ROOT, free_port  # noqa: F401  (the tests' helpers, from one place)
from common.server_process import ServerProcess as LiveServer


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random Qwen2 (hidden 64, 2 layers) with a real tokenizer and the kit's chat template."""
    from common.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2", "qwen2")


@pytest.fixture(scope="session")
def tiny_gemma(tmp_path_factory) -> Path:
    """A tiny random Gemma3 with a sliding-window layer (window 32) beside a full-attention one."""
    from common.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-gemma3", "gemma3")


@pytest.fixture(scope="session")
def adapter_store(tiny_model, tmp_path_factory) -> Path:
    """Two adapters with non-zero LoRA weights: `support-a` (q,v; r=8) and `support-b` (all 7 modules; r=4)."""
    from common.tiny import LORA_MODULES, build_random_adapter

    store = tmp_path_factory.mktemp("adapters")
    build_random_adapter(tiny_model, store / "support-a", r=8, target_modules=("q_proj", "v_proj"), seed=1)
    build_random_adapter(tiny_model, store / "support-b", r=4, target_modules=LORA_MODULES, seed=2)
    return store


@pytest.fixture(scope="session")
def server_factory(tmp_path_factory):
    """Start kit servers; all are stopped at the end of the session."""
    started: list[LiveServer] = []

    def start(*args: str, env: dict[str, str] | None = None) -> LiveServer:
        log = tmp_path_factory.mktemp("server") / "server.log"
        srv = LiveServer(list(args), env=env, log=log)
        started.append(srv)
        return srv.wait_ready()

    yield start
    for srv in started:
        srv.stop()


ADMIN_TOKEN = "test-admin-token-0123456789"


@pytest.fixture(scope="session")
def live_server(server_factory, tiny_model, adapter_store) -> LiveServer:
    """One shared kit server: the tiny Qwen2 with the two adapters of `adapter_store`, admin routes on."""
    return server_factory(
        "--model", str(tiny_model), "--adapters", str(adapter_store), "--dtype", "float32",
        env={"SUPPORTKIT_ADMIN_TOKEN": ADMIN_TOKEN},
    )
