"""What this CPU computes natively: training and serving pick their default precision from it, and benchmarks
record it beside their figures."""

from __future__ import annotations

import os
import platform
from functools import cache
from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpuinfo() -> str | None:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return None


@cache
def native_bf16() -> bool:
    """Whether the CPU has bf16 instructions (AVX512-BF16 or AMX). With them bf16 is 1.5-2.7x faster than
    fp32 here; without them (an AVX2 CPU, or AVX512 without BF16) bf16 is emulated: a training step of the
    demo adapter took 955 s in bf16 against 20 s in fp32 on a 2-core AVX2 EPYC. Unknown (no /proc/cpuinfo):
    False, the safe answer."""
    flags = set((_cpuinfo() or "").split())
    return any(f in flags for f in BF16_FLAGS)


@cache
def describe() -> str:
    """The CPU in a benchmark's words: model, cores, widest vector unit, bf16 or not. Figures from different
    CPUs are not comparable (bf16 serving and training are 1.5-2.7x faster with bf16 instructions)."""
    info = _cpuinfo()
    if info is None:
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")),
                platform.machine())
    flags = set(info.split())
    vector = "AVX512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    bf16 = "bf16 instructions" if native_bf16() else "no bf16 instructions"
    return f"{name}, {os.cpu_count()} cores, {vector}, {bf16}"
