"""The CPU's bf16 capability and its description come from /proc/cpuinfo's flags."""

import os

import pytest

import common.cpu as cpu

EPYC_AVX2 = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx avx2 fma\n"
XEON_BF16 = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16\n"


@pytest.fixture
def cpuinfo(monkeypatch):
    def use(text):
        monkeypatch.setattr(cpu, "_cpuinfo", lambda: text)
        cpu.native_bf16.cache_clear()
        cpu.describe.cache_clear()
    yield use
    cpu.native_bf16.cache_clear()
    cpu.describe.cache_clear()


def test_bf16_only_with_bf16_instructions(cpuinfo):
    cpuinfo(EPYC_AVX2)
    assert cpu.native_bf16() is False
    assert cpu.describe() == f"AMD EPYC 7B13, {os.cpu_count()} cores, AVX2, no bf16 instructions"
    cpuinfo(XEON_BF16)
    assert cpu.native_bf16() is True
    assert cpu.describe().endswith("cores, AVX512, bf16 instructions")


def test_no_cpuinfo_is_no_bf16(cpuinfo):
    cpuinfo(None)
    assert cpu.native_bf16() is False
    assert f"{os.cpu_count()} cores" in cpu.describe()
