"""Energy of a remote engine's GPUs, read from a DCGM-exporter-style Prometheus counter.

The kit cannot meter a remote GPU itself. When an exporter's cumulative energy counter is configured
(`DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`, millijoules, NVML's counter; summed over the GPUs it lists), the
counter is read when a request starts, when its first token arrives, and when it ends; the energy of each interval is shared among the
requests that were running by their share of the tokens they received in it (equally when none received
a token; idle when none ran), so that per-request figures add up to the counter's total. A request's
energy counts as `prefill` up to the reading at its first token, as `decode` after. A failed read makes the figures of the requests running across it unknown: never a
guessed number.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger("supportkit.engine.remote")


def parse_counter(text: str, metric: str) -> float | None:
    """The sum of every series of `metric` in a Prometheus text page (None when absent)."""
    names = {metric, metric + "_total"}  # the parser names counter samples `<name>_total`
    values = [s.value for family in text_string_to_metric_families(text) for s in family.samples if s.name in names]
    return sum(values) if values else None


class CounterEnergy:
    source = "nvml"  # the exporter republishes NVML's cumulative energy counter

    def __init__(self, url: str, metric: str, timeout_s: float = 2.0):
        self.url, self.metric = url, metric
        self.client = httpx.AsyncClient(timeout=timeout_s)
        self.idle_joules = 0.0
        self._lock = asyncio.Lock()
        self._last: float | None = None
        self._tokens: dict[str, int] = {}
        self._joules: dict[str, dict[str, float] | None] = {}  # request -> joules by phase
        self._decoding: set[str] = set()  # requests that had a token before the current interval

    async def read(self) -> float | None:
        try:
            r = await self.client.get(self.url)
            r.raise_for_status()
            value = parse_counter(r.text, self.metric)
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("energy counter %s unreadable: %s", self.url, exc)
            return None
        if value is None:
            log.warning("energy counter %s has no %s series", self.url, self.metric)
            return None
        return value / 1000.0  # mJ -> J

    async def _settle(self) -> None:
        """Share the energy since the last reading among the running requests."""
        now = await self.read()
        last, self._last = self._last, now
        if now is None or last is None or now < last:  # unreadable, first reading, or the counter restarted
            for rid in self._joules:
                self._joules[rid] = None
        else:
            spent = now - last
            running = list(self._joules)
            total = sum(self._tokens.values())
            if not running:
                self.idle_joules += spent
            for rid in running:
                if self._joules[rid] is not None:
                    share = self._tokens[rid] / total if total else 1 / len(running)
                    self._joules[rid]["decode" if rid in self._decoding else "prefill"] += spent * share
        self._decoding.update(rid for rid, n in self._tokens.items() if n)
        self._tokens = dict.fromkeys(self._tokens, 0)

    async def begin(self, rid: str) -> None:
        async with self._lock:
            await self._settle()
            self._tokens[rid] = 0
            self._joules[rid] = {"prefill": 0.0, "decode": 0.0} if self._last is not None else None

    async def first_token(self, rid: str) -> None:
        """A reading when a request's first token arrives, so that its prefill and decode are apart."""
        async with self._lock:
            await self._settle()

    def token(self, rid: str) -> None:
        if rid in self._tokens:
            self._tokens[rid] += 1

    async def end(self, rid: str) -> dict[str, float] | None:
        """The request's joules by phase, or None when the counter could not be read throughout."""
        async with self._lock:
            await self._settle()
            joules = self._joules.pop(rid, None)
            self.forget(rid)
            return joules

    def forget(self, rid: str) -> None:
        """A request that ended without settling (cancelled): its share stays with the others."""
        self._tokens.pop(rid, None)
        self._joules.pop(rid, None)
        self._decoding.discard(rid)

    async def aclose(self) -> None:
        await self.client.aclose()
