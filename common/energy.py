"""Energy meters: one interface, several honest sources. Every figure names the source it came from.

- ``nvml``: NVIDIA's cumulative energy counter for the GPUs this process uses (measured).
- ``rapl``: the CPU package and DRAM counters under /sys/class/powercap (measured).
- ``estimate``: a power model x this process's measured CPU time and resident memory (codecarbon's
  approach where no counter exists). Never presented as a measurement.

A meter is cumulative from the moment it is opened: ``joules()`` is the total, ``read()`` gives the
total with its components (``cpu``, ``dram``, ``gpu``) and the source. Reads are thread-safe.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

MEASURED_SOURCES = ("nvml", "rapl")
SOURCES = ("nvml", "rapl", "estimate")
POWERCAP_ROOT = Path("/sys/class/powercap")


class EnergyMeterError(RuntimeError):
    """A source that cannot be used here; the message says why."""


@dataclass(frozen=True)
class EnergyReading:
    """Joules since the meter was opened, split by component, with the source of every figure."""

    joules: float
    source: str
    components: Mapping[str, float] = field(default_factory=dict)
    timestamp: float = 0.0  # time.monotonic() of the read

    @property
    def measured(self) -> bool:
        return self.source in MEASURED_SOURCES

    def __sub__(self, earlier: EnergyReading) -> EnergyReading:
        """The energy of the window between two readings of the same meter."""
        if earlier.source != self.source:
            raise ValueError(f"readings of different sources: {self.source} - {earlier.source}")
        parts = {k: v - earlier.components.get(k, 0.0) for k, v in self.components.items()}
        return EnergyReading(self.joules - earlier.joules, self.source, MappingProxyType(parts),
                             self.timestamp - earlier.timestamp)


class EnergyMeter(ABC):
    """A cumulative energy counter in joules since the meter was opened."""

    source: str = "unknown"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[str, float] = {}
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()
        # Some sources explain why better ones were passed over (open_meter fills this).
        self.notes: list[str] = []

    @abstractmethod
    def _increments(self) -> dict[str, float]:
        """Joules per component since the previous call (the first call sets the baseline)."""

    def read(self) -> EnergyReading:
        with self._lock:
            for name, joules in self._increments().items():
                # Counters never run backwards; a negative step is a reset, not negative energy.
                self._totals[name] = self._totals.get(name, 0.0) + max(joules, 0.0)
            parts = MappingProxyType(dict(self._totals))
            return EnergyReading(sum(parts.values()), self.source, parts, time.monotonic())

    def joules(self) -> float:
        return self.read().joules

    def _start_poller(self, interval: float | None) -> None:
        """Read in the background so that a wrapping counter is never left unread for a whole period."""
        if not interval:
            return

        def poll() -> None:
            while not self._stop.wait(interval):
                try:
                    self.read()
                except Exception:  # a failing read is seen by the next caller of read()
                    pass

        self._poller = threading.Thread(target=poll, name=f"energy-{self.source}", daemon=True)
        self._poller.start()

    def close(self) -> None:
        self._stop.set()

    def __enter__(self) -> EnergyMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} source={self.source}>"


# --- estimate ---------------------------------------------------------------------------------------

# codecarbon's figures when the CPU model is unknown: 4 W per hardware thread at full load, and the
# classic 3 W per 8 GB of memory; both can be set by whoever knows the machine better.
DEFAULT_CPU_WATTS_PER_THREAD = 4.0
DEFAULT_RAM_WATTS_PER_GB = 3.0 / 8.0


class EstimateMeter(EnergyMeter):
    """CPU: watts per thread x CPU seconds this process used. RAM: watts per GB x resident GB x time.

    An idle process uses no CPU time, so its CPU figure stays flat; its memory still counts.
    """

    source = "estimate"

    def __init__(self, cpu_watts_per_thread: float = DEFAULT_CPU_WATTS_PER_THREAD,
                 ram_watts_per_gb: float = DEFAULT_RAM_WATTS_PER_GB):
        import psutil

        super().__init__()
        if cpu_watts_per_thread < 0 or ram_watts_per_gb < 0:
            raise EnergyMeterError("estimate: power figures must not be negative")
        self.cpu_watts_per_thread = cpu_watts_per_thread
        self.ram_watts_per_gb = ram_watts_per_gb
        self._proc = psutil.Process()
        self._last: tuple[float, float, float] | None = None
        self.read()

    def _sample(self) -> tuple[float, float, float]:
        # process_time() is user+system CPU of all threads at nanosecond resolution (psutil's
        # cpu_times() counts 10 ms ticks, too coarse for one decode step).
        return time.monotonic(), time.process_time(), self._proc.memory_info().rss / 1e9

    def _increments(self) -> dict[str, float]:
        now, cpu_s, rss_gb = self._sample()
        last, self._last = self._last, (now, cpu_s, rss_gb)
        if last is None:
            return {"cpu": 0.0, "dram": 0.0}
        t0, cpu0, rss0 = last
        return {
            "cpu": (cpu_s - cpu0) * self.cpu_watts_per_thread,
            # Mean of the two resident sizes over the interval: a trapezoid, not a guess at the peak.
            "dram": (rss0 + rss_gb) / 2 * self.ram_watts_per_gb * (now - t0),
        }


# --- rapl -------------------------------------------------------------------------------------------

_ZONE = re.compile(r"^intel-rapl:\d+(:\d+)?$")


@dataclass
class _RaplZone:
    path: Path
    component: str  # "cpu" for package zones, "dram" for DRAM zones
    max_range_uj: int
    last_uj: int


class RaplMeter(EnergyMeter):
    """Package zones (``cpu``) and DRAM zones (``dram``) of /sys/class/powercap, in microjoules.

    Core/uncore sub-zones are parts of their package and psys overlaps everything, so neither is
    added. A counter wraps at ``max_energy_range_uj``; one wrap between reads is accounted for, and
    a background read every ``poll_interval`` seconds keeps reads closer together than a wrap.
    """

    source = "rapl"

    def __init__(self, root: str | Path = POWERCAP_ROOT, poll_interval: float | None = 10.0):
        super().__init__()
        self.root = Path(root)
        self._zones = self._discover()
        self.read()
        self._start_poller(poll_interval)

    def _discover(self) -> list[_RaplZone]:
        if not self.root.is_dir():
            raise EnergyMeterError(f"rapl: {self.root} does not exist")
        candidates: dict[str, Path] = {}
        for entry in sorted(self.root.iterdir()):
            if _ZONE.match(entry.name):
                candidates.setdefault(entry.name, entry)
                # Sub-zones are listed inside their package too (and at the top level on real sysfs).
                for sub in sorted(entry.iterdir()) if entry.is_dir() else ():
                    if _ZONE.match(sub.name):
                        candidates.setdefault(sub.name, sub)
        zones, problems = [], []
        for name, path in candidates.items():
            try:
                kind = (path / "name").read_text().strip()
            except OSError:
                continue
            component = "cpu" if kind.startswith("package") else "dram" if kind == "dram" else None
            if component is None:
                continue
            try:
                raw = int((path / "energy_uj").read_text())
                max_range = int((path / "max_energy_range_uj").read_text())
            except (OSError, ValueError) as e:
                problems.append(f"{path / 'energy_uj'}: {e.strerror if isinstance(e, OSError) else e}")
                continue
            zones.append(_RaplZone(path, component, max_range, raw))
        if problems:
            # A partial view would under-count without saying so: all readable or not used at all.
            raise EnergyMeterError("rapl: unreadable counters (often root-only): " + "; ".join(problems))
        if not any(z.component == "cpu" for z in zones):
            raise EnergyMeterError(f"rapl: no package zone under {self.root}")
        return zones

    def _increments(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for zone in self._zones:
            raw = int((zone.path / "energy_uj").read_text())
            delta = raw - zone.last_uj
            if delta < 0:  # wrapped past max_energy_range_uj
                delta += zone.max_range_uj
            zone.last_uj = raw
            out[zone.component] = out.get(zone.component, 0.0) + delta / 1e6
        return out


# --- nvml -------------------------------------------------------------------------------------------


def visible_gpus(env: Mapping[str, str] | None = None) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as a list of entries (indices or UUIDs); None when unset (all GPUs)."""
    value = (os.environ if env is None else env).get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    entries = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            break
        if item.lstrip("-").isdigit() and int(item) < 0:  # CUDA stops at the first invalid entry
            break
        entries.append(item)
    return entries


def _cuda_synchronize() -> None:
    """Wait for queued GPU work, so the counter covers it; only if this process already uses CUDA."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        for i in range(torch.cuda.device_count()):
            torch.cuda.synchronize(i)


class NvmlMeter(EnergyMeter):
    """Sum of ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since driver load) over this process's GPUs.

    ``nvml`` is the pynvml module or anything with the same functions (the seam tests drive);
    ``devices`` overrides CUDA_VISIBLE_DEVICES; ``synchronize`` runs before every read.
    """

    source = "nvml"

    def __init__(self, nvml: Any = None, devices: list[str] | None = None,
                 synchronize: Callable[[], None] | None = _cuda_synchronize):
        super().__init__()
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError as e:
                raise EnergyMeterError("nvml: nvidia-ml-py is not installed") from e
        self._nvml = nvml
        self._synchronize = synchronize
        try:
            nvml.nvmlInit()
        except Exception as e:
            raise EnergyMeterError(f"nvml: cannot initialise NVML ({e})") from e
        try:
            self._handles = self._select(devices if devices is not None else visible_gpus())
            self._last = [self._counter_mj(h) for h in self._handles]
        except Exception:
            nvml.nvmlShutdown()
            raise
        self.read()

    def _select(self, entries: list[str] | None) -> list[Any]:
        nvml = self._nvml
        count = nvml.nvmlDeviceGetCount()
        if entries is None:
            entries = [str(i) for i in range(count)]
        handles = []
        for entry in entries:
            if entry.startswith("MIG-"):
                raise EnergyMeterError("nvml: MIG instances share their GPU's energy counter; not attributable")
            if entry.isdigit():
                if int(entry) >= count:
                    raise EnergyMeterError(f"nvml: GPU {entry} not present ({count} visible to NVML)")
                handles.append(nvml.nvmlDeviceGetHandleByIndex(int(entry)))
                continue
            # CUDA accepts any unique UUID prefix ("GPU-8932f937").
            matches = [h for h in (nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count))
                       if _text(nvml.nvmlDeviceGetUUID(h)).startswith(entry)]
            if len(matches) != 1:
                raise EnergyMeterError(f"nvml: CUDA_VISIBLE_DEVICES entry {entry!r} matches {len(matches)} GPUs")
            handles.append(matches[0])
        if not handles:
            raise EnergyMeterError("nvml: no GPU visible to this process")
        return handles

    def _counter_mj(self, handle: Any) -> int:
        try:
            return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        except Exception as e:  # NotSupported before Volta, or the driver gone
            raise EnergyMeterError(f"nvml: energy counter unavailable ({e})") from e

    def _increments(self) -> dict[str, float]:
        if self._synchronize is not None:
            self._synchronize()
        now = [self._counter_mj(h) for h in self._handles]
        delta_mj = sum(n - last for n, last in zip(now, self._last))
        self._last = now
        return {"gpu": delta_mj / 1000.0}

    @property
    def device_count(self) -> int:
        return len(self._handles)

    def close(self) -> None:
        super().close()
        try:
            self._nvml.nvmlShutdown()
        except Exception:
            pass


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


# --- choosing a source ------------------------------------------------------------------------------


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def open_meter(device: str = "cpu", *, source: str | None = None, powercap_root: str | Path = POWERCAP_ROOT,
               nvml: Any = None, cpu_watts_per_thread: float = DEFAULT_CPU_WATTS_PER_THREAD,
               ram_watts_per_gb: float = DEFAULT_RAM_WATTS_PER_GB) -> EnergyMeter:
    """The best meter for ``device``: nvml for "cuda" / "cuda:N", rapl for "cpu", else an estimate.

    "auto" means cuda when torch sees a GPU. ``source`` forces one source ("nvml", "rapl", "estimate")
    and raises EnergyMeterError if it cannot be used. Otherwise the reasons each better source was
    passed over are kept in ``meter.notes``.
    """
    if source is not None and source not in SOURCES:
        raise EnergyMeterError(f"unknown energy source {source!r}: use one of {', '.join(SOURCES)}")
    if device == "auto":
        device = "cuda" if _cuda_available() else "cpu"
    kind, _, index = device.partition(":")
    gpus: list[str] | None = None
    if kind == "cuda" and index:
        if not index.isdigit():
            raise EnergyMeterError(f"unknown device {device!r}")
        # "cuda:1" is the second *visible* GPU, which CUDA_VISIBLE_DEVICES may name differently.
        visible = visible_gpus()
        gpus = [visible[int(index)] if visible is not None and int(index) < len(visible) else index]

    factories: dict[str, Callable[[], EnergyMeter]] = {
        "nvml": lambda: NvmlMeter(nvml=nvml, devices=gpus),
        "rapl": lambda: RaplMeter(powercap_root),
        "estimate": lambda: EstimateMeter(cpu_watts_per_thread, ram_watts_per_gb),
    }
    if source is not None:
        return factories[source]()
    # On a GPU the work, and the energy, is the GPU's: the host's share is not added to it.
    order = {"cuda": ["nvml", "estimate"], "cpu": ["rapl", "estimate"]}.get(kind, ["estimate"])
    notes: list[str] = [] if kind in ("cuda", "cpu") else [f"no energy counter for device {device!r}"]
    for name in order:
        try:
            meter = factories[name]()
        except EnergyMeterError as e:
            notes.append(str(e))
            continue
        meter.notes = notes
        return meter
    raise AssertionError("the estimate is always available")  # pragma: no cover
