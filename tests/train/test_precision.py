"""Training precision follows the CPU: bf16 only where the CPU computes it natively."""

import pytest

import common.cpu
from train.config import TrainConfig
from train.recipe import RecipeError, _use_bf16


@pytest.fixture
def cpu_bf16(monkeypatch):
    def set_native(value: bool):
        monkeypatch.setattr(common.cpu, "native_bf16", lambda: value)
    return set_native


def test_auto_picks_bf16_only_on_a_cpu_with_bf16_instructions(cpu_bf16):
    cfg = TrainConfig(name="p", dtype="auto")
    cpu_bf16(True)
    assert _use_bf16(cfg, "cpu") is True
    cpu_bf16(False)
    assert _use_bf16(cfg, "cpu") is False and _use_bf16(cfg, "cuda") is True


def test_bf16_on_a_cpu_without_it_is_refused_with_what_to_do(cpu_bf16):
    cpu_bf16(False)
    with pytest.raises(RecipeError, match="dtype=auto or dtype=float32"):
        _use_bf16(TrainConfig(name="p", dtype="bfloat16"), "cpu")
    assert _use_bf16(TrainConfig(name="p", dtype="float32"), "cpu") is False

