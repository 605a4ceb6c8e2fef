"""checkov on the chart (its helm runner) and on manifests rendered for every value set: no failed check,
and every skipped check has a written reason in .checkov.yaml."""

import json
import os
import re

import pytest

from tests.helm.conftest import CHART, ROOT, run

CONFIG = ROOT / ".checkov.yaml"


def skips() -> dict[str, str]:
    out = {}
    for line in CONFIG.read_text().splitlines():
        m = re.match(r"^\s*-\s*(CKV\w+)\s*(?:#\s*(.*))?$", line)
        if m:
            out[m.group(1)] = (m.group(2) or "").strip()
    return out


def test_every_skip_has_a_reason():
    found = skips()
    assert found, "no skip-check entries parsed"
    for check, reason in found.items():
        assert len(reason) > 20, f"{check} is skipped without a written reason"


def checkov(tools, target, framework):
    env = {**os.environ, "PATH": f"{tools / 'bin'}:{os.environ['PATH']}"}
    proc = run([tools / "venv" / "bin" / "checkov", "--config-file", CONFIG, "-d", target,
                "--framework", framework, "-o", "json"], env=env, timeout=300)
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    return proc, reports


@pytest.mark.parametrize("framework", ["helm", "kubernetes"])
def test_checkov_passes(chart, tools, tmp_path, framework):
    if framework == "helm":
        target = CHART
    else:
        for values in ((), ("gpu",), ("full",), ("monitoring-off",)):
            name = "+".join(values) or "default"
            (tmp_path / f"{name}.yaml").write_text(chart.template_text(*values, monitoring_api=True))
        target = tmp_path
    proc, reports = checkov(tools, target, framework)
    failed = [(c["check_id"], c["resource"]) for r in reports for c in r.get("results", {}).get("failed_checks", [])]
    passed = sum(r["summary"]["passed"] for r in reports)
    assert not failed, failed
    assert sum(r["summary"]["failed"] + r["summary"]["parsing_errors"] for r in reports) == 0
    assert passed > 50, proc.stdout[-2000:]  # checkov really looked at the workloads
    assert proc.returncode == 0


def test_every_resource_sets_the_release_namespace(chart):
    for doc in chart.render("full", monitoring_api=True, namespace="support-prod"):
        assert doc["metadata"]["namespace"] == "support-prod", doc["metadata"]["name"]
