"""Statistics of a judging run: Bradley-Terry with bootstrap CIs over prompts, agreement, Pareto front.

Battles are (first, second, outcome[, weight]) with outcome 1 = first wins, 0 = second wins, 0.5 = tie. Bradley-Terry
is fitted by maximum likelihood (scipy), reported on the Elo scale (400 points = 10:1 odds), anchor at 1000.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable, Hashable, Sequence

import numpy as np
from scipy import optimize, stats

Battle = tuple[str, str, float]
ELO_SCALE = 400 / math.log(10)
ELO_BASE = 1000.0
PRIOR_TIES = 0.5  # one virtual tie (half a win each way) per pair that met: finite strengths when one side always wins
RIDGE = 1e-6  # pins the level of targets that never met the anchor's component


def fit_bradley_terry(battles: Sequence[Battle], names: Sequence[str], anchor: str | None = None) -> dict[str, float]:
    """Elo-scale strengths of the named targets that appear in a battle (anchor = 1000, else mean = 1000)."""
    present = sorted({n for a, b, *_ in battles for n in (a, b)} & set(names))
    if len(present) < 2:
        return {n: ELO_BASE for n in present}
    index = {n: i for i, n in enumerate(present)}
    k = len(present)
    wins = np.zeros((k, k))
    for a, b, outcome, *weight in battles:
        if a in index and b in index:
            w = weight[0] if weight else 1.0
            wins[index[a], index[b]] += w * outcome
            wins[index[b], index[a]] += w * (1 - outcome)
    met = (wins + wins.T) > 0
    wins += PRIOR_TIES * met

    def loss(beta: np.ndarray) -> tuple[float, np.ndarray]:
        diff = beta[:, None] - beta[None, :]
        log_p = -np.logaddexp(0, -diff)  # log sigmoid(beta_i - beta_j)
        p = np.exp(log_p)
        value = -(wins * log_p).sum() + RIDGE * (beta ** 2).sum()
        grad_matrix = wins * (1 - p)  # d/d beta_i of wins_ij * log sigmoid(beta_i - beta_j)
        grad = -(grad_matrix.sum(axis=1) - grad_matrix.sum(axis=0)) + 2 * RIDGE * beta
        return value, grad

    beta = optimize.minimize(loss, np.zeros(k), jac=True, method="L-BFGS-B", options={"gtol": 1e-9}).x
    beta -= beta[index[anchor]] if anchor in index else beta.mean()
    return {n: float(ELO_BASE + ELO_SCALE * beta[index[n]]) for n in present}


def resamples(units: Sequence[Hashable], n_boot: int, seed: int = 0) -> list[list[Hashable]]:
    """`n_boot` resamples (with replacement) of the units, the same ones for the same seed."""
    rng = np.random.default_rng(seed)
    units = list(units)
    return [[units[i] for i in rng.integers(0, len(units), len(units))] for _ in range(n_boot)]


def bootstrap(units: Sequence[Hashable], statistic: Callable[[list[Hashable]], dict[str, float]],
              n_boot: int, seed: int = 0) -> dict[str, list[float]]:
    """Values of `statistic` over `n_boot` resamples of the units, keyed like its output."""
    samples: dict[str, list[float]] = defaultdict(list)
    for pick in resamples(units, n_boot, seed):
        for key, value in statistic(pick).items():
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                samples[key].append(value)
    return dict(samples)


def percentile_ci(values: Sequence[float], level: float = 0.95) -> list[float] | None:
    if len(values) < 2:
        return None
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]


def bt_with_ci(battles_by_unit: dict[Hashable, list[Battle]], names: Sequence[str], anchor: str | None,
               n_boot: int, seed: int = 0) -> tuple[dict[str, float], dict[str, list[float] | None], dict[str, list[float]]]:
    """Strengths, 95% CIs from resampling the prompts (units), and the bootstrap samples themselves."""
    def fit(units):
        return fit_bradley_terry([b for u in units for b in battles_by_unit[u]], names, anchor)

    units = sorted(battles_by_unit, key=str)  # resamples must not depend on dict order (set order varies by process)
    point = fit(units)
    samples = bootstrap(units, fit, n_boot, seed) if units else {}
    return point, {n: percentile_ci(samples.get(n, [])) for n in point}, samples


def mean_with_ci(values_by_unit: dict[Hashable, float], n_boot: int, seed: int = 0) -> tuple[float | None, list[float] | None]:
    values = np.array(list(values_by_unit.values()), dtype=float)
    if values.size == 0:
        return None, None
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (n_boot, values.size))].mean(axis=1)
    return float(values.mean()), percentile_ci(means)


def battles_from_scores(scores: dict[str, dict[Hashable, float]], tie_margin: float) -> dict[Hashable, list[Battle]]:
    """Every pair of targets on every unit both were scored on; closer than `tie_margin` is a tie."""
    units: dict[Hashable, list[Battle]] = defaultdict(list)
    names = sorted(scores)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for unit in scores[a].keys() & scores[b].keys():
                diff = scores[a][unit] - scores[b][unit]
                units[unit].append((a, b, 0.5 if abs(diff) <= tie_margin else float(diff > 0)))
    return dict(units)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b (scipy); None when fewer than two items or a constant ranking leaves it undefined."""
    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    tau = stats.kendalltau(x, y).statistic
    return None if math.isnan(tau) else float(tau)


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    rho = stats.spearmanr(x, y).statistic
    return None if math.isnan(rho) else float(rho)


def krippendorff_alpha(reliability: Sequence[Sequence[float]], level: str = "interval") -> float | None:
    """Krippendorff's alpha (the `krippendorff` package); rows are raters, columns units, NaN = missing."""
    import krippendorff

    data = np.asarray(reliability, dtype=float)
    if data.ndim != 2 or data.shape[0] < 2:
        return None
    pairable = (~np.isnan(data)).sum(axis=0) >= 2
    if pairable.sum() < 1 or len(np.unique(data[:, pairable][~np.isnan(data[:, pairable])])) < 2:
        return None  # no pair of ratings, or a single value everywhere: alpha is undefined
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement=level))


def position_consistency(records: Sequence[dict]) -> dict[str, float | int | None]:
    """How often a judge's verdict survives swapping the two answers, over pairwise records
    (`question_id`, `first`, `second`, `winner` target or "tie", `winner_position` "A"/"B"/"tie").

    Also the share of decisive verdicts that went to the answer shown first (0.5 = no position bias).
    """
    by_battle: dict[Hashable, dict[str, str]] = defaultdict(dict)
    first_wins = decisive = 0
    for r in records:
        by_battle[(r["question_id"], frozenset((r["first"], r["second"])))][r["first"]] = r["winner"]
        if r["winner_position"] in ("A", "B"):
            decisive += 1
            first_wins += r["winner_position"] == "A"
    both = [orders for orders in by_battle.values() if len(orders) == 2]
    consistent = sum(len(set(orders.values())) == 1 for orders in both)
    return {"consistency": consistent / len(both) if both else None, "pairs": len(both),
            "first_position_win_rate": first_wins / decisive if decisive else None}


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names not dominated in (quality higher is better, energy lower is better)."""
    front = []
    for name, (q, e) in points.items():
        dominated = any(q2 >= q and e2 <= e and (q2 > q or e2 < e) for other, (q2, e2) in points.items() if other != name)
        if not dominated:
            front.append(name)
    return sorted(front, key=lambda n: points[n][1])
