"""ranking.json, report.md and a self-contained report.html (plots embedded as base64 PNG).

Both documents are rendered from one list of blocks, so that they always say the same thing.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from eval.plots import PLOTS, render_plots
from eval.ranking import Ranking


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ci(ci: list[float] | None, digits: int = 1) -> str:
    return f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "-"


def _validity_blocks(judges: dict) -> list[tuple]:
    """Each LLM judge's validity on planted answers (`eval validate-judge`), or that it was not validated."""
    llm = {name: j for name, j in judges.items() if j.kind == "llm"}
    if not llm:
        return []
    rows = []
    for name, j in llm.items():
        v = j.validity
        if v is None or v.error:
            rows.append([name, _f(j.model), "not validated", "-", "-", "-", v.error if v else "no `validity` in the panel"])
        else:
            rows.append([name, _f(v.model), "pass" if v.passed else "FAIL",
                         f"{_f(v.kendall_tau, 2)} {_ci(v.kendall_tau_ci, 2)}", _f(v.position_consistency, 2),
                         _f(v.malformed_rate, 3), f"{v.questions} questions, {v.date or '-'}"])
    return [("h2", "Judge validity"),
            ("table", ["judge", "validated model", "verdict", "rank tau [95% CI]", "position consistency",
                       "malformed", "run"], rows),
            ("p", "From `supportkit eval validate-judge` on planted answers of known quality order (goals: tau CI low "
                  ">= 0.5, position consistency >= 0.8, malformed <= 5%). A judge that fails or was not validated "
                  "is noise: read the ranking from the judges that pass.")]


def blocks(result: Ranking, run_info: dict[str, Any]) -> list[tuple]:
    targets = result.targets
    judges = result.judges
    rubric_judges = sorted({j for t in targets for j in t.rubric})
    agreement = result.agreement
    out: list[tuple] = [
        ("h1", "Adapter ranking"),
        ("p", f"Endpoint {run_info.get('endpoint')} ({run_info.get('api')} route), {result.questions} questions, "
              f"{len(targets)} targets, anchor `{result.anchor}`. Scores are Bradley-Terry strengths on the Elo "
              f"scale (anchor = 1000) fitted on every judge's battles; 95% CIs from {result.bootstrap} bootstrap "
              f"resamples of the questions."),
        ("table", ["rank", "target", "score", "95% CI", *[f"rubric {j} (1-5)" for j in rubric_judges],
                   "val loss", "J/answer", "train kWh", "Pareto"],
         [[_f(t.rank), t.name + (" (anchor)" if t.is_anchor else ""), _f(t.score), _ci(t.ci),
           *[(_f(t.rubric[j].mean, 2) + " " + _ci(t.rubric[j].ci, 2))
             if j in t.rubric and t.rubric[j].mean is not None else "-" for j in rubric_judges],
           _f(t.val_loss, 4), _f(t.joules_per_answer, 2), _f(t.train_kwh, 3),
           ", ".join(k for k, v in t.pareto.items() if v) or "-"] for t in targets]),
        ("img", "ranking", "Panel scores with 95% confidence intervals"),
        ("h2", "Judges"),
        ("table", ["judge", "kind", "model", "judgments", "missing", "position consistency", "first-position wins",
                   "tokens in/out", "cost (USD)"],
         [[name, j.kind, _f(j.model), _f(j.judgments), _f(j.missing),
           _f(j.position.consistency if j.position else None, 2),
           _f(j.position.first_position_win_rate if j.position else None, 2),
           f"{j.prompt_tokens}/{j.completion_tokens}", f"{j.cost_usd:.4f}"] for name, j in judges.items()]),
        ("p", "A missing judgment is a verdict that stayed malformed after retries; it is left out, never scored. "
              "Position consistency: share of battles whose verdict survives swapping the answers."),
        *_validity_blocks(judges),
        ("h2", "Agreement between judges"),
        ("table", ["judges", "Kendall tau of their rankings"],
         [[pair, _f(tau, 2)] for pair, tau in agreement.kendall_tau.items()] or [["-", "-"]]),
        ("p", f"Krippendorff's alpha (interval) on rubric scores: {_f(agreement.alpha_rubric, 3)}; "
              f"on per-question preferences against the anchor: {_f(agreement.alpha_preferences, 3)}."),
        ("img", "agreement", "Kendall tau between the judges' rankings"),
        ("h2", "Panel vs validation loss"),
    ]
    corr = result.val_loss_correlation
    out.append(("p", f"Over {corr.targets} targets with a validation loss in their manifest: Kendall tau "
                     f"{_f(corr.kendall_tau, 2)} (95% CI {_ci(corr.kendall_tau_ci, 2)}), Spearman "
                     f"{_f(corr.spearman, 2)} (95% CI {_ci(corr.spearman_ci, 2)}). {corr.note}."))
    out.append(("img", "val_loss", "Panel rank against validation-loss rank"))
    out.append(("h2", "Quality vs energy"))
    pareto = result.pareto
    sources = sorted({s for t in targets for s in (t.energy_source or [])})
    out.append(("p", f"Pareto front by energy per answer: {', '.join(pareto['joules_per_answer']) or '-'}; "
                     f"by training energy: {', '.join(pareto['train_kwh']) or '-'}. Energy per answer is what the "
                     f"server reported (sources: {', '.join(sources) or 'none'})."))
    out.append(("img", "energy", "Panel score against energy, Pareto front in red"))
    return out


def to_markdown(doc: list[tuple]) -> str:
    lines = []
    for block in doc:
        kind = block[0]
        if kind in ("h1", "h2"):
            lines += [("# " if kind == "h1" else "## ") + block[1], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "table":
            headers, rows = block[1], block[2]
            lines.append("| " + " | ".join(headers) + " |")
            lines.append("|" + "---|" * len(headers))
            lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
            lines.append("")
        elif kind == "img":
            lines += [f"![{block[2]}]({PLOTS[block[1]]})", ""]
    return "\n".join(lines)


def to_html(doc: list[tuple], images: dict[str, Path]) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Adapter ranking</title><style>",
             "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
             "img{max-width:100%}</style></head><body>"]
    for block in doc:
        kind = block[0]
        if kind in ("h1", "h2", "p"):
            parts.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "table":
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in block[1]) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in block[2]]
            parts.append("</table>")
        elif kind == "img":
            data = base64.b64encode(images[block[1]].read_bytes()).decode()
            parts.append(f"<figure><img alt='{html.escape(block[2])}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{html.escape(block[2])}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(result: Ranking, run_info: dict[str, Any], out: Path) -> dict[str, Path]:
    out = Path(out)
    ranking = out / "ranking.json"
    ranking.write_text(json.dumps({"run": run_info, **result.to_json()}, indent=2, ensure_ascii=False) + "\n")
    images = render_plots(result, out)
    doc = blocks(result, run_info)
    (out / "report.md").write_text(to_markdown(doc), encoding="utf-8")
    (out / "report.html").write_text(to_html(doc, images), encoding="utf-8")
    return {"ranking": ranking, "report_md": out / "report.md", "report_html": out / "report.html", **images}
