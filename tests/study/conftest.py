"""The mini study (tiny model, 3 configurations, a few steps, 2 questions), run once through the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def study_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`supportkit study ARGS` in a subprocess, as a user runs it."""
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("SUPPORTKIT_JUDGE_URL", None)  # the study's own server is the local judge
    return subprocess.run([sys.executable, "-m", "supportkit.cli", "study", *args], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture(scope="module")
def mini_study(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("study") / "mini"
    return out, ok(study_cli("--profile", "mini", "--out", str(out), "--no-progress"))
