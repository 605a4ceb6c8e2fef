"""Helpers for the reliability tests: small server limits, metrics scraping, server process facts."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# Small generations keep fuzzing and load fast on CPU; the bounds themselves are what is under test.
SMALL_LIMITS = {
    "SUPPORTKIT_ADMIN_TOKEN": ADMIN_TOKEN,
    "SUPPORTKIT_SERVE_MAX_NEW_TOKENS": "8",
    "SUPPORTKIT_SERVE_DEFAULT_MAX_NEW_TOKENS": "8",
}


def gauge(server, name: str) -> float:
    """One unlabelled sample from /metrics."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    match = re.search(rf"^{name} ([0-9.eE+-]+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def idle(server) -> bool:
    return gauge(server, "supportkit_batch_size") == 0 and gauge(server, "supportkit_queue_size") == 0


@pytest.fixture(scope="module")
def serve_args(tiny_model, adapter_store):
    return ["--model", str(tiny_model), "--adapters", str(adapter_store), "--dtype", "float32"]
