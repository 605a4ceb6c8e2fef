"""`helm lint --strict` accepts the shipped value sets and the schema rejects bad values."""

import pytest

from tests.helm.conftest import CI_VALUES


@pytest.mark.parametrize("values", [(), ("gpu",), ("monitoring-off",), ("full",)], ids=lambda v: "+".join(v) or "default")
def test_lint_strict_passes(chart, values):
    proc = chart.lint(*values)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout + proc.stderr


def test_every_ci_values_file_is_linted():
    linted = {"gpu", "monitoring-off", "full"}
    assert {p.name.removesuffix("-values.yaml") for p in CI_VALUES.glob("*-values.yaml")} == linted


@pytest.mark.parametrize(
    "bad, why",
    [
        ("serve.replicaCount=two", "got string, want integer"),
        ("serve.dtype=fp8", "value must be one of"),
        ("model.source=nfs", "value must be one of"),
        ("model.subPath=../etc", "does not match pattern"),
        ("serve.gpu.count=0", "minimum"),
        ("serve.port=70000", "maximum"),
        ("adapters.size=lots", "does not match pattern"),
        ("image.serve.digest=latest", "does not match pattern"),
        ("adminToken.value=short", "does not match pattern"),
        ("networkPolicy.judgeEndpoints[0].cidr=api.example.com", "does not match pattern"),
        ("serve.resoruces.limits.cpu=1", "additional properties"),
        ("monitoring.prometheusRule.errorRatio=2", "maximum"),
    ],
)
def test_lint_rejects_bad_value(chart, bad, why):
    sets = (bad,) if "judgeEndpoints" not in bad else (bad, "networkPolicy.judgeEndpoints[0].ports={443}")
    proc = chart.lint(sets=sets)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert why in out, out
