"""Statistics against known answers: BT on synthetic battles, Kendall tau by hand, Krippendorff's published example."""

import math

import numpy as np
import pytest

from eval.stats import (
    ELO_BASE, ELO_SCALE, battles_from_scores, bt_with_ci, fit_bradley_terry, kendall_tau, krippendorff_alpha,
    mean_with_ci, pareto_front, position_consistency, spearman,
)


def synthetic_battles(strengths: dict[str, float], per_pair: int, seed: int):
    """Battles drawn from a Bradley-Terry model with the given log-strengths, grouped by 'prompt'."""
    rng = np.random.default_rng(seed)
    names = list(strengths)
    units = {}
    for u in range(per_pair):
        items = []
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                p = 1 / (1 + math.exp(strengths[b] - strengths[a]))
                items.append((a, b, float(rng.random() < p)))
        units[u] = items
    return units


def test_bradley_terry_recovers_known_strengths():
    truth = {"base": 0.0, "a": 0.5, "b": 1.0, "c": -0.7}
    units = synthetic_battles(truth, per_pair=1500, seed=0)
    ratings = fit_bradley_terry([b for items in units.values() for b in items], list(truth), anchor="base")
    assert ratings["base"] == pytest.approx(ELO_BASE)
    for name, s in truth.items():
        assert (ratings[name] - ELO_BASE) / ELO_SCALE == pytest.approx(s, abs=0.12)


def test_bootstrap_ci_covers_truth_and_orders_targets():
    truth = {"base": 0.0, "good": 1.2, "bad": -1.2}
    units = synthetic_battles(truth, per_pair=200, seed=1)
    point, ci, _ = bt_with_ci(units, list(truth), "base", n_boot=100)
    assert point["good"] > point["base"] > point["bad"]
    for name, s in truth.items():
        if name != "base":
            lo, hi = ci[name]
            assert lo < ELO_BASE + ELO_SCALE * s < hi
            assert lo < point[name] < hi
    assert ci["good"][0] > ci["bad"][1]  # well separated


def test_ties_count_half_and_clean_sweep_stays_finite():
    even = fit_bradley_terry([("a", "b", 0.5)] * 10, ["a", "b"])
    assert even["a"] == pytest.approx(even["b"])
    sweep = fit_bradley_terry([("a", "b", 1.0)] * 10, ["a", "b"], anchor="b")
    assert math.isfinite(sweep["a"]) and sweep["a"] > 1400


def test_kendall_tau_by_hand():
    # x = 1..5, y = (3, 4, 1, 2, 5): of the 10 pairs, 6 concordant and 4 discordant -> tau = 0.2.
    assert kendall_tau([1, 2, 3, 4, 5], [3, 4, 1, 2, 5]) == pytest.approx(0.2)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau([1, 1, 1], [1, 2, 3]) is None  # a constant ranking: undefined, not 0
    # Spearman: d = (-2, -2, 2, 2, 0), sum d^2 = 16 -> 1 - 6*16 / (5*24) = 0.2.
    assert spearman([1, 2, 3, 4, 5], [3, 4, 1, 2, 5]) == pytest.approx(0.2)


# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers, 12 units, missing
# values; the paper gives alpha = 0.743 (nominal) and 0.849 (interval).
KRIPPENDORFF_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def test_krippendorff_alpha_matches_the_published_example():
    data = [[np.nan if v is None else v for v in row] for row in KRIPPENDORFF_2011]
    assert krippendorff_alpha(data, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(data, "interval") == pytest.approx(0.849, abs=5e-4)
    assert krippendorff_alpha([[1, 2, 3]], "interval") is None  # one rater
    assert krippendorff_alpha([[2, 2], [2, 2]], "interval") is None  # no variation: undefined


def test_battles_from_scores_and_tie_margin():
    units = battles_from_scores({"a": {"q1": 0.9, "q2": 0.5}, "b": {"q1": 0.5, "q2": 0.51}}, tie_margin=0.02)
    assert units == {"q1": [("a", "b", 1.0)], "q2": [("a", "b", 0.5)]}


def test_mean_with_ci():
    mean, ci = mean_with_ci({i: float(v) for i, v in enumerate([1, 2, 3, 4, 5] * 4)}, n_boot=200)
    assert mean == 3.0 and ci[0] < 3.0 < ci[1]


def test_position_consistency():
    records = [
        {"question_id": "q1", "first": "x", "second": "base", "winner": "x", "winner_position": "A"},
        {"question_id": "q1", "first": "base", "second": "x", "winner": "x", "winner_position": "B"},
        {"question_id": "q2", "first": "x", "second": "base", "winner": "x", "winner_position": "A"},
        {"question_id": "q2", "first": "base", "second": "x", "winner": "base", "winner_position": "A"},
    ]
    result = position_consistency(records)
    assert result["consistency"] == 0.5 and result["pairs"] == 2
    assert result["first_position_win_rate"] == 0.75


def test_pareto_front():
    points = {"cheap-bad": (900.0, 1.0), "mid": (1000.0, 2.0), "dominated": (950.0, 3.0), "best": (1100.0, 5.0)}
    assert pareto_front(points) == ["cheap-bad", "mid", "best"]


def test_a_weighted_battle_counts_as_that_many_battles():
    battles = [("a", "b", 1.0)] * 6 + [("a", "b", 0.0)] * 2
    weighted = [("a", "b", 1.0, 6.0), ("a", "b", 0.0, 2.0)]
    assert fit_bradley_terry(weighted, ["a", "b"], "b")["a"] == pytest.approx(
        fit_bradley_terry(battles, ["a", "b"], "b")["a"], abs=1e-3)
