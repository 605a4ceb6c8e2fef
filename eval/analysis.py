"""From stored answers and judgments to the ranking: what ranking.json holds. Asks no endpoint.

Each judge contributes battles per question: its pairwise verdicts (both orders) when it judges pairwise,
else battles derived from its per-answer scores (reference similarity, or rubric means). The panel's score
is one Bradley-Terry fit over all judges' battles, each judge weighted to the same total; its CI resamples
the questions.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from eval.ranking import (
    Agreement, JudgeResult, Position, Ranking, Rated, RubricSummary, SimilaritySummary, TargetResult,
    ValLossCorrelation,
)
from eval.stats import (
    Battle, battles_from_scores, bt_with_ci, fit_bradley_terry, kendall_tau, krippendorff_alpha, mean_with_ci,
    pareto_front, percentile_ci, position_consistency, resamples, spearman,
)


def _judge_scores(records: list[dict], kind: str) -> dict[str, dict[str, float]]:
    """{target: {question: score}} for this judge's ok records of a per-answer kind."""
    scores: dict[str, dict[str, float]] = defaultdict(dict)
    for r in records:
        if r["kind"] == kind and r.get("status") == "ok":
            value = r["score"] if kind == "reference" else float(np.mean(list(r["scores"].values())))
            scores[r["target"]][r["question_id"]] = value
    return dict(scores)


def _judge_battles(judge: dict, records: list[dict]) -> dict[str, list[Battle]]:
    if "pairwise" in judge.get("protocols", []):
        pairwise = [r for r in records if r["kind"] == "pairwise" and r.get("status") == "ok"]
        units: dict[str, list[Battle]] = defaultdict(list)
        for r in pairwise:
            outcome = 0.5 if r["winner"] == "tie" else float(r["winner"] == r["first"])
            units[r["question_id"]].append((r["first"], r["second"], outcome))
        return dict(units)
    kind = "reference" if judge["kind"] == "reference" else "rubric"
    return battles_from_scores(_judge_scores(records, kind), judge.get("tie_margin", 0.0) if kind == "reference" else 0.0)


def _preferences(battles: dict[str, list[Battle]], anchor: str) -> dict[tuple[str, str], float]:
    """Per (question, target): mean outcome of the target against the anchor (1 = target better)."""
    acc: dict[tuple[str, str], list[float]] = defaultdict(list)
    for unit, items in battles.items():
        for a, b, outcome in items:
            if b == anchor and a != anchor:
                acc[(unit, a)].append(outcome)
            elif a == anchor and b != anchor:
                acc[(unit, b)].append(1 - outcome)
    return {k: float(np.mean(v)) for k, v in acc.items()}


def _usage(records: list[dict]) -> dict[str, Any]:
    llm = [r for r in records if r["kind"] in ("rubric", "pairwise")]
    return {
        "judgments": len(records),
        "missing": sum(r.get("status") == "missing" for r in records),
        "prompt_tokens": sum((r.get("usage") or {}).get("prompt_tokens", 0) for r in llm),
        "completion_tokens": sum((r.get("usage") or {}).get("completion_tokens", 0) for r in llm),
        "cost_usd": round(sum(r.get("cost_usd") or 0.0 for r in llm), 6),
    }


@dataclass
class PanelFit:
    """The panel's strengths on a set of questions, and how they correlate with ranking by lower val loss."""

    ratings: dict[str, float]
    kendall_tau: float | None = None
    spearman: float | None = None


def _samples(fits: list[PanelFit], value: Callable[[PanelFit], float | None]) -> list[float]:
    values = (value(f) for f in fits)
    return [v for v in values if v is not None and not math.isnan(v)]


def _judges(run_info: dict, by_judge: dict[str, list[dict]], names: list[str], anchor: str | None,
            n_boot: int) -> tuple[dict[str, JudgeResult], dict[str, list[Battle]], dict[str, dict], dict[str, dict]]:
    """Each judge's own ranking and usage; the panel's weighted battles; each judge's ratings and preferences."""
    judges: dict[str, JudgeResult] = {}
    panel_battles: dict[str, list] = defaultdict(list)
    ratings: dict[str, dict[str, float]] = {}
    preferences: dict[str, dict] = {}
    per_judge = {j["name"]: _judge_battles(j, by_judge.get(j["name"], [])) for j in run_info["judges"]}
    counts = {j: sum(map(len, b.values())) for j, b in per_judge.items()}
    mean_count = float(np.mean([c for c in counts.values() if c])) if any(counts.values()) else 0.0
    for judge in run_info["judges"]:
        records = by_judge.get(judge["name"], [])
        battles = per_judge[judge["name"]]
        # Every judge weighs the same in the panel, however many battles its protocol yields.
        weight = mean_count / counts[judge["name"]] if counts[judge["name"]] else 0.0
        for unit, items in battles.items():
            panel_battles[unit].extend((a, b, outcome, weight) for a, b, outcome in items)
        point, ci, _ = bt_with_ci(battles, names, anchor, n_boot, seed=1)
        ratings[judge["name"]] = point
        if anchor:
            preferences[judge["name"]] = _preferences(battles, anchor)
        pairwise = [r for r in records if r["kind"] == "pairwise"]
        judges[judge["name"]] = JudgeResult(
            kind=judge["kind"],
            model=judge.get("model") or next((r["method"] for r in records if r.get("method")), judge.get("method")),
            **_usage(records), scores={n: Rated(score=point[n], ci=ci[n]) for n in point},
            position=Position(**position_consistency([r for r in pairwise if r.get("status") == "ok"])) if pairwise else None,
            validity=judge.get("validity"),
        )
    return judges, dict(panel_battles), ratings, preferences


def _target(t: dict, is_anchor: bool, answers: list[dict], score: float | None, ci, rubric: dict,
            similarity: dict) -> TargetResult:
    joules = [a["energy_joules"] for a in answers if a.get("energy_joules") is not None]
    tokens = [a["completion_tokens"] for a in answers if a.get("completion_tokens") is not None]
    return TargetResult(
        name=t["name"], is_base=t.get("is_base", False), is_anchor=is_anchor,
        score=score, ci=ci, answers=len(answers),
        latency_s=float(np.mean([a["latency_s"] for a in answers])) if answers else None,
        completion_tokens=float(np.mean(tokens)) if tokens else None,
        joules_per_answer=float(np.mean(joules)) if joules else None,
        energy_source=sorted({a.get("energy_source") for a in answers if a.get("energy_joules") is not None}) or None,
        val_loss=t.get("val_loss"), train_kwh=t.get("train_kwh"), rubric=rubric, reference_similarity=similarity,
    )


def _rubric(by_judge: dict[str, list[dict]], judge: str, name: str, scores: dict, n_boot: int) -> RubricSummary:
    mean, ci = mean_with_ci(scores.get(name, {}), n_boot, seed=2)
    per_criterion = defaultdict(list)
    for r in by_judge.get(judge, []):
        if r["kind"] == "rubric" and r["target"] == name and r.get("status") == "ok":
            for c, value in r["scores"].items():  # the six criteria, or `overall`
                per_criterion[c].append(value)
    return RubricSummary(mean=mean, ci=ci, n=len(scores.get(name, {})),
                         criteria={c: float(np.mean(v)) for c, v in per_criterion.items()})


def _agreement(ratings: dict[str, dict[str, float]], rubric_scores: dict[str, dict], preferences: dict[str, dict]) -> Agreement:
    ranked = [j for j in ratings if len(ratings[j]) >= 2]
    taus = {}
    for i, a in enumerate(ranked):
        for b in ranked[i + 1:]:
            both = sorted(ratings[a].keys() & ratings[b].keys())
            taus[f"{a} vs {b}"] = kendall_tau([ratings[a][n] for n in both], [ratings[b][n] for n in both])
    rubric_judges = list(rubric_scores)
    rubric_units = sorted({(n, q) for s in rubric_scores.values() for n, qs in s.items() for q in qs})
    pref_units = sorted({k for p in preferences.values() for k in p})
    return Agreement(
        kendall_tau=taus,
        alpha_rubric=krippendorff_alpha(
            [[rubric_scores[j].get(n, {}).get(q, np.nan) for n, q in rubric_units] for j in rubric_judges]
        ) if len(rubric_judges) >= 2 and rubric_units else None,
        alpha_preferences=krippendorff_alpha(
            [[p.get(u, np.nan) for u in pref_units] for p in preferences.values()]
        ) if len(preferences) >= 2 and pref_units else None,
    )


def _pareto(rows: list[TargetResult]) -> dict[str, list[str]]:
    fronts = {}
    for energy in ("joules_per_answer", "train_kwh"):
        points = {r.name: (r.score, getattr(r, energy)) for r in rows
                  if r.score is not None and getattr(r, energy) is not None}
        fronts[energy] = pareto_front(points) if points else []
    return fronts


def analyse(run_info: dict[str, Any], answers: list[dict], judgments: list[dict]) -> Ranking:
    targets = run_info["targets"]
    names = [t["name"] for t in targets]
    anchor = run_info.get("anchor")
    n_boot = run_info.get("bootstrap", 200)
    by_judge: dict[str, list[dict]] = defaultdict(list)
    for r in judgments:
        if r.get("target", r.get("first")) in names:
            by_judge[r["judge"]].append(r)
    judges, panel_battles, ratings, preferences = _judges(run_info, by_judge, names, anchor, n_boot)

    # The panel: one fit over every judge's battles; the CI and the val-loss correlation share the resamples.
    with_loss = [t for t in targets if t.get("val_loss") is not None]

    def fit(units) -> PanelFit:
        panel = fit_bradley_terry([b for u in units for b in panel_battles[u]], names, anchor)
        scored = [t for t in with_loss if t["name"] in panel]
        if len(scored) < 2:
            return PanelFit(panel)
        mine, by_loss = [panel[t["name"]] for t in scored], [-t["val_loss"] for t in scored]
        return PanelFit(panel, kendall_tau(mine, by_loss), spearman(mine, by_loss))

    units = sorted(panel_battles)
    point = fit(units) if units else PanelFit({})
    fits = [fit(pick) for pick in resamples(units, n_boot, seed=0)] if units else []

    rubric_scores = {j["name"]: _judge_scores(by_judge.get(j["name"], []), "rubric")
                     for j in run_info["judges"] if j["kind"] == "llm" and "rubric" in j.get("protocols", [])}
    reference_scores = {j["name"]: _judge_scores(by_judge.get(j["name"], []), "reference")
                        for j in run_info["judges"] if j["kind"] == "reference"}
    per_answer = defaultdict(list)
    for a in answers:
        per_answer[a["target"]].append(a)
    rows = []
    for t in targets:
        name = t["name"]
        rubric = {j: _rubric(by_judge, j, name, scores, n_boot) for j, scores in rubric_scores.items()}
        similarity = {}
        for j, scores in reference_scores.items():
            mean, ci = mean_with_ci(scores.get(name, {}), n_boot, seed=3)
            similarity[j] = SimilaritySummary(mean=mean, ci=ci, n=len(scores.get(name, {})))
        ci = percentile_ci(_samples(fits, lambda f: f.ratings.get(name)))
        rows.append(_target(t, name == anchor, per_answer.get(name, []), point.ratings.get(name), ci, rubric,
                            similarity))
    ranked = sorted([r for r in rows if r.score is not None], key=lambda r: -r.score)
    for rank, row in enumerate(ranked, 1):
        row.rank = rank
    pareto = _pareto(rows)
    for row in rows:
        row.pareto = {k: row.name in v for k, v in pareto.items()}

    val_loss = ValLossCorrelation(
        targets=len([t for t in with_loss if t["name"] in point.ratings]),
        kendall_tau=point.kendall_tau, kendall_tau_ci=percentile_ci(_samples(fits, lambda f: f.kendall_tau)),
        spearman=point.spearman, spearman_ci=percentile_ci(_samples(fits, lambda f: f.spearman)),
        note="Positive: the panel agrees with ranking by lower validation loss; near 0 or negative: it does not",
    )
    return Ranking(
        anchor=anchor, questions=len({a["question_id"] for a in answers}), bootstrap=n_boot,
        targets=ranked + [r for r in rows if r.score is None], judges=judges,
        agreement=_agreement(ratings, rubric_scores, preferences), val_loss_correlation=val_loss, pareto=pareto,
    )
