"""`supportkit serve` in a subprocess on a free loopback port, for the benchmark scripts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def start_server(args: list[str], env: dict[str, str] | None = None, log: Path | None = None,
                 timeout_s: float = 300) -> tuple[subprocess.Popen, str]:
    """Start the server with `args` and wait for /health; returns the process and its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "supportkit.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *args],
        cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
        stderr=open(log, "wb") if log else subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the server ({' '.join(args)}) did not become healthy within {timeout_s:g} s")
