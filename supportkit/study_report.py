"""The study's report: study.json, report.md, a self-contained report.html and PNG plots.

Numbers come from the stored artefacts only: the adapters' manifests (configuration, losses, training energy)
and the eval job's ranking.json (panel scores and CIs, energy per answer, Kendall tau, Pareto fronts), which
it computes from answers.jsonl and judgments.jsonl. The eval job's own markdown/HTML renderers and plots are
reused; the grouped plots (target modules, rank) and the recommendation are the study's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eval.plots import plot_energy, plot_val_loss
from eval.ranking import Ranking
from eval.report import to_html, to_markdown

PLOTS = {
    "ranking": "plot_ranking.png",
    "val_loss": "plot_rank_vs_val_loss.png",
    "energy": "plot_quality_vs_energy.png",
    "modules": "plot_effect_of_modules.png",
    "rank": "plot_effect_of_rank.png",
    "curves": "plot_training_curves.png",
}
FRONTS = {"joules_per_answer": "per answer", "train_kwh": "training"}
MODULE_SETS = {("q", "v"): "qv", ("k", "o", "q", "v"): "qkvo",
               ("down", "gate", "k", "o", "q", "up", "v"): "all"}


def fmt(value: Any, spec: str) -> str:
    """The one number format of the report (the tests format stored values the same way)."""
    return "-" if value is None else format(value, spec)


def module_set(modules: list[str] | None) -> str | None:
    if not modules:
        return None
    short = tuple(sorted(m.removesuffix("_proj") for m in modules))
    return MODULE_SETS.get(short, "+".join(short))


def collect(store: Path, ranking: Ranking, names: list[str]) -> list[dict]:
    """One row per study configuration (manifest + ranking) and one for the base model."""
    from common.manifest import read_losses, read_manifest

    by_target = {t.name: t for t in ranking.targets}
    rows = []
    base = next((t for t in ranking.targets if t.is_base), None)
    for name in names + ([base.name] if base else []):
        t = by_target.get(name)
        row: dict[str, Any] = {"name": name, "is_base": bool(t and t.is_base)}
        if not row["is_base"]:
            m = read_manifest(store / name)
            lora, tr, met, en = m.lora, m.training, m.metrics, m.energy
            row.update(
                r=lora.r, alpha=lora.alpha, modules=module_set(lora.target_modules),
                learning_rate=tr.learning_rate, epochs=tr.epochs, steps=tr.steps,
                train_loss=met.train_loss, val_loss=met.val_loss, perplexity=met.perplexity,
                train_kwh=en.kwh.get("total") if en else None,
                train_kwh_sources=dict(en.sources) if en else {}, train_duration_s=en.duration_s if en else None,
                co2_kg=en.co2_kg if en else None, curves=read_losses(store / name),
            )
            row["untrained_val_loss"] = untrained_val_loss(row["curves"])
        row.update(
            score=t and t.score, ci=t and t.ci, rank=t and t.rank, answers=t and t.answers,
            joules_per_answer=t and t.joules_per_answer, answer_energy_sources=(t and t.energy_source) or [],
            similarity={j: v.mean for j, v in t.reference_similarity.items()} if t else {},
            pareto=t.pareto if t else {},
        )
        rows.append(row)
    return rows


def untrained_val_loss(curves: dict | None) -> float | None:
    """The validation loss at step 0 (a run with eval_on_start): the untrained model's, as LoRA starts at zero."""
    return next((loss for step, loss in (curves or {}).get("val", []) if step == 0), None)


def plateau_summary(rows: list[dict], min_steps: int = 100, factor: float = 1 / 3) -> dict[str, Any]:
    """How many configurations trained at least `min_steps` optimizer steps, and how many ended below `factor`
    of the untrained model's validation loss (the laptop profile's bar for a trained adapter)."""
    adapters = [r for r in rows if not r["is_base"]]
    untrained = next((r["untrained_val_loss"] for r in adapters if r.get("untrained_val_loss") is not None), None)
    below = [r["name"] for r in adapters
             if untrained is not None and r.get("val_loss") is not None and r["val_loss"] < factor * untrained]
    return {"configurations": len(adapters), "min_steps": min_steps, "factor": factor,
            "with_min_steps": sum((r.get("steps") or 0) >= min_steps for r in adapters),
            "untrained_val_loss": untrained, "below_factor": below}


def energy_sources(sources: dict | list | None) -> str:
    """`estimate` when every component has the same source, else `cpu rapl, ram estimate, ...`."""
    if isinstance(sources, dict):
        if len(set(sources.values())) == 1:
            return next(iter(sources.values()))
        return ", ".join(f"{k} {v}" for k, v in sorted(sources.items()) if k != "total") or "-"
    return ", ".join(sources or []) or "-"


def neighbours(rows: list[dict]) -> list[dict]:
    """Each pair of neighbours in the panel's ranking, and whether the upper one's 95% CI lies wholly above the
    lower one's (separated: the order between them is shown, not noise)."""
    judged = sorted([r for r in rows if r["rank"] and r["ci"]], key=lambda r: r["rank"])
    return [{"upper": a["name"], "lower": b["name"], "upper_ci": a["ci"], "lower_ci": b["ci"],
             "separated": a["ci"][0] > b["ci"][1]} for a, b in zip(judged, judged[1:])]


def certainty(best: dict, rows: list[dict]) -> str:
    """How sure the recommendation is: high when the best-judged configuration's CI lies above every other
    target's (the base model's included), moderate when it lies above the base model's only, low otherwise."""
    others = [r for r in rows if r is not best and r["ci"]]
    base = [r for r in others if r["is_base"]]
    if not best["ci"]:
        return "low"
    if others and all(best["ci"][0] > r["ci"][1] for r in others):
        return "high"
    if base and best["ci"][0] > base[0]["ci"][1]:
        return "moderate"
    return "low"


CERTAINTY = {
    "high": "Certainty: high: its confidence interval lies above every other configuration's and the base model's.",
    "moderate": "Certainty: moderate: it is shown to beat the base model, but not to beat every other configuration.",
    "low": "Certainty: low: its confidence interval overlaps the base model's, so this ranking does not show that "
           "any configuration helps; more questions, a longer training or a validated judge are needed.",
}


def recommend(rows: list[dict]) -> dict[str, Any]:
    """The plainly-worded conclusion: the configurations on the quality-energy Pareto fronts."""
    adapters = [r for r in rows if not r["is_base"] and r["score"] is not None]
    base = next((r for r in rows if r["is_base"]), None)
    front_train = [r["name"] for r in adapters if r["pareto"].get("train_kwh")]
    front_answer = [r["name"] for r in rows if r["pareto"].get("joules_per_answer") and not r["is_base"]]
    both = [n for n in front_train if n in front_answer]
    lines = []
    if not adapters:
        return {"pareto_train_kwh": [], "pareto_joules_per_answer": [], "text": "No configuration was judged."}
    best = max(adapters, key=lambda r: r["score"])
    with_loss = [r for r in adapters if r.get("val_loss") is not None]
    lowest = min(with_loss, key=lambda r: r["val_loss"]) if with_loss else None
    if front_train:
        lines.append("Recommended (no other configuration is both better judged and cheaper to train): "
                     + "; ".join(f"{r['name']} (panel {fmt(r['score'], '.1f')}, {fmt(r['train_kwh'], '.4g')} kWh)"
                                 for r in adapters if r["name"] in front_train) + ".")
    if front_answer:
        lines.append("On the front of panel score against energy per answer: " + ", ".join(front_answer) + "."
                     + (f" On both fronts: {', '.join(both)}." if both else ""))
    lines.append(f"Best judged: {best['name']} (panel {fmt(best['score'], '.1f')}, 95% CI "
                 f"{_ci(best['ci'])})."
                 + (f" Lowest validation loss: {lowest['name']} ({fmt(lowest['val_loss'], '.4f')}), ranked "
                    f"{lowest['rank']} of {len([r for r in rows if r['rank']])} by the panel (base model included)." if lowest else ""))
    if base and base["score"] is not None and base["score"] >= best["score"]:
        lines.append(f"No configuration is judged better than the base model {base['name']} at this scale.")
    elif base and base["score"] is not None and best["ci"] and best["ci"][0] <= base["score"]:
        lines.append(f"The best-judged configuration's CI includes the base model's score ({fmt(base['score'], '.1f')}): "
                     f"at this scale no configuration is shown to beat the base model {base['name']}.")
    overlapping = [r["name"] for r in adapters if r is not best and r["ci"] and best["ci"] and r["ci"][1] >= best["ci"][0]]
    if overlapping:
        lines.append(f"The confidence interval of the best-judged configuration overlaps those of {len(overlapping)} "
                     f"other(s): more questions (or judges) are needed to separate them.")
    level = certainty(best, rows)
    lines.append(CERTAINTY[level])
    return {"pareto_train_kwh": front_train, "pareto_joules_per_answer": front_answer, "best": best["name"],
            "lowest_val_loss": lowest["name"] if lowest else None, "certainty": level, "text": " ".join(lines)}


def _ci(ci: list[float] | None) -> str:
    return f"[{ci[0]:.1f}, {ci[1]:.1f}]" if ci else "-"


def plot_grouped(rows: list[dict], key: str, order: list, colour_key: str, title: str, path: Path) -> Path:
    """Val loss, panel score and training energy of each configuration, grouped by `key` (mean as a bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if not r["is_base"]]
    groups = [g for g in order if any(r[key] == g for r in rows)] + sorted({r[key] for r in rows} - set(order), key=str)
    colours = {c: f"C{i}" for i, c in enumerate(sorted({r[colour_key] for r in rows}, key=str))}
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), dpi=100)
    for ax, field, label in zip(axes, ("val_loss", "score", "train_kwh"),
                                ("validation loss", "panel score (anchor = 1000)", "training energy (kWh)")):
        for x, g in enumerate(groups):
            values = [(r[field], r[colour_key]) for r in rows if r[key] == g and r.get(field) is not None]
            if values:  # the group's mean as a line: scores and losses sit far from zero, bars would hide them
                ax.hlines(sum(v for v, _ in values) / len(values), x - 0.3, x + 0.3, color="grey", lw=2)
            for k, (v, c) in enumerate(values):
                ax.scatter(x + (k - (len(values) - 1) / 2) * 0.08, v, color=colours[c], zorder=3, s=18)
        ax.set_xticks(range(len(groups)), [str(g) for g in groups])
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_ylabel(label)
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=f"{colour_key}={k}") for k, c in colours.items()]
    handles.append(plt.Line2D([], [], color="grey", lw=2, label="group mean"))
    fig.legend(handles=handles, loc="center right", fontsize=8)
    fig.suptitle(title + " (dots: each configuration)")
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def plot_curves(rows: list[dict], path: Path, factor: float = 1 / 3) -> Path:
    """Every configuration's validation-loss curve (train loss faint), and the bar at `factor` x untrained."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_val, ax_train) = plt.subplots(1, 2, figsize=(12, 4), dpi=100)
    adapters = [r for r in rows if not r["is_base"] and r.get("curves")]
    for i, r in enumerate(adapters):
        colour = f"C{i % 10}"
        if r["curves"].get("val"):
            ax_val.plot(*zip(*r["curves"]["val"]), marker="o", ms=3, color=colour, label=r["name"])
        if r["curves"].get("train"):
            ax_train.plot(*zip(*r["curves"]["train"]), color=colour, alpha=0.7, lw=1)
    untrained = plateau_summary(rows, factor=factor)["untrained_val_loss"]
    if untrained is not None:
        ax_val.axhline(untrained * factor, color="grey", ls="--", lw=1, label=f"{factor:.2g} x untrained")
    for ax, label in ((ax_val, "validation loss"), (ax_train, "training loss")):
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if adapters:
        ax_val.legend(fontsize=7, ncol=2)
    fig.suptitle("Training curves (assistant tokens)")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def write_report(out: Path, eval_dir: Path, store: Path, names: list[str], meta: dict) -> dict[str, Path]:
    from eval.plots import plot_ranking

    ranking = Ranking.read(eval_dir / "ranking.json")
    rows = collect(store, ranking, names)
    rec = recommend(rows)
    images = {
        "ranking": plot_ranking(ranking, out / PLOTS["ranking"]),
        "val_loss": plot_val_loss(ranking, out / PLOTS["val_loss"]),
        "energy": plot_energy(ranking, out / PLOTS["energy"]),
        "modules": plot_grouped(rows, "modules", ["qv", "qkvo", "all"], "r", "Effect of the target-module set",
                                out / PLOTS["modules"]),
        "rank": plot_grouped(rows, "r", [16, 32], "modules", "Effect of the LoRA rank", out / PLOTS["rank"]),
        "curves": plot_curves(rows, out / PLOTS["curves"]),
    }
    sections = ranking.to_json()
    corr = sections["val_loss_correlation"]
    adapters = [r for r in rows if not r["is_base"]]
    totals = {
        "train_kwh": sum(r["train_kwh"] or 0 for r in adapters),
        "train_duration_s": sum(r["train_duration_s"] or 0 for r in adapters),
        "answer_joules": sum((r["joules_per_answer"] or 0) * (r["answers"] or 0) for r in rows),
        "answers": sum(r["answers"] or 0 for r in rows),
    }
    study = {**meta, "configurations": rows, "val_loss_correlation": corr, "pareto": sections["pareto"],
             "judges": sections["judges"], "questions": ranking.questions, "anchor": ranking.anchor,
             "bootstrap": ranking.bootstrap, "totals": totals, "recommendation": rec, "neighbours": neighbours(rows),
             "plateau": plateau_summary(rows),
             "files": {"eval": str(eval_dir), "store": str(store)}}
    (out / "study.json").write_text(json.dumps(study, indent=2, ensure_ascii=False) + "\n")
    doc = blocks(study)
    (out / "report.md").write_text(markdown(doc), encoding="utf-8")
    page = to_html(doc, images).replace("<title>Adapter ranking</title>", "<title>LoRA study</title>")
    (out / "report.html").write_text(page.replace("max-width:1100px", "max-width:1500px"), encoding="utf-8")
    return {"study": out / "study.json", "report_md": out / "report.md", "report_html": out / "report.html", **images}


def plateau_text(p: dict | None) -> str:
    if not p:
        return "No loss curves were stored."
    text = f"{p['with_min_steps']} of {p['configurations']} configurations trained at least {p['min_steps']} optimizer steps. "
    if p["untrained_val_loss"] is None:
        return text + "The untrained model's validation loss was not measured (train with eval_on_start=true)."
    return text + (f"Untrained validation loss {p['untrained_val_loss']:.4f}; {len(p['below_factor'])} of "
                   f"{p['configurations']} ended below {p['factor']:.2g} of it"
                   + (f" ({', '.join(p['below_factor'])})." if p["below_factor"] else "."))


def markdown(doc: list[tuple]) -> str:
    """eval.report's markdown, with this report's own plot files."""
    parts = []
    for block in doc:
        if block[0] == "img":
            parts.append(f"![{block[2]}]({PLOTS[block[1]]})\n")
        else:
            parts.append(to_markdown([block]))
    return "\n".join(parts)


def blocks(study: dict) -> list[tuple]:
    """The report as blocks (eval.report's format), rendered to markdown and HTML alike."""
    rows = study["configurations"]
    judged = sorted([r for r in rows if r["rank"]], key=lambda r: r["rank"]) + [r for r in rows if not r["rank"]]
    sim_judges = sorted({j for r in rows for j in r["similarity"]})
    corr = study["val_loss_correlation"]
    t = study["totals"]
    timings = study.get("timings", {})
    steps = ", ".join(f"{k.removesuffix('_s')} {v:.0f} s" for k, v in timings.items() if k != "total_s")
    data = study.get("data", {})
    doc: list[tuple] = [
        ("h1", f"LoRA study: {len([r for r in rows if not r['is_base']])} configurations on {study.get('model_name', '?')}"),
        ("p", f"Profile `{study.get('profile')}`. Data: {data.get('conversations', '?')} conversations "
              f"({data.get('generator', '?')} generator; splits {json.dumps(data.get('by_split', {}))}). "
              f"Judged on {study['questions']} held-out test questions by {len(study['judges'])} judge(s) "
              f"({', '.join(study['judges'])}); panel scores are Bradley-Terry strengths on the Elo scale with the "
              f"base model `{study['anchor']}` at 1000, 95% CIs from {study['bootstrap']} bootstrap resamples of the questions."),
        ("p", (f"First started {study['started_at']}, finished {study.get('finished_at')}. " if study.get("started_at") else "")
              + f"Wall time of the last run of the study (a re-run reuses the finished steps): {fmt(timings.get('total_s'), '.0f')} s "
              f"({steps or '-'}). "
              f"Training energy of all configurations: {fmt(t['train_kwh'], '.4g')} kWh over "
              f"{fmt(t['train_duration_s'], '.0f')} s of training; serving energy of the {t['answers']} answers under "
              f"test: {fmt(t['answer_joules'], '.4g')} J."),
        ("h2", "Configurations"),
        ("table", ["rank", "configuration", "r", "alpha", "modules", "lr", "epochs", "steps", "val loss", "perplexity",
                   "train kWh", "kWh source", "J/answer", "J source", "panel score", "95% CI",
                   *[f"similarity ({j})" for j in sim_judges], "Pareto front"],
         [[fmt(r["rank"], "d"), r["name"] + (" (base)" if r["is_base"] else ""), fmt(r.get("r"), "d"),
           fmt(r.get("alpha"), "g"), r.get("modules") or "-", fmt(r.get("learning_rate"), "g"), fmt(r.get("epochs"), "g"),
           fmt(r.get("steps"), "d"), fmt(r.get("val_loss"), ".4f"), fmt(r.get("perplexity"), ".3f"),
           fmt(r.get("train_kwh"), ".4g"), energy_sources(r.get("train_kwh_sources")), fmt(r["joules_per_answer"], ".4g"),
           energy_sources(r["answer_energy_sources"]), fmt(r["score"], ".1f"), _ci(r["ci"]),
           *[fmt(r["similarity"].get(j), ".4f") for j in sim_judges],
           ", ".join(FRONTS[k] for k, v in r["pareto"].items() if v) or "-"] for r in judged]),
        ("p", "Training energy: kWh of the whole run by codecarbon and the kit's meter, each component's source "
              "named (nvml or rapl: measured by a counter; estimate: a power model). J/answer: mean energy the server "
              "reported per answer under test."),
        ("h2", "Training curves"),
        ("p", plateau_text(study.get("plateau"))),
        ("img", "curves", "Validation and training loss of every configuration by optimizer step"),
        ("img", "ranking", "Panel scores with 95% confidence intervals"),
        ("h2", "Neighbours in the ranking"),
        ("table", ["upper", "its 95% CI", "lower", "the lower's 95% CI", "separated"],
         [[n["upper"], _ci(n["upper_ci"]), n["lower"], _ci(n["lower_ci"]), "yes" if n["separated"] else "no"]
          for n in study.get("neighbours", [])]),
        ("p", f"{sum(n['separated'] for n in study.get('neighbours', []))} of {len(study.get('neighbours', []))} "
              "neighbouring pairs are separated (the upper one's CI lies wholly above the lower one's); where they "
              "are not, the order between them may be noise."),
        ("h2", "Judges"),
        ("table", ["judge", "kind", "model", "judgments", "missing"],
         [[name, j["kind"], str(j.get("model") or "-"), str(j["judgments"]), str(j["missing"])]
          for name, j in study["judges"].items()]),
        ("p", "A missing judgment is a verdict that stayed malformed; it is never scored."),
        ("h2", "Judge rank vs validation-loss rank"),
        ("p", f"Kendall tau between the panel's ranking and the ranking by lower validation loss, over "
              f"{corr['targets']} configurations: {fmt(corr['kendall_tau'], '.2f')} (95% CI "
              f"{'[' + ', '.join(format(x, '.2f') for x in corr['kendall_tau_ci']) + ']' if corr['kendall_tau_ci'] else '-'}); "
              f"Spearman {fmt(corr['spearman'], '.2f')}. {corr['note']}."),
        ("img", "val_loss", "Panel rank against validation-loss rank"),
        ("h2", "Quality vs energy"),
        ("p", f"Pareto front (not beaten on both panel score and energy) by training energy: "
              f"{', '.join(study['pareto']['train_kwh']) or '-'}; by energy per answer: "
              f"{', '.join(study['pareto']['joules_per_answer']) or '-'}."),
        ("img", "energy", "Panel score against energy per answer and training energy, Pareto front in red"),
        ("h2", "Effect of the target-module set and of the rank"),
        ("img", "modules", "Val loss, panel score and training energy by target-module set"),
        ("img", "rank", "Val loss, panel score and training energy by LoRA rank"),
        ("h2", "Recommendation"),
        ("p", study["recommendation"]["text"]),
    ]
    return doc
