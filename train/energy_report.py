"""The energy report of one training run: codecarbon's CSV, plus a JSON that names the source of each figure.

Two instruments wrap the run. codecarbon (offline, with a country's grid carbon intensity) gives kWh for CPU,
GPU and RAM and the CO2 estimate, and writes its CSV; it reads NVML for GPUs, RAPL for CPUs where readable,
and otherwise multiplies a TDP table by CPU load. The kit's meter (common.energy: nvml / rapl / estimate)
says which of these figures were measured by a counter; a component that no counter measured is reported
with source "estimate".
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path

J_PER_KWH = 3.6e6
CSV_NAME = "emissions.csv"
JSON_NAME = "energy.json"


def hardware(device: str) -> dict[str, str]:
    import psutil
    import torch

    hw = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "ram_gb": f"{psutil.virtual_memory().total / 2**30:.1f}",
        "device": device,
        "torch": torch.__version__,
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            hw["cpu"] = names[0]
    except OSError:
        pass
    if device == "cuda" and torch.cuda.is_available():
        hw["gpu"] = torch.cuda.get_device_name(0)
        hw["gpu_count"] = str(torch.cuda.device_count())
    return hw


class RunEnergy:
    """Start before the run's first heavy step, stop after its last; `stop()` writes CSV + JSON into `out_dir`."""

    def __init__(self, out_dir: Path, device: str, country_iso_code: str, project: str):
        self.out_dir = Path(out_dir)
        self.device = device
        self.country = country_iso_code
        self.project = project
        self.tracker = None
        self.meter = None
        self.meter_error = ""

    def start(self) -> "RunEnergy":
        from common.energy import open_meter

        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._t0 = time.monotonic()
        try:
            self.meter = open_meter(self.device)
        except Exception as exc:  # a meter is a nice-to-have; codecarbon still reports
            self.meter_error = str(exc)
        try:
            from codecarbon import OfflineEmissionsTracker

            logging.getLogger("codecarbon").setLevel(logging.ERROR)
            self.tracker = OfflineEmissionsTracker(
                country_iso_code=self.country, output_dir=str(self.out_dir), output_file=CSV_NAME,
                project_name=self.project, log_level="error", save_to_file=True, measure_power_secs=5,
            )
            self.tracker.start()
        except Exception as exc:  # codecarbon missing or refusing this machine: say so in the report
            self.tracker = None
            self.meter_error += f" codecarbon unavailable: {exc}"
        return self

    def stop(self) -> dict:
        duration = time.monotonic() - self._t0
        cc: dict = {}
        if self.tracker is not None:
            co2 = self.tracker.stop()
            d = self.tracker.final_emissions_data
            cc = {"kwh": {"cpu": d.cpu_energy, "gpu": d.gpu_energy, "ram": d.ram_energy, "total": d.energy_consumed},
                  "co2_kg": co2, "duration_s": d.duration, "country_iso_code": d.country_iso_code,
                  "cpu_model": d.cpu_model, "gpu_model": d.gpu_model, "tracking_mode": d.tracking_mode}
        meter: dict = {"error": self.meter_error.strip()} if self.meter is None else {}
        if self.meter is not None:
            reading = self.meter.read()
            self.meter.close()
            meter = {"source": reading.source, "joules": reading.joules,
                     "kwh": {k: v / J_PER_KWH for k, v in reading.components.items()},
                     "notes": list(getattr(self.meter, "notes", []) or [])}
        report = self._combine(cc, meter, duration)
        (self.out_dir / JSON_NAME).write_text(json.dumps(report, indent=2) + "\n")
        return report

    def _combine(self, cc: dict, meter: dict, duration: float) -> dict:
        """Per component: a measured counter's figure when there is one, else codecarbon's, marked as such."""
        kwh, sources = {}, {}
        measured = meter.get("source") in ("nvml", "rapl")
        parts = meter.get("kwh", {}) if measured else {}
        cc_kwh = cc.get("kwh", {})
        for comp, meter_key in (("cpu", "cpu"), ("ram", "dram"), ("gpu", "gpu")):
            if meter_key in parts:
                kwh[comp], sources[comp] = parts[meter_key], meter["source"]
            elif cc_kwh.get(comp):
                # codecarbon reads GPUs through NVML itself; CPU/RAM without RAPL are its power model
                kwh[comp], sources[comp] = cc_kwh[comp], "nvml" if comp == "gpu" and self.device == "cuda" else "estimate"
        if not kwh and meter.get("kwh"):
            kwh = dict(meter["kwh"])
            sources = {k: meter["source"] for k in kwh}
        kwh["total"] = sum(kwh.values())
        kinds = set(sources.values())
        sources["total"] = kinds.pop() if len(kinds) == 1 else ("estimate" if kinds else "unknown")
        return {
            "kwh": kwh, "sources": sources, "duration_s": round(duration, 2),
            "co2_kg": cc.get("co2_kg"), "country_iso_code": self.country,
            "hardware": hardware(self.device), "codecarbon": cc, "meter": meter, "csv": CSV_NAME if cc else None,
        }
