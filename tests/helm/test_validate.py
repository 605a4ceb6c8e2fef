"""Rendered manifests validate against the Kubernetes schemas of several versions (kubernetes-validate --strict)."""

import subprocess

import pytest
import yaml

from tests.helm.conftest import KUBE_VERSIONS, MONITORING_API

VALUE_SETS = [(), ("gpu",), ("monitoring-off",), ("full",)]


def validate(tools, kube: str, files) -> subprocess.CompletedProcess:
    cmd = [tools / "venv" / "bin" / "kubernetes-validate", "--strict", "--quiet", "-k", kube, *files]
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True)


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
def test_rendered_manifests_validate(chart, tools, tmp_path, kube):
    files = []
    for values in VALUE_SETS:
        for api in (False, True):
            text = chart.template_text(*values, kube=kube, monitoring_api=api)
            f = tmp_path / f"{'+'.join(values) or 'default'}-{'operator' if api else 'plain'}.yaml"
            f.write_text(text)
            files.append(f)
    proc = validate(tools, kube, files)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    # Only the Prometheus Operator's kinds lack a built-in schema; anything else unvalidated is a failure.
    unknown = [line for line in out.splitlines() if "Couldn't find schema" in line and MONITORING_API not in line]
    assert not unknown, out


@pytest.mark.parametrize("field, break_it", [
    ("livenessProbes", lambda c, spec: c.__setitem__("livenessProbes", c["livenessProbe"])),  # unknown field (strict)
    ("replicas", lambda c, spec: spec.__setitem__("replicas", "one")),  # wrong type
])
def test_validator_rejects_a_wrong_manifest(chart, tools, tmp_path, field, break_it):
    """Guard: the validation above can fail."""
    docs = [d for d in yaml.safe_load_all(chart.template_text()) if d]
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    break_it(deploy["spec"]["template"]["spec"]["containers"][0], deploy["spec"])
    f = tmp_path / "broken.yaml"
    f.write_text(yaml.safe_dump(deploy))
    proc = validate(tools, "1.33.0", [f])
    assert proc.returncode != 0
    assert field in proc.stdout + proc.stderr


def test_crd_resources_only_with_operator_api(chart):
    kinds = lambda docs: {d["kind"] for d in docs}  # noqa: E731
    with_api = chart.render(monitoring_api=True)
    without = chart.render(monitoring_api=False)
    assert {"ServiceMonitor", "PrometheusRule"} <= kinds(with_api)
    assert not {"ServiceMonitor", "PrometheusRule"} & kinds(without)
    off = chart.render("monitoring-off", monitoring_api=True)
    assert not {"ServiceMonitor", "PrometheusRule"} & kinds(off)
