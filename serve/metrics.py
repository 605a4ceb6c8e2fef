"""Prometheus metrics: requests, latency, tokens, queue and batch, adapters, and energy by adapter and phase.

Names follow Prometheus conventions (base units, `_total` counters) under the `supportkit_` prefix. The
`adapter` label is capped: the first `max_adapters` adapters seen get their own label, later ones share
`other`, so that a store with thousands of adapters cannot blow up the time-series count.
"""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from serve.engine.interface import Engine

LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
PER_TOKEN = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)
TOKENS = (1, 4, 16, 64, 128, 256, 512, 1024, 2048, 4096)
RETRIEVAL = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)
JOULES = (0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100, 300, 1000)


class Metrics:
    def __init__(self, engine: Engine, max_adapters: int = 20):
        self.engine = engine
        self.max_adapters = max_adapters
        self._labels: set[str] = set()
        self._lock = threading.Lock()
        self.registry = r = CollectorRegistry()
        a = ["adapter"]
        self.requests = Counter("supportkit_requests", "Requests by adapter and outcome", ["adapter", "outcome"], registry=r)
        self.duration = Histogram("supportkit_request_duration_seconds", "End-to-end request time", a, buckets=LATENCY, registry=r)
        self.ttft = Histogram("supportkit_time_to_first_token_seconds", "Arrival to first token", a, buckets=LATENCY, registry=r)
        self.tpot = Histogram("supportkit_time_per_output_token_seconds", "Decode time per output token", a, buckets=PER_TOKEN, registry=r)
        self.queue = Histogram("supportkit_queue_duration_seconds", "Time waiting before admission", a, buckets=LATENCY, registry=r)
        self.input_tokens = Counter("supportkit_input_tokens", "Prompt tokens processed", a, registry=r)
        self.generated_tokens = Counter("supportkit_generated_tokens", "Tokens generated", a, registry=r)
        # As vLLM's prefix_cache_queries / prefix_cache_hits, in tokens: hit rate = hits / queries, per adapter.
        self.prefix_queries = Counter("supportkit_prefix_cache_queries", "Prompt tokens looked up in the prefix cache",
                                      a, registry=r)
        self.prefix_hits = Counter("supportkit_prefix_cache_hits", "Prompt tokens served from the prefix cache "
                                   "(not recomputed)", a, registry=r)
        self.generated_hist = Histogram("supportkit_request_generated_tokens", "Tokens generated per request", a, buckets=TOKENS, registry=r)
        self.energy_hist = Histogram("supportkit_request_energy_joules", "Energy attributed to each request", a, buckets=JOULES, registry=r)
        self.energy = Counter("supportkit_energy_joules", "Energy attributed to requests", ["adapter", "phase", "source"], registry=r)
        self.load_duration = Histogram("supportkit_adapter_load_duration_seconds", "Adapter read + validation time", buckets=LATENCY, registry=r)
        self.load_failures = Counter("supportkit_adapter_load_failures", "Adapters refused at load", registry=r)
        self.handoffs = Counter("supportkit_handoffs", "Turns flagged for hand-off to a human", a, registry=r)
        self.retrieval_duration = Histogram("supportkit_retrieval_duration_seconds",
                                            "Knowledge-base retrieval per grounded request", a, buckets=RETRIEVAL, registry=r)
        r.register(_EngineCollector(engine))

    def label(self, adapter: str | None) -> str:
        name = adapter or self.engine.name
        with self._lock:
            if name in self._labels:
                return name
            if len(self._labels) < self.max_adapters:
                self._labels.add(name)
                return name
        return "other"

    def finished(self, result) -> None:
        """Called by the engine for every request that ran (completed or cancelled)."""
        label = self.label(result.adapter)
        t = result.timings
        outcome = "cancelled" if result.finish_reason == "cancelled" else "success"
        self.requests.labels(label, outcome).inc()
        self.duration.labels(label).observe(t.total_s)
        self.queue.labels(label).observe(t.queue_s)
        if result.tokens:
            self.ttft.labels(label).observe(t.first_token_s)
        if len(result.tokens) > 1:
            self.tpot.labels(label).observe((t.total_s - t.first_token_s) / (len(result.tokens) - 1))
        self.input_tokens.labels(label).inc(result.prompt_tokens)
        if result.cached_tokens is not None:
            self.prefix_queries.labels(label).inc(result.prompt_tokens)
            self.prefix_hits.labels(label).inc(result.cached_tokens)
        self.generated_tokens.labels(label).inc(len(result.tokens))
        self.generated_hist.labels(label).observe(len(result.tokens))
        if result.energy_joules is not None:
            self.energy_hist.labels(label).observe(result.energy_joules)
            for phase, joules in result.energy_by_phase.items():
                self.energy.labels(label, phase, result.energy_source).inc(joules)

    def failed(self, adapter: str | None, outcome: str) -> None:
        """A request refused before it ran (`rejected`: bad input, unknown adapter, overload) or that failed (`error`)."""
        self.requests.labels(self.label(adapter) if adapter else "none", outcome).inc()

    def handoff(self, adapter: str | None) -> None:
        self.handoffs.labels(self.label(adapter)).inc()

    def retrieval(self, adapter: str | None, seconds: float) -> None:
        self.retrieval_duration.labels(self.label(adapter)).observe(seconds)

    def adapter_loaded(self, seconds: float) -> None:
        self.load_duration.observe(seconds)

    def adapter_load_failed(self) -> None:
        self.load_failures.inc()


class _EngineCollector:
    """Gauges read from the engine at scrape time: queue, batch, adapters, prefix cache, idle energy."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def collect(self):
        s = self.engine.stats()
        yield GaugeMetricFamily("supportkit_queue_size", "Requests waiting for admission", value=s["queue_size"])
        yield GaugeMetricFamily("supportkit_batch_size", "Requests in the running batch", value=s["batch_size"])
        yield GaugeMetricFamily("supportkit_adapters_loaded", "Adapters loaded", value=len(self.engine.adapters()))
        yield GaugeMetricFamily("supportkit_adapters_resident", "Adapters in a slot", value=len(s["resident_adapters"]))
        if prefix := s.get("prefix_cache"):
            yield GaugeMetricFamily("supportkit_prefix_cache_bytes", "Memory held by the prefix cache", value=prefix.bytes)
            yield GaugeMetricFamily("supportkit_prefix_cache_capacity_bytes", "The prefix cache's memory bound",
                                    value=prefix.capacity_bytes)
            yield GaugeMetricFamily("supportkit_prefix_cache_blocks", "Blocks in the prefix cache", value=prefix.blocks)
            evicted = CounterMetricFamily("supportkit_prefix_cache_evicted_blocks",
                                          "Blocks dropped to stay within the memory bound")
            evicted.add_metric([], prefix.evicted_blocks)
            yield evicted
        idle = CounterMetricFamily("supportkit_idle_energy_joules", "Energy spent while no request ran", labels=["source"])
        idle.add_metric([s["energy_source"]], s["idle_joules"])
        yield idle
        info = GaugeMetricFamily(
            "supportkit_lora_requests_info", "Running and waiting adapters (as vLLM's lora_requests_info)",
            labels=["max_lora", "running_lora_adapters", "waiting_lora_adapters"],
        )
        info.add_metric(
            [str(s["max_adapters"]), ",".join(s["running_adapters"]), ",".join(s["waiting_adapters"])], time.time()
        )
        yield info
