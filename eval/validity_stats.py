"""Judge validity from verdicts on planted answers of known quality order. Pure functions; asks nothing.

Planted levels, best first: the reference answer, a paraphrase with one wrong fact, a generic template reply,
an off-topic answer (another question's reference), an empty answer. A judge is valid here when its scores
recover that order within each question (Kendall tau-b, CI from resampling the questions), its pairwise
verdicts survive swapping the two answers, and its verdicts parse.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from eval.stats import kendall_tau, percentile_ci, position_consistency, resamples

LEVELS = ("reference", "wrong_fact", "generic", "off_topic", "empty")
QUALITY = {level: len(LEVELS) - i for i, level in enumerate(LEVELS)}  # reference 5 ... empty 1
ADJACENT = tuple(zip(LEVELS, LEVELS[1:]))
PAIRWISE_PAIRS = (("reference", "wrong_fact"), ("wrong_fact", "generic"), ("generic", "off_topic"))


@dataclass(frozen=True)
class Goals:
    min_tau_ci_low: float = 0.5  # the order is recovered: the 95% CI of the mean tau lies at or above this
    min_position_consistency: float = 0.8
    max_malformed_rate: float = 0.05


def question_tau(scores: dict[str, float | None]) -> float:
    """Kendall tau-b of one question's scores against the planted order; 0 (nothing recovered) when the judge
    scored fewer than two levels or gave them all one score."""
    levels = [lv for lv in LEVELS if scores.get(lv) is not None]
    tau = kendall_tau([scores[lv] for lv in levels], [QUALITY[lv] for lv in levels])
    return 0.0 if tau is None else tau


def _mean_ci(values_by_unit: dict[str, float], n_boot: int, seed: int) -> tuple[float | None, list[float] | None]:
    units = sorted(values_by_unit)
    if not units:
        return None, None
    point = float(np.mean([values_by_unit[u] for u in units]))
    boots = [float(np.mean([values_by_unit[u] for u in pick])) for pick in resamples(units, n_boot, seed)]
    return point, percentile_ci(boots)


def rank_recovery(scores: dict[str, dict[str, float | None]], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """`scores`: {question: {level: score or None (missing)}}. The mean within-question tau with its CI, each
    level's mean score, and for each adjacent pair of levels the share of questions the judge put in order."""
    taus = {q: question_tau(s) for q, s in scores.items()}
    tau, ci = _mean_ci(taus, n_boot, seed)
    separated = {}
    for better, worse in ADJACENT:
        hits = [s.get(better) is not None and s.get(worse) is not None and s[better] > s[worse] for s in scores.values()]
        separated[f"{better}>{worse}"] = float(np.mean(hits)) if hits else None
    level_means = {}
    for lv in LEVELS:
        values = [s[lv] for s in scores.values() if s.get(lv) is not None]
        level_means[lv] = float(np.mean(values)) if values else None
    return {"kendall_tau": tau, "kendall_tau_ci": ci, "questions": len(scores), "per_question_tau": taus,
            "mean_score_by_level": level_means, "separated": separated}


def pairwise_figures(records: Sequence[dict], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """`records`: ok pairwise verdicts (`question_id`, `first`, `second` levels, `winner` level or "tie",
    `winner_position`). Position consistency (eval.stats, with a CI over questions), the share of verdicts that
    prefer the planted better answer, and the share of decisive verdicts that went to position A."""
    overall = position_consistency(records)
    by_question: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_question[r["question_id"]].append(r)
    per_q = {q: c["consistency"] for q, rs in by_question.items() if (c := position_consistency(rs))["pairs"]}
    _, ci = _mean_ci(per_q, n_boot, seed)
    correct = [r["winner"] == min((r["first"], r["second"]), key=LEVELS.index) for r in records]
    return {"position_consistency": overall["consistency"], "position_consistency_ci": ci,
            "pairs_both_orders": overall["pairs"], "verdicts": len(records),
            "prefers_better": float(np.mean(correct)) if correct else None,
            "first_position_win_rate": overall["first_position_win_rate"]}


def malformed(records: Sequence[dict]) -> dict[str, Any]:
    """Verdicts recorded as missing (malformed after every re-ask), and those that needed a re-ask."""
    n = len(records)
    missing = sum(r.get("status") != "ok" for r in records)
    retried = sum((r.get("attempts") or 1) > 1 for r in records)
    return {"verdicts": n, "missing": missing, "malformed_rate": missing / n if n else None,
            "needed_reask": retried}


def assess(rank: dict, pairwise: dict | None, parse: dict, goals: Goals = Goals()) -> dict[str, Any]:
    """Each goal's figure, target and outcome; the judge passes only when every goal is met."""
    ci = rank.get("kendall_tau_ci")
    checks = {
        "rank_recovery": {"figure": ci[0] if ci else None, "goal": f">= {goals.min_tau_ci_low} (tau's CI low)",
                          "passed": bool(ci and ci[0] >= goals.min_tau_ci_low)},
        "malformed_rate": {"figure": parse["malformed_rate"], "goal": f"<= {goals.max_malformed_rate}",
                           "passed": parse["malformed_rate"] is not None
                           and parse["malformed_rate"] <= goals.max_malformed_rate},
    }
    if pairwise is not None:
        pc = pairwise.get("position_consistency")
        checks["position_consistency"] = {"figure": pc, "goal": f">= {goals.min_position_consistency}",
                                          "passed": pc is not None and pc >= goals.min_position_consistency}
    return {"passed": all(c["passed"] for c in checks.values()), "checks": checks, "goals": asdict(goals)}
