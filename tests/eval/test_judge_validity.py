"""`supportkit eval validate-judge` end to end: a judge that tracks the reference passes, broken ones fail.

The scripted judge (word overlap with the reference, well-formed verdicts) stands in for a capable judge; the
kit's own server with a tiny random model is a real judge endpoint whose verdicts are garbage, and the harness
must say so.
"""

from __future__ import annotations

import json

from typer.testing import CliRunner

from eval.judge_validity import PLANTED, load_planted
from eval.validity_stats import LEVELS
from supportkit.cli import app
from tests.eval.conftest import write_panel


def _validate(tmp_path, panel, endpoint, *extra: str) -> dict:
    out = tmp_path / "validity"
    result = CliRunner().invoke(app, ["eval", "validate-judge", "--endpoint", endpoint, "--panel", str(panel),
                                      "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "judge_validity.json").read_text())
    markdown = (out / "judge_validity.md").read_text()
    assert ("**PASS**" if data["assessment"]["passed"] else "**FAIL**") in markdown
    return data


def test_planted_sets_are_data_with_every_level_and_distinct_answers():
    planted = load_planted(PLANTED)
    assert len(planted) >= 12
    for p in planted:
        assert p.answers["reference"] == p.reference and p.answers["empty"] == ""
        texts = [p.answers[lv] for lv in LEVELS]
        assert len(set(texts)) == len(LEVELS), p.id
        assert p.answers["wrong_fact"] != p.reference


def test_a_judge_that_tracks_the_reference_passes(scripted_factory, tmp_path):
    scripted = scripted_factory()
    panel = write_panel(tmp_path / "panel.yaml", scripted.url, reference=False)
    data = _validate(tmp_path, panel, scripted.url, "--questions", "8", "--pairwise-questions", "4")
    assert data["planted"] == {"file": str(PLANTED), "questions": 8, "pairwise_questions": 4, "levels": list(LEVELS)}
    assert data["malformed"]["verdicts"] == 8 * 5 + 4 * 3 * 2 and data["malformed"]["malformed_rate"] == 0
    assert data["rank_recovery"]["kendall_tau"] > 0.7
    assert data["rank_recovery"]["mean_score_by_level"]["reference"] == 5
    assert data["pairwise"]["position_consistency"] == 1.0
    assert data["assessment"]["passed"], data["assessment"]


def test_a_judge_whose_verdicts_never_parse_fails(scripted_factory, tmp_path):
    scripted = scripted_factory()
    panel = write_panel(tmp_path / "panel.yaml", scripted.url, judge_model="judge-broken", reference=False,
                        extra="parse_retries: 0")
    data = _validate(tmp_path, panel, scripted.url, "--questions", "3", "--pairwise-questions", "1")
    assert data["malformed"]["malformed_rate"] == 1.0
    assert data["rank_recovery"]["kendall_tau"] == 0.0  # nothing scored: nothing recovered
    assert not data["assessment"]["passed"]
    assert not any(c["passed"] for c in data["assessment"]["checks"].values())


def test_a_rerun_asks_only_what_is_missing(scripted_factory, tmp_path):
    scripted = scripted_factory()
    panel = write_panel(tmp_path / "panel.yaml", scripted.url, protocols=("rubric",), reference=False)
    _validate(tmp_path, panel, scripted.url, "--questions", "2")
    asked = scripted.scripted.requests["judge"]
    data = _validate(tmp_path, panel, scripted.url, "--questions", "3")
    assert scripted.scripted.requests["judge"] - asked == 5  # the third question's five answers only
    assert data["malformed"]["verdicts"] == 15 and data["pairwise"] is None


def test_the_kit_server_with_a_tiny_random_model_fails_validity(live_server, tmp_path):
    panel = write_panel(tmp_path / "panel.yaml", live_server.url, judge_model="", reference=False, extra="\n".join([
        "rubric_verdict: overall", "rubric_prompt: prompts/rubric-overall.md",
        "pairwise_prompt: prompts/pairwise-short.md", "max_tokens: 16", "parse_retries: 0"]))
    data = _validate(tmp_path, panel, live_server.url, "--questions", "2", "--pairwise-questions", "1")
    assert data["judge"]["model"]  # the kit server's base model, found through /v1/models
    assert data["malformed"]["verdicts"] == 2 * 5 + 3 * 2
    assert data["malformed"]["malformed_rate"] > 0.05
    assert not data["assessment"]["passed"]


def test_the_ranking_report_shows_each_llm_judges_validity(scripted_factory, tmp_path):
    from eval.job import run_job
    from eval.settings import EvalSettings

    scripted = scripted_factory()
    panel = write_panel(tmp_path / "panel.yaml", scripted.url, protocols=("rubric",), reference=False)
    data = _validate(tmp_path, panel, scripted.url, "--questions", "4")
    validity = tmp_path / "validity" / "judge_validity.json"
    judged = write_panel(tmp_path / "judged.yaml", scripted.url, protocols=("rubric",), method="rouge",
                         extra=f"validity: {validity}")
    out = tmp_path / "out"
    run_job(EvalSettings.from_cli(endpoint=scripted.url, panel=judged, out=out, limit=2), log=lambda _: None)
    shown = json.loads((out / "ranking.json").read_text())["judges"]["llm"]["validity"]
    assert shown["passed"] is data["assessment"]["passed"] and shown["questions"] == 4
    assert shown["kendall_tau"] == data["rank_recovery"]["kendall_tau"]
    report = (out / "report.md").read_text()
    assert "## Judge validity" in report and "| not validated |" not in report

    missing = write_panel(tmp_path / "missing.yaml", scripted.url, protocols=("rubric",), method="rouge",
                          extra="validity: nowhere/judge_validity.json")
    run_job(EvalSettings.from_cli(endpoint=scripted.url, panel=missing, out=tmp_path / "out2", limit=1), log=lambda _: None)
    assert "| not validated |" in (tmp_path / "out2" / "report.md").read_text()


def test_no_ask_computes_the_figures_from_the_verdicts_on_file(scripted_factory, tmp_path):
    scripted = scripted_factory()
    panel = write_panel(tmp_path / "panel.yaml", scripted.url, reference=False)
    first = _validate(tmp_path, panel, scripted.url, "--questions", "3", "--pairwise-questions", "1")
    asked = scripted.scripted.requests["judge"]
    again = _validate(tmp_path, panel, "http://127.0.0.1:9", "--no-ask", "--model", "judge", "--questions", "12")
    assert scripted.scripted.requests["judge"] == asked
    assert again["planted"]["questions"] == 3 and again["planted"]["pairwise_questions"] == 1
    assert again["rank_recovery"] == first["rank_recovery"]
