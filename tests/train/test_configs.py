"""Every config file of the kit validates; sweep indexing, overrides and bad input give clear errors."""

from pathlib import Path

import pytest

from train.config import KNOWN_MODULES, MODULE_SETS, ConfigError, TrainConfig, load_config, load_sweep, read_yaml
from train.data.glossary import load_glossary

CONFIGS = Path(__file__).resolve().parents[2] / "train" / "configs"
RUN_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if p.name != "glossary.yaml")


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_every_config_file_validates(path):
    data = read_yaml(path)
    configs = load_sweep(path) if "runs" in data else [load_config(path)]
    assert configs and all(isinstance(c, TrainConfig) for c in configs)


def test_glossary_validates_with_the_study_grid_size():
    g = load_glossary(CONFIGS / "glossary.yaml")
    assert (len(g.terms), len(g.causes), len(g.contexts)) == (52, 10, 3)


def test_sweep_has_the_16_configurations_of_the_grid():
    runs = load_sweep(CONFIGS / "sweep.yaml")
    assert len(runs) == 16
    grid = {(c.r, tuple(c.target_modules)) for c in runs}
    for r in (16, 32):
        for modules in ("qv", "qkvo", "all"):
            assert (r, tuple(MODULE_SETS[modules])) in grid
    assert {len(c.target_modules) for c in runs} == {2, 4, 7}
    assert len({c.learning_rate for c in runs}) > 1 and len({c.epochs for c in runs}) > 1
    assert len({c.alpha / c.r for c in runs}) > 1


def test_each_sweep_run_has_a_comment():
    lines = (CONFIGS / "sweep.yaml").read_text().splitlines()
    runs = [i for i, line in enumerate(lines) if line.strip().startswith("- {name:")]
    assert len(runs) == 16
    assert all(lines[i - 1].strip().startswith("#") for i in runs)


def test_index_from_job_completion_index(monkeypatch):
    path = CONFIGS / "sweep.yaml"
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "5")
    assert load_config(path).name == "r32-all"
    assert load_config(path, index=2).name == "r16-all"  # an explicit --index wins


def test_overrides_are_parsed_as_yaml(tmp_path):
    cfg = load_config(CONFIGS / "sweep.yaml", 0, ["r=32", "learning_rate=1e-4", "target_modules=q_proj,k_proj"])
    assert (cfg.r, cfg.learning_rate, cfg.target_modules) == (32, 1e-4, ["q_proj", "k_proj"])


@pytest.mark.parametrize("overrides, message", [
    (["r=0"], "r"),
    (["target_modules=q_proj,bogus"], "bogus"),
    (["nonsense=1"], "nonsense"),
    (["no-equals-sign"], "key=value"),
])
def test_bad_overrides_are_clear_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "sweep.yaml", 0, overrides)


def test_sweep_without_index_and_index_out_of_range(monkeypatch):
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    with pytest.raises(ConfigError, match="--index"):
        load_config(CONFIGS / "sweep.yaml")
    with pytest.raises(ConfigError, match="out of range"):
        load_config(CONFIGS / "sweep.yaml", 16)


def test_module_names_are_the_tiny_models_names():
    from common.tiny import LORA_MODULES

    assert tuple(KNOWN_MODULES) == tuple(LORA_MODULES)


def test_cli_validate_reports_bad_file_without_traceback(tmp_path):
    from tests.train.conftest import cli

    bad = tmp_path / "bad.yaml"
    bad.write_text("runs:\n  - {name: a, r: -1}\n")
    proc = cli("train", "validate", str(bad), check=False)
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr
