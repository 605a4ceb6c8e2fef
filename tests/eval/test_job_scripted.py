"""The whole eval job against a scripted OpenAI-compatible server (targets with planted quality + a judge)."""

from __future__ import annotations

import json

import pytest

from common.journal import read_records
from eval.answers import ANSWERS_FILE
from eval.job import JobError, render, run_job
from eval.judging import JUDGMENTS_FILE
from eval.settings import EvalSettings
from eval.targets import TargetError
from tests.eval.conftest import write_panel

EXPECTED_FILES = ["answers.jsonl", "judgments.jsonl", "ranking.json", "report.md", "report.html",
                  "plot_ranking.png", "plot_judge_agreement.png", "plot_rank_vs_val_loss.png",
                  "plot_quality_vs_energy.png"]


def settings(server, panel, out, **kw) -> EvalSettings:
    return EvalSettings.from_cli(endpoint=server.url, panel=panel, out=out, **kw)


def test_planted_quality_is_recovered_and_files_written(scripted_factory, tmp_path):
    server = scripted_factory()
    panel = write_panel(tmp_path / "panel.yaml", server.url)
    out = tmp_path / "out"
    run_job(settings(server, panel, out, limit=6), log=lambda _: None)
    for name in EXPECTED_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name

    ranking = json.loads((out / "ranking.json").read_text())
    order = [t["name"] for t in ranking["targets"]]
    assert order.index("good") < order.index("degraded") < order.index("offtopic")
    good = next(t for t in ranking["targets"] if t["name"] == "good")
    assert good["rank"] == 1 and good["ci"][0] <= good["score"] <= good["ci"][1]
    assert good["rubric"]["llm"]["mean"] == 5.0 and good["reference_similarity"]["reference"]["mean"] > 0.99
    assert good["joules_per_answer"] > 0 and good["energy_source"] == ["estimate"]
    # Planted: the lowest validation loss belongs to the worst answers, so the correlation is negative.
    assert ranking["val_loss_correlation"]["kendall_tau"] == -1.0
    assert ranking["val_loss_correlation"]["targets"] == 3
    # Both judges see the same order: full agreement.
    assert ranking["agreement"]["kendall_tau"]["reference vs llm"] == 1.0
    llm = ranking["judges"]["llm"]
    assert llm["missing"] == 0 and llm["position"]["consistency"] == 1.0
    assert llm["prompt_tokens"] > 0 and llm["cost_usd"] > 0
    assert set(ranking["pareto"]["train_kwh"]) >= {"good"}
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and "<img src='plot" not in html
    # 4 targets x 6 questions; judge: 24 rubric + 3 adapters x 6 x 2 orders; reference: 24.
    assert len(read_records(out / ANSWERS_FILE)) == 24
    kinds = [j["kind"] for j in read_records(out / JUDGMENTS_FILE)]
    assert kinds.count("rubric") == 24 and kinds.count("pairwise") == 36 and kinds.count("reference") == 24


def test_rerun_asks_only_what_is_missing_and_report_rerenders(scripted_factory, tmp_path):
    server = scripted_factory()
    panel = write_panel(tmp_path / "panel.yaml", server.url, protocols=("rubric",), method="rouge")
    out = tmp_path / "out"
    run_job(settings(server, panel, out, limit=3, targets=["good", "base"]), log=lambda _: None)
    assert server.scripted.requests["good"] == 3 and server.scripted.requests["judge"] == 6
    run_job(settings(server, panel, out, limit=4, targets=["good", "base"]), log=lambda _: None)
    assert server.scripted.requests["good"] == 4 and server.scripted.requests["judge"] == 8
    server.stop()  # re-rendering needs no endpoint
    (out / "report.md").unlink()
    render(out)
    assert "good" in (out / "report.md").read_text()


def test_malformed_verdicts_are_missing_never_scored(scripted_factory, tmp_path):
    server = scripted_factory()
    panel = write_panel(tmp_path / "panel.yaml", server.url, judge_model="judge-broken", reference=False,
                        extra="parse_retries: 1")
    out = tmp_path / "out"
    run_job(settings(server, panel, out, limit=2, targets=["good", "base"]), log=lambda _: None)
    records = read_records(out / JUDGMENTS_FILE)
    assert records and all(r["status"] == "missing" and r["attempts"] == 2 for r in records)
    assert all("scores" not in r or r["scores"] is None for r in records if r["kind"] == "rubric")
    ranking = json.loads((out / "ranking.json").read_text())
    assert ranking["judges"]["llm"]["missing"] == len(records)
    assert all(t["score"] is None for t in ranking["targets"])


def test_flaky_judge_and_overloaded_endpoint_are_retried(scripted_factory, tmp_path):
    server = scripted_factory(fail_first=True)
    panel = write_panel(tmp_path / "panel.yaml", server.url, judge_model="judge-flaky", reference=False)
    out = tmp_path / "out"
    run_job(settings(server, panel, out, limit=2, targets=["good", "base"], backoff_s=0.01), log=lambda _: None)
    records = read_records(out / JUDGMENTS_FILE)
    assert len(records) == 4 + 4 and all(r["status"] == "ok" and r["attempts"] == 2 for r in records)


def test_tgi_route_through_inference_client(scripted_factory, tmp_path):
    server = scripted_factory()
    panel = write_panel(tmp_path / "panel.yaml", None, method="rouge")
    out = tmp_path / "out"
    run_job(settings(server, panel, out, limit=3, api="tgi", targets=["good", "offtopic", "base"]), log=lambda _: None)
    answers = read_records(out / ANSWERS_FILE)
    assert {a["api"] for a in answers} == {"tgi"} and all(a["energy_joules"] == 0.25 for a in answers)
    assert server.scripted.requests["good"] == 3 and server.scripted.requests["offtopic"] == 3
    ranking = json.loads((out / "ranking.json").read_text())
    assert [t["name"] for t in ranking["targets"]][0] == "good"


def test_unknown_target_is_a_clear_error(scripted_factory, tmp_path):
    server = scripted_factory()
    panel = write_panel(tmp_path / "panel.yaml", None)
    with pytest.raises(TargetError, match="target 'nope' is not served"):
        run_job(settings(server, panel, tmp_path / "out", targets=["nope"]), log=lambda _: None)


def test_missing_anchor_is_a_clear_error(scripted_factory, tmp_path):
    server = scripted_factory()
    panel = write_panel(tmp_path / "panel.yaml", server.url, reference=False)
    with pytest.raises(JobError, match="anchor"):
        run_job(settings(server, panel, tmp_path / "out", limit=1, targets=["good"]), log=lambda _: None)


def test_rerun_with_other_decoding_is_refused(scripted_factory, tmp_path):
    server = scripted_factory()
    panel = write_panel(tmp_path / "panel.yaml", None, method="rouge")
    out = tmp_path / "out"
    run_job(settings(server, panel, out, limit=1, targets=["good"]), log=lambda _: None)
    panel.write_text(panel.read_text().replace("max_tokens: 64", "max_tokens: 65"))
    with pytest.raises(JobError, match="decoding"):
        run_job(settings(server, panel, out, limit=1, targets=["good"]), log=lambda _: None)


def test_llm_judge_over_the_tgi_route(scripted_factory, tmp_path):
    server = scripted_factory()
    panel = write_panel(tmp_path / "panel.yaml", server.url, reference=False, extra="api: tgi")
    out = tmp_path / "out"
    run_job(settings(server, panel, out, limit=2, targets=["good", "offtopic", "base"]), log=lambda _: None)
    records = read_records(out / JUDGMENTS_FILE)
    assert len(records) == 6 + 8 and all(r["status"] == "ok" for r in records)
    ranking = json.loads((out / "ranking.json").read_text())
    assert [t["name"] for t in ranking["targets"]][0] == "good"
    assert ranking["judges"]["llm"]["completion_tokens"] > 0
