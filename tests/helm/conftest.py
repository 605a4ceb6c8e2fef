"""Chart tooling (helm, kubernetes-validate, checkov) from scripts/install-tools.sh, and a renderer."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "supportkit"
CI_VALUES = CHART / "ci"
TOOLS = Path(os.environ.get("SUPPORTKIT_TOOLS", ROOT / ".tools"))
# Kubernetes minor versions the chart promises to render and validate for (kubeVersion >=1.27 in Chart.yaml).
KUBE_VERSIONS = ["1.29.0", "1.31.0", "1.33.0", "1.35.0"]
MONITORING_API = "monitoring.coreos.com/v1"


@pytest.fixture(scope="session")
def tools() -> Path:
    """Install (or find) helm, kubectl and the linters; fast when already installed."""
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "install-tools.sh")], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"scripts/install-tools.sh failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return TOOLS


def run(cmd: list, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=ROOT, **kw)


class Chart:
    def __init__(self, tools: Path):
        self.helm = tools / "bin" / "helm"
        self.venv_bin = tools / "venv" / "bin"

    def template_text(self, *values: str, kube: str = "1.33.0", monitoring_api: bool = False,
                      sets: tuple[str, ...] = (), namespace: str = "support") -> str:
        cmd = [self.helm, "template", "kit", CHART, "--namespace", namespace, "--kube-version", kube]
        for v in values:
            cmd += ["-f", CI_VALUES / f"{v}-values.yaml"]
        for s in sets:
            cmd += ["--set", s]
        if monitoring_api:
            cmd += ["--api-versions", MONITORING_API]
        proc = run(cmd)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def render(self, *values: str, **kw) -> list[dict]:
        return [d for d in yaml.safe_load_all(self.template_text(*values, **kw)) if d]

    def lint(self, *values: str, sets: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        cmd = [self.helm, "lint", "--strict", CHART]
        for v in values:
            cmd += ["-f", CI_VALUES / f"{v}-values.yaml"]
        for s in sets:
            cmd += ["--set", s]
        return run(cmd)


@pytest.fixture(scope="session")
def chart(tools) -> Chart:
    return Chart(tools)


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str, name_suffix: str = "") -> dict:
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {[d['metadata']['name'] for d in found]}"
    return found[0]
