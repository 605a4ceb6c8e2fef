"""`supportkit serve` in a subprocess on loopback, ready once /health answers: for the study, tests and benchmarks.

The server runs the code of the current checkout (`python -m supportkit.cli` from `cwd`, default the
repository root when run from a checkout), with its output in a log file whose tail is quoted when it fails.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


class ServerNotReady(RuntimeError):
    """The server exited or did not become ready in time; the message quotes its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no obstacle
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class ServerProcess:
    """Started by the constructor; `wait_ready()` before use, `stop()` after (or use it as a context manager)."""

    def __init__(self, args: list[str], *, port: int | None = None, env: dict[str, str] | None = None,
                 log: Path | None = None, cwd: Path | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(log) if log else None
        self._out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supportkit.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port), *args],
            cwd=cwd or ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=self._out, stderr=subprocess.STDOUT,
        )

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log and self.log.is_file() else ""

    def wait_ready(self, timeout: float = 120, adapters: list[str] = (), poll_s: float = 0.3) -> "ServerProcess":
        """Wait for /health, and for every one of `adapters` to be listed in /v1/models; ServerNotReady if not."""
        deadline = time.monotonic() + timeout
        listed: list[dict] = []
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerNotReady(f"the server exited with code {self.proc.returncode}; its log"
                                     f"{f' ({self.log})' if self.log else ''}:\n{self.tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    if not adapters:
                        return self
                    listed = httpx.get(self.url + "/v1/models", timeout=10).json().get("data", [])
                    if set(adapters) <= {m["id"] for m in listed}:
                        return self
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(poll_s)
        missing = sorted(set(adapters) - {m.get("id") for m in listed})
        self.stop()
        raise ServerNotReady(f"the server was not ready after {timeout:.0f} s"
                             + (f" (adapters not listed: {', '.join(missing)})" if missing else "")
                             + (f"; see {self.log}:\n{self.tail()}" if self.log else ""))

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (a graceful drain), then SIGKILL after `timeout` s; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        code = self.proc.wait()
        if self._out is not subprocess.DEVNULL and not self._out.closed:
            self._out.close()
        return code

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
