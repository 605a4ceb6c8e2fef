"""The report's PNG plots (matplotlib, Agg backend): ranking, judge agreement, rank vs val loss, quality vs energy."""

from __future__ import annotations

from pathlib import Path
from eval.ranking import Ranking

PLOTS = {
    "ranking": "plot_ranking.png",
    "agreement": "plot_judge_agreement.png",
    "val_loss": "plot_rank_vs_val_loss.png",
    "energy": "plot_quality_vs_energy.png",
}


def _figure(width: float = 7, height: float = 4, ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(1, ncols, figsize=(width, height), dpi=100)


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def plot_ranking(result: Ranking, path: Path) -> Path:
    rows = [r for r in result.targets if r.score is not None][::-1]
    plt, fig, ax = _figure(7, max(2.5, 0.45 * len(rows) + 1.2))
    for y, r in enumerate(rows):
        lo, hi = r.ci or (r.score, r.score)
        ax.errorbar(r.score, y, xerr=[[r.score - lo], [hi - r.score]], fmt="o", capsize=4,
                    color="tab:orange" if r.is_anchor else "tab:blue")
    ax.set_yticks(range(len(rows)), [r.name for r in rows])
    ax.axvline(1000, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("panel score (Bradley-Terry, Elo scale; anchor = 1000) with 95% CI")
    ax.set_title("Ranking")
    return _save(plt, fig, path)


def plot_agreement(result: Ranking, path: Path) -> Path:
    judges = [j for j, v in result.judges.items() if len(v.scores) >= 2]
    plt, fig, ax = _figure(5 + 0.3 * len(judges), 4)
    import numpy as np

    if len(judges) < 2:
        ax.text(0.5, 0.5, "fewer than two judges ranked the targets", ha="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _save(plt, fig, path)
    taus = result.agreement.kendall_tau
    matrix = np.full((len(judges), len(judges)), np.nan)
    for i, a in enumerate(judges):
        for k, b in enumerate(judges):
            value = 1.0 if a == b else taus.get(f"{a} vs {b}", taus.get(f"{b} vs {a}"))
            matrix[i, k] = np.nan if value is None else value
    image = ax.imshow(matrix, vmin=-1, vmax=1, cmap="RdBu")
    for i in range(len(judges)):
        for k in range(len(judges)):
            if not np.isnan(matrix[i, k]):
                ax.text(k, i, f"{matrix[i, k]:.2f}", ha="center", va="center")
    ax.set_xticks(range(len(judges)), judges, rotation=30, ha="right")
    ax.set_yticks(range(len(judges)), judges)
    fig.colorbar(image, ax=ax, label="Kendall tau between the judges' rankings")
    ax.set_title("Judge agreement")
    return _save(plt, fig, path)


def plot_val_loss(result: Ranking, path: Path) -> Path:
    plt, fig, ax = _figure(6, 4)
    rows = [r for r in result.targets if r.val_loss is not None and r.rank]
    val_order = {r.name: i for i, r in enumerate(sorted(rows, key=lambda r: r.val_loss), 1)}
    for r in rows:
        ax.scatter(val_order[r.name], r.rank, color="tab:blue")
        ax.annotate(r.name, (val_order[r.name], r.rank), textcoords="offset points", xytext=(4, 4), fontsize=8)
    tau = result.val_loss_correlation.kendall_tau
    ax.set_title("Panel rank vs validation-loss rank" + (f" (Kendall tau {tau:.2f})" if tau is not None else ""))
    ax.set_xlabel("rank by validation loss (1 = lowest)")
    ax.set_ylabel("panel rank (1 = best)")
    if not rows:
        ax.text(0.5, 0.5, "no validation loss in the adapters' manifests", ha="center", transform=ax.transAxes)
    return _save(plt, fig, path)


def plot_energy(result: Ranking, path: Path) -> Path:
    plt, fig, axes = _figure(10, 4, ncols=2)
    for ax, field, label in ((axes[0], "joules_per_answer", "energy per answer (J)"),
                             (axes[1], "train_kwh", "training energy (kWh)")):
        rows = [r for r in result.targets if r.score is not None and getattr(r, field) is not None]
        front = set(result.pareto[field])
        for r in rows:
            ax.scatter(getattr(r, field), r.score, color="tab:red" if r.name in front else "tab:blue")
            ax.annotate(r.name, (getattr(r, field), r.score), textcoords="offset points", xytext=(4, 4), fontsize=8)
        line = sorted((getattr(r, field), r.score) for r in rows if r.name in front)
        if line:
            ax.step([x for x, _ in line], [y for _, y in line], where="post", color="tab:red", lw=1)
        if not rows:
            ax.text(0.5, 0.5, "not reported", ha="center", transform=ax.transAxes)
        ax.set_xlabel(label)
        ax.set_ylabel("panel score")
    fig.suptitle("Quality vs energy (red: Pareto front)")
    return _save(plt, fig, path)


def render_plots(result: Ranking, out: Path) -> dict[str, Path]:
    return {
        "ranking": plot_ranking(result, out / PLOTS["ranking"]),
        "agreement": plot_agreement(result, out / PLOTS["agreement"]),
        "val_loss": plot_val_loss(result, out / PLOTS["val_loss"]),
        "energy": plot_energy(result, out / PLOTS["energy"]),
    }
