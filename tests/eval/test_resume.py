"""Kill-and-resume: `supportkit eval run` killed (SIGKILL) while judging, then re-run, loses and doubles nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from common.journal import read_records
from tests.conftest import ROOT
from tests.eval.conftest import write_panel

QUESTIONS = 5
TARGETS = ["good", "degraded", "base"]
# rubric: 3 targets x 5; pairwise: 2 adapters x 5 x 2 orders
EXPECTED = 3 * QUESTIONS + 2 * QUESTIONS * 2


def eval_run(server, panel, out) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "eval.cli", "run", "--endpoint", server.url, "--panel", str(panel), "--out", str(out),
         "--limit", str(QUESTIONS), "--targets", ",".join(TARGETS)],
        cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


def test_killed_judging_run_resumes_without_loss_or_duplicates(scripted_factory, tmp_path):
    server = scripted_factory(delay_s=0.4)
    panel = write_panel(tmp_path / "panel.yaml", server.url, reference=False)
    out = tmp_path / "out"
    judgments = out / "judgments.jsonl"

    first = eval_run(server, panel, out)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:
        if judgments.is_file() and judgments.read_text().count("\n") >= 6:
            break
        time.sleep(0.05)
    assert first.poll() is None, first.stdout.read().decode()[-2000:]
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    before = {r["key"]: r for r in read_records(judgments)}
    assert 6 <= len(before) < EXPECTED  # killed part-way

    server.scripted.delay_s = 0.0
    asked_before = server.scripted.requests["judge"]
    second = eval_run(server, panel, out)
    output = second.communicate(timeout=300)[0].decode()
    assert second.returncode == 0, output[-3000:]

    lines = [json.loads(line) for line in judgments.read_text().splitlines()]
    keys = [r["key"] for r in lines]
    assert len(keys) == len(set(keys)) == EXPECTED  # nothing doubled, nothing missing
    after = {r["key"]: r for r in lines}
    assert all(after[k] == r for k, r in before.items())  # what was written before the kill is kept as it was
    assert all(r["status"] == "ok" for r in lines)
    # The resumed run asked the judge only for what was missing (one request per judgment, no parse retries).
    assert server.scripted.requests["judge"] - asked_before == EXPECTED - len(before)
    assert (out / "ranking.json").is_file() and (out / "report.html").is_file()
