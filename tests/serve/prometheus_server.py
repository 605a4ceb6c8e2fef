"""A real Prometheus server for tests: scrapes given loopback targets every second, answers PromQL.

Also the metric contract of the kit's `GET /metrics` (SUPPORTKIT_METRICS), which tests and the
Grafana dashboard are checked against.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port

# name -> (type, labels). Counter names include `_total`; histograms expose _bucket/_sum/_count.
SUPPORTKIT_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "supportkit_requests_total": ("counter", ("adapter", "outcome")),
    "supportkit_request_energy_joules": ("histogram", ("adapter",)),
    "supportkit_energy_joules_total": ("counter", ("adapter", "phase", "source")),
    "supportkit_idle_energy_joules_total": ("counter", ("source",)),
    "supportkit_request_duration_seconds": ("histogram", ("adapter",)),
    "supportkit_time_to_first_token_seconds": ("histogram", ("adapter",)),
    "supportkit_time_per_output_token_seconds": ("histogram", ("adapter",)),
    "supportkit_queue_duration_seconds": ("histogram", ("adapter",)),
    "supportkit_input_tokens_total": ("counter", ("adapter",)),
    "supportkit_generated_tokens_total": ("counter", ("adapter",)),
    "supportkit_queue_size": ("gauge", ()),
    "supportkit_batch_size": ("gauge", ()),
    "supportkit_adapters_loaded": ("gauge", ()),
    "supportkit_adapter_load_duration_seconds": ("histogram", ()),
    "supportkit_adapter_load_failures_total": ("counter", ()),
    "supportkit_lora_requests_info": ("gauge", ("max_lora", "running_lora_adapters", "waiting_lora_adapters")),
    "supportkit_handoffs_total": ("counter", ("adapter",)),
    # Beyond the first list: TGI's tgi_request_generated_tokens, and adapters holding a GPU/CPU slot.
    "supportkit_request_generated_tokens": ("histogram", ("adapter",)),
    "supportkit_adapters_resident": ("gauge", ()),
    # The local engine's prefix cache (tokens looked up and found per adapter; its memory).
    "supportkit_prefix_cache_queries_total": ("counter", ("adapter",)),
    "supportkit_prefix_cache_hits_total": ("counter", ("adapter",)),
    "supportkit_prefix_cache_bytes": ("gauge", ()),
    "supportkit_prefix_cache_capacity_bytes": ("gauge", ()),
    "supportkit_prefix_cache_blocks": ("gauge", ()),
    "supportkit_prefix_cache_evicted_blocks_total": ("counter", ()),
}
# cancelled: the client went away mid-generation (the request ran, and its energy still counts).
REQUEST_OUTCOMES = ("success", "error", "rejected", "cancelled")
ENERGY_PHASES = ("prefill", "decode")


def series_names() -> dict[str, str]:
    """Every series name a scrape can hold -> the metric it belongs to (histograms give three)."""
    names = {}
    for metric, (kind, _) in SUPPORTKIT_METRICS.items():
        suffixes = ("_bucket", "_sum", "_count") if kind == "histogram" else ("",)
        names.update({metric + s: metric for s in suffixes})
    return names


class PrometheusError(RuntimeError):
    pass


class PrometheusServer:
    """`prometheus` on 127.0.0.1:<free port>, its config and data in `workdir`; scrapes every second."""

    def __init__(self, targets: list[str], workdir: Path, metrics_path: str = "/metrics",
                 binary: str = "prometheus"):
        found = shutil.which(binary)
        if found is None:
            raise PrometheusError(f"`{binary}` not found: install the Debian package `prometheus` (make system)")
        self.binary = found
        self.targets = targets
        self.workdir = Path(workdir)
        self.metrics_path = metrics_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = self.workdir / "prometheus.log"

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        targets = ", ".join(f'"{t}"' for t in self.targets)
        config = self.workdir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            f"  - job_name: kit\n    metrics_path: {self.metrics_path}\n"
            f"    static_configs:\n      - targets: [{targets}]\n"
        )
        return config

    def start(self, timeout: float = 60) -> PrometheusServer:
        config = self._write_config()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [self.binary, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self.proc.returncode}:\n{self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/-/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise PrometheusError(f"prometheus not ready after {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- HTTP API -----------------------------------------------------------------------------------

    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/<path>; returns `data`, raises PrometheusError with Prometheus's own message."""
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query: a list of {"metric": labels, "value": [ts, "str"]}."""
        return self.api("query", query=promql)["result"]

    def values(self, promql: str, by: str | None = None) -> dict[str | None, float]:
        """An instant query as {label value (or None): float}."""
        return {(r["metric"].get(by) if by else None): float(r["value"][1]) for r in self.query(promql)}

    def wait_for(self, promql: str, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 30,
                 ) -> list[dict[str, Any]]:
        """Query until `done(result)` (scrapes arrive every second); returns the last result either way."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if done(result) or time.monotonic() > deadline:
                return result
            time.sleep(0.5)

    def targets_up(self) -> dict[str, bool]:
        """scrape URL -> whether its last scrape succeeded."""
        active = self.api("targets", state="active")["activeTargets"]
        return {t["scrapeUrl"]: t["health"] == "up" for t in active}

    def wait_scraped(self, timeout: float = 30) -> None:
        """Until every target has been scraped successfully at least once."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            up = self.targets_up()
            if up and all(up.values()) and len(up) == len(self.targets):
                return
            time.sleep(0.3)
        raise PrometheusError(f"targets not scraped within {timeout}s: {self.targets_up()}")
