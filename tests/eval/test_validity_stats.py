"""The judge-validity statistics on hand-made verdicts whose figures are known."""

from __future__ import annotations

import pytest

from eval.validity_stats import LEVELS, Goals, assess, malformed, pairwise_figures, question_tau, rank_recovery

PERFECT = dict(zip(LEVELS, [5, 4, 3, 2, 1]))


def test_question_tau_is_one_for_the_planted_order_and_minus_one_reversed():
    assert question_tau(PERFECT) == pytest.approx(1.0)
    assert question_tau(dict(zip(LEVELS, [1, 2, 3, 4, 5]))) == pytest.approx(-1.0)


def test_ties_lower_tau_and_a_constant_or_missing_judge_recovers_nothing():
    tied = dict(zip(LEVELS, [5, 5, 2, 1, 1]))  # 8 concordant pairs, 2 tied in the judge's scores: 8 / sqrt(10 * 8)
    assert question_tau(tied) == pytest.approx(8 / (10 * 8) ** 0.5)
    assert question_tau(dict.fromkeys(LEVELS, 3)) == 0.0
    assert question_tau({"reference": 5, "wrong_fact": None}) == 0.0
    partial = {"reference": 5, "wrong_fact": None, "generic": 3, "off_topic": 1, "empty": None}
    assert question_tau(partial) == pytest.approx(1.0)  # tau over the levels that were scored


def test_rank_recovery_mean_ci_and_separation():
    scores = {f"q{i}": dict(PERFECT) for i in range(6)}
    scores["q0"] = dict(zip(LEVELS, [5, 5, 2, 1, 1]))  # reference and wrong fact tied
    result = rank_recovery(scores, n_boot=200)
    assert result["questions"] == 6
    assert 0.9 < result["kendall_tau"] < 1.0
    low, high = result["kendall_tau_ci"]
    assert low <= result["kendall_tau"] <= high <= 1.0
    assert result["separated"]["reference>wrong_fact"] == pytest.approx(5 / 6)
    assert result["separated"]["generic>off_topic"] == 1.0
    assert result["mean_score_by_level"]["empty"] == 1.0


def test_rank_recovery_bootstrap_is_deterministic():
    scores = {f"q{i}": dict(zip(LEVELS, [5, 3 + i % 3, 2, 1 + i % 2, 1])) for i in range(8)}
    assert rank_recovery(scores, n_boot=100)["kendall_tau_ci"] == rank_recovery(scores, n_boot=100)["kendall_tau_ci"]


def _pair(q, first, second, position):
    winner = {"A": first, "B": second, "tie": "tie"}[position]
    return {"question_id": q, "first": first, "second": second, "winner_position": position, "winner": winner}


def test_pairwise_figures_position_consistency_and_bias():
    consistent = [_pair("q1", "reference", "generic", "A"), _pair("q1", "generic", "reference", "B")]
    always_a = [_pair("q2", "reference", "wrong_fact", "A"), _pair("q2", "wrong_fact", "reference", "A")]
    result = pairwise_figures(consistent + always_a, n_boot=50)
    assert result["position_consistency"] == 0.5 and result["pairs_both_orders"] == 2
    assert result["prefers_better"] == 0.75  # 3 of 4 verdicts chose the planted better answer
    assert result["first_position_win_rate"] == 0.75


def test_malformed_rate_counts_missing_and_reasks():
    records = [{"status": "ok", "attempts": 1}, {"status": "ok", "attempts": 2}, {"status": "missing", "attempts": 2}]
    result = malformed(records)
    assert result["malformed_rate"] == pytest.approx(1 / 3) and result["needed_reask"] == 2


def test_assess_passes_only_when_every_goal_is_met():
    rank = {"kendall_tau_ci": [0.7, 0.9]}
    good_pairs, parse_ok = {"position_consistency": 0.9}, {"malformed_rate": 0.0}
    assert assess(rank, good_pairs, parse_ok)["passed"]
    assert not assess(rank, {"position_consistency": 0.7}, parse_ok)["passed"]
    assert not assess(rank, good_pairs, {"malformed_rate": 0.06})["passed"]
    assert not assess({"kendall_tau_ci": [0.3, 0.9]}, good_pairs, parse_ok)["passed"]
    assert not assess({"kendall_tau_ci": None}, None, parse_ok)["passed"]
    assert assess({"kendall_tau_ci": [0.3, 0.9]}, None, parse_ok, Goals(min_tau_ci_low=0.2))["passed"]
