"""Energy meters: the estimate on this machine, RAPL against a fake powercap tree, NVML through its seam."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from common.energy import (
    EnergyMeterError,
    EnergyReading,
    EstimateMeter,
    NvmlMeter,
    RaplMeter,
    open_meter,
    visible_gpus,
)


def burn_cpu(seconds: float) -> float:
    """Spin until this process has used `seconds` of CPU; returns the CPU seconds actually used."""
    start = time.process_time()
    x = 0
    while time.process_time() - start < seconds:
        x += sum(i * i for i in range(10_000))
    return time.process_time() - start


# --- estimate ---------------------------------------------------------------------------------------


def test_estimate_grows_with_cpu_work():
    meter = EstimateMeter(cpu_watts_per_thread=4.0)
    before = meter.read()
    used = burn_cpu(0.2)
    window = meter.read() - before
    assert window.source == "estimate" and not window.measured
    # The model is watts per thread x CPU seconds: 4 W x ~0.2 s (the read itself costs microseconds).
    assert window.components["cpu"] == pytest.approx(4.0 * used, rel=0.05)
    assert window.components["cpu"] > 0.5


IDLE = """
import time
from common.energy import EstimateMeter
meter = EstimateMeter(cpu_watts_per_thread=4.0, ram_watts_per_gb=0.375)
before = meter.read()
time.sleep(0.3)
window = meter.read() - before
print(window.components["cpu"], window.components["dram"])
"""


def test_estimate_cpu_part_stays_flat_when_idle():
    """In a process of its own: the meter reads the process-wide CPU clock, which threads that other tests left
    running in this one (engine loops, servers' readers) would advance during the sleep."""
    import subprocess
    import sys

    from common.server_process import ROOT

    out = subprocess.run([sys.executable, "-c", IDLE], capture_output=True, text=True, cwd=ROOT, timeout=120, check=True)
    cpu, dram = map(float, out.stdout.split())
    assert cpu < 0.02  # < 5 ms of CPU in a sleep
    assert dram > 0  # memory draws power while idle


def test_estimate_total_is_sum_of_components_and_joules_is_cumulative():
    meter = open_meter("cpu", source="estimate")
    burn_cpu(0.05)
    first = meter.read()
    assert first.joules == pytest.approx(sum(first.components.values()))
    burn_cpu(0.05)
    assert meter.joules() > first.joules
    assert set(first.components) == {"cpu", "dram"}


def test_estimate_rejects_negative_power():
    with pytest.raises(EnergyMeterError, match="negative"):
        EstimateMeter(cpu_watts_per_thread=-1)


def test_estimate_reads_concurrently_without_losing_or_reversing():
    meter = EstimateMeter()
    errors: list[str] = []

    def reader() -> None:
        last = -1.0
        for _ in range(300):
            value = meter.joules()
            if value < last:
                errors.append(f"{value} < {last}")
            last = value

    threads = [threading.Thread(target=reader) for _ in range(6)]
    for t in threads:
        t.start()
    burn_cpu(0.05)
    for t in threads:
        t.join()
    assert errors == []


def test_open_meter_without_powercap_falls_back_to_estimate_and_says_why(tmp_path):
    meter = open_meter("cpu", powercap_root=tmp_path / "absent")
    assert meter.source == "estimate"
    assert any(note.startswith("rapl:") for note in meter.notes)


def test_open_meter_rejects_unknown_source_and_estimates_devices_without_counter():
    with pytest.raises(EnergyMeterError, match="source"):
        open_meter("cpu", source="guess")
    with pytest.raises(EnergyMeterError, match="device"):
        open_meter("cuda:x")
    meter = open_meter("mps")
    assert meter.source == "estimate" and meter.notes == ["no energy counter for device 'mps'"]


def test_reading_difference_refuses_mixed_sources():
    a = EnergyReading(1.0, "rapl", {"cpu": 1.0})
    b = EnergyReading(2.0, "estimate", {"cpu": 2.0})
    with pytest.raises(ValueError):
        b - a


# --- rapl -------------------------------------------------------------------------------------------

MAX_UJ = 262_143_328_850


def zone(root: Path, zone_id: str, name: str, energy_uj: int, max_uj: int = MAX_UJ) -> Path:
    """One powercap zone; sub-zones ("intel-rapl:0:1") go inside their package and as a top-level link."""
    parts = zone_id.split(":")
    path = root / zone_id if len(parts) == 2 else root / ":".join(parts[:2]) / zone_id
    path.mkdir(parents=True)
    (path / "name").write_text(name + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    if len(parts) == 3:
        (root / zone_id).symlink_to(path, target_is_directory=True)
    return path


def set_energy(path: Path, energy_uj: int) -> None:
    (path / "energy_uj").write_text(f"{energy_uj}\n")


@pytest.fixture
def powercap(tmp_path) -> dict[str, Path]:
    """Laid out like /sys/class/powercap on a two-socket Intel server."""
    root = tmp_path / "powercap"
    (root / "intel-rapl").mkdir(parents=True)  # the control type, not a zone
    (root / "intel-rapl" / "enabled").write_text("1\n")
    zones = {
        "pkg0": zone(root, "intel-rapl:0", "package-0", 1_000_000),
        "core0": zone(root, "intel-rapl:0:0", "core", 500_000),
        "dram0": zone(root, "intel-rapl:0:1", "dram", 2_000_000),
        "pkg1": zone(root, "intel-rapl:1", "package-1", 3_000_000),
        "psys": zone(root, "intel-rapl:2", "psys", 9_000_000),
    }
    mmio = root / "intel-rapl-mmio:0"  # a second view of package 0 on recent Intel parts
    mmio.mkdir()
    (mmio / "name").write_text("package-0\n")
    (mmio / "energy_uj").write_text("1000000\n")
    return {"root": root, **zones}


def test_rapl_adds_packages_as_cpu_and_dram_separately(powercap):
    meter = RaplMeter(powercap["root"], poll_interval=None)
    assert meter.read().joules == 0
    set_energy(powercap["pkg0"], 1_000_000 + 2_500_000)  # +2.5 J
    set_energy(powercap["pkg1"], 3_000_000 + 1_000_000)  # +1.0 J
    set_energy(powercap["dram0"], 2_000_000 + 400_000)  # +0.4 J
    set_energy(powercap["core0"], 500_000 + 9_000_000)  # inside package 0: not added again
    set_energy(powercap["psys"], 9_000_000 + 9_000_000)  # overlaps everything: not added
    reading = meter.read()
    assert reading.source == "rapl" and reading.measured
    assert reading.components["cpu"] == pytest.approx(3.5)
    assert reading.components["dram"] == pytest.approx(0.4)
    assert reading.joules == pytest.approx(3.9)


def test_rapl_handles_wrap_around(powercap):
    meter = RaplMeter(powercap["root"], poll_interval=None)
    set_energy(powercap["pkg0"], MAX_UJ - 1_000_000)
    assert meter.read().components["cpu"] == pytest.approx((MAX_UJ - 2_000_000) / 1e6)
    set_energy(powercap["pkg0"], 3_000_000)  # wrapped: 1 J up to the top, then 3 J
    assert meter.read().components["cpu"] == pytest.approx((MAX_UJ - 2_000_000) / 1e6 + 4.0)


def test_rapl_counts_a_wrap_once_under_concurrent_reads(tmp_path):
    root = tmp_path / "powercap"
    pkg = zone(root, "intel-rapl:0", "package-0", 900_000, max_uj=1_000_000)
    meter = RaplMeter(root, poll_interval=None)
    set_energy(pkg, 100_000)  # 0.1 J to the wrap + 0.1 J after it
    threads = [threading.Thread(target=lambda: [meter.read() for _ in range(50)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert meter.joules() == pytest.approx(0.2)


def test_rapl_background_read_keeps_up_with_the_counter(tmp_path):
    root = tmp_path / "powercap"
    pkg = zone(root, "intel-rapl:0", "package-0", 0, max_uj=1_000_000)
    meter = RaplMeter(root, poll_interval=0.01)
    try:
        set_energy(pkg, 800_000)
        deadline = time.monotonic() + 10
        while meter._zones[0].last_uj != 800_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert meter._zones[0].last_uj == 800_000, "the poller never read the counter"
        set_energy(pkg, 600_000)  # a wrap that a reader coming only now would still see as one
        assert meter.joules() == pytest.approx(0.8 + 0.8)
    finally:
        meter.close()


def test_open_meter_prefers_readable_rapl(powercap):
    meter = open_meter("cpu", powercap_root=powercap["root"])
    assert meter.source == "rapl"
    meter.close()


def test_unreadable_rapl_is_not_selected(powercap):
    # Root reads any file whatever its mode, so the counter is made unreadable by being a directory.
    energy = powercap["pkg1"] / "energy_uj"
    energy.unlink()
    energy.mkdir()
    meter = open_meter("cpu", powercap_root=powercap["root"])
    assert meter.source == "estimate"
    assert any("intel-rapl:1/energy_uj" in note for note in meter.notes)
    with pytest.raises(EnergyMeterError, match="unreadable"):
        open_meter("cpu", source="rapl", powercap_root=powercap["root"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_root_only_rapl_is_not_selected(powercap):
    (powercap["pkg0"] / "energy_uj").chmod(0)
    assert open_meter("cpu", powercap_root=powercap["root"]).source == "estimate"


def test_rapl_without_package_zone_is_refused(tmp_path):
    root = tmp_path / "powercap"
    zone(root, "intel-rapl:0", "psys", 0)
    with pytest.raises(EnergyMeterError, match="no package zone"):
        RaplMeter(root, poll_interval=None)


# --- nvml -------------------------------------------------------------------------------------------


class NVMLError(Exception):
    pass


class FakeNvml:
    """The part of pynvml the meter uses, over counters a test sets (millijoules since 'driver load')."""

    def __init__(self, counters_mj: list[int], supported: bool = True, init_fails: bool = False):
        self.counters = list(counters_mj)
        self.uuids = [f"GPU-{i:08x}-aaaa-bbbb-cccc-{i:012x}" for i in range(len(counters_mj))]
        self.supported, self.init_fails = supported, init_fails
        self.log: list[str] = []
        self.initialised = 0

    def nvmlInit(self):
        if self.init_fails:
            raise NVMLError("Driver Not Loaded")
        self.initialised += 1

    def nvmlShutdown(self):
        self.initialised -= 1

    def nvmlDeviceGetCount(self):
        return len(self.counters)

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("handle", index)

    def nvmlDeviceGetUUID(self, handle):
        return self.uuids[handle[1]].encode()  # older pynvml returns bytes

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.supported:
            raise NVMLError("Not Supported")
        self.log.append(f"read{handle[1]}")
        return self.counters[handle[1]]


def test_nvml_sums_all_gpus_when_visibility_is_unset(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    nvml = FakeNvml([10_000, 20_000, 30_000])
    meter = NvmlMeter(nvml=nvml, synchronize=None)
    assert meter.device_count == 3 and meter.joules() == 0
    nvml.counters = [10_500, 21_000, 30_000]
    reading = meter.read()
    assert reading.source == "nvml" and reading.measured
    assert reading.components == {"gpu": pytest.approx(1.5)}


def test_nvml_counts_only_the_visible_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    nvml = FakeNvml([0, 0, 0])
    meter = NvmlMeter(nvml=nvml, synchronize=None)
    nvml.counters = [1_000, 50_000, 2_000]  # GPU 1 belongs to someone else
    assert meter.joules() == pytest.approx(3.0)


def test_nvml_selects_gpus_by_uuid_prefix(monkeypatch):
    nvml = FakeNvml([0, 0])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", nvml.uuids[1][:12])
    meter = NvmlMeter(nvml=nvml, synchronize=None)
    nvml.counters = [7_000, 4_000]
    assert meter.joules() == pytest.approx(4.0)


def test_nvml_synchronises_before_each_read():
    nvml = FakeNvml([0])
    meter = NvmlMeter(nvml=nvml, devices=["0"], synchronize=lambda: nvml.log.append("sync"))
    nvml.log.clear()
    meter.read()
    meter.read()
    assert nvml.log == ["sync", "read0", "sync", "read0"]


def test_nvml_close_shuts_nvml_down():
    nvml = FakeNvml([0])
    meter = NvmlMeter(nvml=nvml, devices=["0"], synchronize=None)
    assert nvml.initialised == 1
    meter.close()
    assert nvml.initialised == 0


@pytest.mark.parametrize("devices, message", [([], "no GPU visible"), (["5"], "not present"),
                                               (["MIG-1234"], "MIG"), (["GPU-ffff"], "matches 0")])
def test_nvml_refuses_devices_it_cannot_attribute(devices, message):
    nvml = FakeNvml([0, 0])
    with pytest.raises(EnergyMeterError, match=message):
        NvmlMeter(nvml=nvml, devices=devices, synchronize=None)
    assert nvml.initialised == 0


@pytest.mark.parametrize("nvml", [FakeNvml([0], supported=False), FakeNvml([0], init_fails=True)],
                         ids=["no-energy-counter", "no-driver"])
def test_cuda_without_nvml_counter_falls_back_to_estimate(nvml, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    meter = open_meter("cuda", nvml=nvml)
    assert meter.source == "estimate"
    assert any(note.startswith("nvml:") for note in meter.notes)
    with pytest.raises(EnergyMeterError, match="nvml"):
        open_meter("cuda", source="nvml", nvml=nvml)


def test_open_meter_cuda_picks_nvml(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert open_meter("cuda", nvml=FakeNvml([123])).source == "nvml"


def test_open_meter_cuda_index_is_counted_among_visible_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    nvml = FakeNvml([0, 0, 0])
    meter = open_meter("cuda:1", nvml=nvml)  # the second visible GPU is physical GPU 0
    nvml.counters = [5_000, 0, 9_000]
    assert meter.source == "nvml" and meter.joules() == pytest.approx(5.0)


@pytest.mark.parametrize("value, expected", [(None, None), ("", []), ("0,1", ["0", "1"]),
                                             ("1,-1,0", ["1"]), ("GPU-abc, 2", ["GPU-abc", "2"])])
def test_visible_gpus_follows_cuda_rules(value, expected):
    env = {} if value is None else {"CUDA_VISIBLE_DEVICES": value}
    assert visible_gpus(env) == expected


@pytest.mark.gpu
def test_real_nvml_counter_on_a_gpu():
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
    except pynvml.NVMLError as e:
        pytest.skip(f"no NVIDIA GPU here: {e}")
    meter = open_meter("cuda")
    assert meter.source == "nvml", meter.notes
    before = meter.read()
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        a = torch.randn(4096, 4096, device="cuda")
        for _ in range(200):
            a = (a @ a).tanh()
    # The counter updates every 20-100 ms; a GPU draws tens of watts even idle, so a second shows.
    deadline = time.monotonic() + 5
    while meter.read().joules - before.joules <= 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    window = meter.read() - before
    assert window.joules > 0 and window.components["gpu"] == pytest.approx(window.joules)
    print(f"nvml: {window.joules:.1f} J over {window.timestamp:.2f} s on {meter.device_count} GPU(s)")
    meter.close()
