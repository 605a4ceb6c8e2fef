"""Schemathesis against the live server's own /openapi.json with every check: every route of both API families (and
admin, with the token), >= 1,000 generated cases, zero failures (no 5xx, no response that contradicts the documented
schemas, no schema-valid request refused, no schema-violating request accepted, Allow headers that are true)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.conftest import AUTH, SMALL_LIMITS

MIN_CASES = 1000
# Adapter names the fuzzer draws path parameters from half of the time, so that the per-adapter routes get
# past "404 adapter not found"; the rest are generated strings (traversal attempts among them).
CONFIG = """
[dictionaries.adapters]
values = ["support-a", "support-b", "..", "support-a/../support-b"]

[parameters]
"path.name" = { dictionary = "adapters", probability = 0.5 }
"""


@pytest.mark.slow
def test_fuzz_all_routes(server_factory, serve_args, tmp_path):
    server = server_factory(*serve_args, env=SMALL_LIMITS)
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    report = tmp_path / "report.json"
    st = Path(sys.executable).with_name("st")
    cmd = [
        str(st), "--config-file", str(config), "run", f"{server.url}/openapi.json",
        "--checks", "all",
        "--phases", "examples,coverage,fuzzing", "--max-examples", "30", "--seed", "777", "--no-shrink",
        "--header", f"Authorization: {AUTH['Authorization']}", "--request-timeout", "60",
        "--report", "json", "--report-json-path", str(report),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    tail = proc.stdout[-6000:] + proc.stderr[-2000:]
    data = json.loads(report.read_text())
    cases = data["test_cases"]
    assert data["operations"]["tested"] == data["operations"]["total"] >= 15, tail
    assert cases["generated"] >= MIN_CASES, tail
    assert cases["with_failures"] == 0 and not data["failures"], tail
    assert cases["errored"] == 0 and not data["errors"], tail
    assert proc.returncode == 0, tail
    log = server.log.read_text()
    assert "Traceback" not in log, log[log.find("Traceback") - 500:][:4000]
    print(f"schemathesis: {cases['generated']} cases over {data['operations']['tested']} operations, "
          f"{data['running_time']:.0f} s, 0 failures")
