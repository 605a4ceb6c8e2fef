"""Fixtures of the training tests: a small offline dataset and a tiny-model run config writer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict | None = None, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """`supportkit ARGS` in a subprocess, as a user runs it."""
    import os

    proc = subprocess.run([sys.executable, "-m", "supportkit.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"supportkit {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def offline_dataset(tmp_path_factory) -> Path:
    """120 scenarios x 2 conversations, composed offline, through the CLI."""
    out = tmp_path_factory.mktemp("data") / "offline"
    cli("data", "generate", "--offline", "--out", str(out), "--scenarios", "120", "--per-scenario", "2")
    return out


@pytest.fixture
def tiny_config(tmp_path, tiny_model, offline_dataset):
    """Write a run config for the tiny model on the offline dataset; keyword arguments override fields."""

    def write(**fields) -> Path:
        cfg = {"name": "tiny-run", "model": str(tiny_model), "data": str(offline_dataset), "max_steps": 4,
               "batch_size": 4, "eval_steps": 2, "save_steps": 2, "logging_steps": 1, "max_val_examples": 8,
               "max_length": 2048, "r": 8, "alpha": 16, "target_modules": "qkvo", "learning_rate": 1e-2, **fields}
        path = tmp_path / f"{cfg['name']}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    return write
