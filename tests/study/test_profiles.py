"""The shipped profiles load and resolve to the sweep's configurations; bad input is a one-line error."""

from __future__ import annotations

from pathlib import Path

import pytest

from supportkit.study_config import Layout, StudyError, load_profile
from supportkit.study_steps import sweep_configs
from tests.study.conftest import study_cli


@pytest.mark.parametrize("name, runs", [("laptop", 16), ("gpu", 16), ("mini", 3)])
def test_profiles_resolve_to_sweep_runs(name, runs, tmp_path):
    profile = load_profile(name)
    assert profile.eval.panel_path().is_file()
    configs = sweep_configs(profile, Layout(tmp_path), Path("/models/base"))
    assert len(configs) == runs
    names = [cfg.name for _, cfg, _ in configs]
    assert len(set(names)) == runs
    for _, cfg, overrides in configs:
        assert cfg.model == "/models/base" and cfg.data == str(tmp_path / "data")
        assert f"data={tmp_path / 'data'}" in overrides


def test_lr_scale_keeps_the_runs_ratios(tmp_path):
    laptop = {cfg.name: cfg for _, cfg, _ in sweep_configs(load_profile("laptop"), Layout(tmp_path), Path("/m"))}
    gpu = {cfg.name: cfg for _, cfg, _ in sweep_configs(load_profile("gpu"), Layout(tmp_path), Path("/m"))}
    scale = load_profile("laptop").sweep.lr_scale
    for name, cfg in laptop.items():
        assert cfg.learning_rate == pytest.approx(gpu[name].learning_rate * scale)
    assert laptop["r16-qv-lr4e-4"].learning_rate == pytest.approx(4 * laptop["r16-qv-lr1e-4"].learning_rate)


def test_unknown_profile_is_an_error(tmp_path):
    with pytest.raises(StudyError, match="no profile 'nope'"):
        load_profile("nope")
    bad = tmp_path / "profiles.yaml"
    bad.write_text("x:\n  sweep: {lr_scale: -1}\n")
    with pytest.raises(StudyError, match="sweep.lr_scale"):
        load_profile("x", bad)


def test_cli_bad_input_is_one_line_without_traceback(tmp_path):
    proc = study_cli("--profile", "nope", "--out", str(tmp_path / "o"))
    assert proc.returncode == 1 and "no profile 'nope'" in proc.stderr and "Traceback" not in proc.stderr
    proc = study_cli("--profile", "mini", "--out", str(tmp_path / "o"), "--panel", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 1 and "panel file not found" in proc.stderr and "Traceback" not in proc.stderr


def test_only_selects_runs(tmp_path):
    from supportkit.study import parse_indices

    assert parse_indices("0-2,5,1") == [0, 1, 2, 5]
    with pytest.raises(StudyError, match="expected indices"):
        parse_indices("a-b")
    profile = load_profile("laptop")
    profile.sweep.only = [16]
    with pytest.raises(StudyError, match="out of range"):
        sweep_configs(profile, Layout(tmp_path), Path("/m"))


@pytest.mark.parametrize("name", ["laptop", "mini"])
def test_cpu_profiles_train_on_a_cpu_without_bf16_instructions(name, tmp_path, monkeypatch):
    """An explicit bfloat16 is refused on such CPUs (emulated: ~50x slower); the CPU profiles must not ask for it."""
    from common import cpu
    from train import recipe

    monkeypatch.setattr(cpu, "native_bf16", lambda: False)
    for _, cfg, _ in sweep_configs(load_profile(name), Layout(tmp_path), Path("/m")):
        assert recipe._use_bf16(cfg, "cpu") is False, cfg.name
