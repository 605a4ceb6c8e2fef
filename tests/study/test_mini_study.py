"""The whole chain on the mini profile: offline data -> 3 trained adapters -> one kit server -> judge panel ->
report. Every section is present and its numbers equal the stored artefacts (manifests, answers, judgments);
a re-run reuses everything, and a re-run after losing one adapter trains and asks only what is missing.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from common.journal import read_records
from common.manifest import read_losses, read_manifest
from supportkit.study_report import PLOTS, energy_sources, fmt
from tests.study.conftest import ok, study_cli

CONFIGS = ["r16-qv", "r16-all", "r32-qv"]
SECTIONS = ["# LoRA study: 3 configurations on tiny-qwen2", "## Configurations", "## Judges",
            "## Training curves", "## Neighbours in the ranking", "## Judge rank vs validation-loss rank", "## Quality vs energy",
            "## Effect of the target-module set and of the rank", "## Recommendation"]


def table(md: str, heading: str) -> dict[str, dict[str, str]]:
    """The first markdown table after `heading`, as {first text column: {header: cell}}."""
    lines = md.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split(" | ")])
    headers, body = rows[0], rows[2:]
    key = 1 if headers[0] == "rank" else 0
    return {r[key].removesuffix(" (base)"): dict(zip(headers, r)) for r in body}


def test_every_section_and_file_is_there(mini_study):
    out, _ = mini_study
    md = (out / "report.md").read_text()
    for section in SECTIONS:
        assert section in md, section
    for name in PLOTS.values():
        assert (out / name).stat().st_size > 1000 and f"]({name})" in md
    html = (out / "report.html").read_text()
    assert html.count("src='data:image/png;base64,") == len(PLOTS)
    assert not re.search(r"src=['\"](?!data:)", html)  # self-contained: no external file
    study = json.loads((out / "study.json").read_text())
    assert [c["name"] for c in study["configurations"] if not c["is_base"]] == CONFIGS
    assert study["recommendation"]["text"] and study["recommendation"]["text"] in md
    assert set(study["timings"]) >= {"data_s", "train_s", "serve_s", "eval_s", "total_s"}
    assert study["started_at"] <= study["finished_at"] and f"First started {study['started_at']}" in md


def test_configuration_numbers_equal_the_manifests(mini_study):
    out, _ = mini_study
    rows = table((out / "report.md").read_text(), "## Configurations")
    study = {c["name"]: c for c in json.loads((out / "study.json").read_text())["configurations"]}
    val_losses = set()
    for name in CONFIGS:
        m = read_manifest(out / "adapters" / name)
        row, stored = rows[name], study[name]
        assert stored["val_loss"] == m.metrics.val_loss and stored["train_kwh"] == m.energy.kwh["total"]
        assert stored["perplexity"] == m.metrics.perplexity and stored["steps"] == m.training.steps
        assert row["val loss"] == fmt(m.metrics.val_loss, ".4f")
        assert row["perplexity"] == fmt(m.metrics.perplexity, ".3f")
        assert row["train kWh"] == fmt(m.energy.kwh["total"], ".4g") and float(row["train kWh"]) > 0
        assert row["kWh source"] == energy_sources(m.energy.sources) and m.energy.sources["total"] in row["kWh source"]
        assert row["r"] == str(m.lora.r) and row["steps"] == str(m.training.steps)
        val_losses.add(m.metrics.val_loss)
    assert rows["r16-all"]["modules"] == "all" and rows["r16-qv"]["modules"] == "qv"
    assert len(val_losses) > 1  # the adapters were really trained, differently


def test_training_curves_start_at_the_untrained_loss(mini_study):
    out, _ = mini_study
    study = json.loads((out / "study.json").read_text())
    starts = set()
    for name in CONFIGS:
        curves = read_losses(out / "adapters" / name)
        (step0, untrained), *_ = curves["val"]
        assert step0 == 0 and curves["val"][-1][1] == read_manifest(out / "adapters" / name).metrics.val_loss
        starts.add(untrained)
    assert len(starts) == 1  # fresh LoRA weights: every configuration starts at the untrained model's loss
    plateau = study["plateau"]
    assert plateau["untrained_val_loss"] == starts.pop() and plateau["configurations"] == len(CONFIGS)
    steps = [read_manifest(out / "adapters" / n).training.steps for n in CONFIGS]
    assert plateau["with_min_steps"] == sum(s >= 100 for s in steps) == 0  # the mini profile trains 1-2 steps
    assert (f"{plateau['with_min_steps']} of {len(CONFIGS)} configurations trained at least 100 optimizer steps. "
            f"Untrained validation loss {plateau['untrained_val_loss']:.4f}") in (out / "report.md").read_text()


def test_eval_numbers_equal_the_answers_and_judgments(mini_study):
    out, _ = mini_study
    md = (out / "report.md").read_text()
    rows = table(md, "## Configurations")
    answers = read_records(out / "eval" / "answers.jsonl")
    judgments = read_records(out / "eval" / "judgments.jsonl")
    ranking = json.loads((out / "eval" / "ranking.json").read_text())
    base = next(t["name"] for t in ranking["targets"] if t["is_base"])
    targets = [base, *CONFIGS]
    assert {a["target"] for a in answers} == set(targets) and len(answers) == 4 * ranking["questions"]
    for t in ranking["targets"]:
        row = rows[t["name"]]
        joules = [a["energy_joules"] for a in answers if a["target"] == t["name"]]
        assert row["J/answer"] == fmt(float(np.mean(joules)), ".4g")
        similarity = [j["score"] for j in judgments if j["judge"] == "reference" and j["target"] == t["name"]]
        assert row["similarity (reference)"] == fmt(float(np.mean(similarity)), ".4f")
        assert row["panel score"] == fmt(t["score"], ".1f") and row["rank"] == str(t["rank"])
    judges = table(md, "## Judges")
    counts = defaultdict(lambda: [0, 0])
    for j in judgments:
        counts[j["judge"]][0] += 1
        counts[j["judge"]][1] += j["status"] == "missing"
    for judge, (n, missing) in counts.items():
        assert judges[judge]["judgments"] == str(n) and judges[judge]["missing"] == str(missing)
    corr = ranking["val_loss_correlation"]
    assert f"over {corr['targets']} configurations: {fmt(corr['kendall_tau'], '.2f')}" in md
    front = ranking["pareto"]["train_kwh"]
    assert front and f"by training energy: {', '.join(front)};" in md
    for name in front:
        assert name in json.loads((out / "study.json").read_text())["recommendation"]["text"]


def _snapshot(out: Path) -> dict:
    store = out / "adapters"
    return {
        "adapters": {p.parent.name: p.stat().st_mtime_ns for p in store.glob("*/adapter_model.safetensors")},
        "answers": (out / "eval" / "answers.jsonl").read_text().splitlines(),
        "judgments": (out / "eval" / "judgments.jsonl").read_text().splitlines(),
    }


def _drop(path: Path, target: str) -> None:
    keep = [line for line in path.read_text().splitlines()
            if target not in (json.loads(line).get("target"), json.loads(line).get("first"), json.loads(line).get("second"))]
    path.write_text("".join(line + "\n" for line in keep))


@pytest.mark.slow
def test_rerun_reuses_everything_then_continues_after_a_loss(mini_study):
    out, _ = mini_study
    before = _snapshot(out)
    assert sorted(before["adapters"]) == sorted(CONFIGS)
    proc = ok(study_cli("--profile", "mini", "--out", str(out), "--no-progress"))
    assert _snapshot(out) == before  # no training, no answer, no judgment
    assert proc.stderr.count("reusing the adapter") == 3 and "answers: 0 asked" in proc.stderr
    assert "judgments: 0 new" in proc.stderr

    # An interrupted study: one adapter never published, so none of its answers or judgments exist.
    import shutil

    shutil.rmtree(out / "adapters" / "r32-qv")
    for name in ("answers.jsonl", "judgments.jsonl"):
        _drop(out / "eval" / name, "r32-qv")
    # ... and its server comes back on another port: the stored answers stay valid for the same model and store.
    from tests.conftest import free_port

    port = free_port()
    proc = ok(study_cli("--profile", "mini", "--out", str(out), "--no-progress", "--port", str(port)))
    assert json.loads((out / "eval" / "run.json").read_text())["endpoint"] == f"http://127.0.0.1:{port}"
    after = _snapshot(out)
    assert {k: v for k, v in after["adapters"].items() if k != "r32-qv"} == \
        {k: v for k, v in before["adapters"].items() if k != "r32-qv"}
    assert "r32-qv" in after["adapters"] and proc.stderr.count("reusing the adapter") == 2
    questions = json.loads((out / "eval" / "ranking.json").read_text())["questions"]
    assert f"answers: {questions} asked" in proc.stderr
    assert len(after["answers"]) == len(before["answers"])
    state = json.loads((out / "study-state.json").read_text())
    assert len(state["runs"]) == 3


def test_report_from_stored_eval_and_store_is_the_same_report(mini_study, tmp_path):
    out, _ = mini_study
    again = tmp_path / "again"
    ok(study_cli("--report-from", str(out / "eval"), "--store", str(out / "adapters"), "--out", str(again)))
    first, second = (table((d / "report.md").read_text(), "## Configurations") for d in (out, again))
    assert first == second
    assert json.loads((again / "study.json").read_text())["recommendation"] == \
        json.loads((out / "study.json").read_text())["recommendation"]
    proc = study_cli("--report-from", str(tmp_path / "none"), "--store", str(out / "adapters"), "--out", str(again))
    assert proc.returncode == 1 and "holds no eval run" in proc.stderr and "Traceback" not in proc.stderr


def test_neighbours_and_certainty_follow_the_cis(mini_study):
    out, _ = mini_study
    study = json.loads((out / "study.json").read_text())
    by_name = {c["name"]: c for c in study["configurations"]}
    ranked = sorted([c for c in study["configurations"] if c["rank"]], key=lambda c: c["rank"])
    pairs = study["neighbours"]
    assert [(p["upper"], p["lower"]) for p in pairs] == [(a["name"], b["name"]) for a, b in zip(ranked, ranked[1:])]
    for p in pairs:
        assert p["separated"] == (by_name[p["upper"]]["ci"][0] > by_name[p["lower"]]["ci"][1])
    rows = table((out / "report.md").read_text(), "## Neighbours in the ranking")
    assert {k: v["separated"] for k, v in rows.items()} == {p["upper"]: "yes" if p["separated"] else "no" for p in pairs}
    rec = study["recommendation"]
    best, base = by_name[rec["best"]], next(c for c in study["configurations"] if c["is_base"])
    assert rec["certainty"] in ("high", "moderate", "low") and f"Certainty: {rec['certainty']}" in rec["text"]
    if best["ci"][0] <= base["ci"][1]:
        assert rec["certainty"] == "low"
