"""judge_validity.md: the judge's validity figures against their goals, and what they mean for the panel."""

from __future__ import annotations

from typing import Any

from eval.validity_stats import ADJACENT, LEVELS


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _ci(ci: list[float] | None) -> str:
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "n/a"


def render_markdown(result: dict[str, Any]) -> str:
    judge, planted, rank, pair, parse = (result["judge"], result["planted"], result["rank_recovery"],
                                         result["pairwise"], result["malformed"])
    verdict = result["assessment"]
    lines = [
        f"# Judge validity: {judge['name']} ({judge['model'] or 'the endpoint base model'})", "",
        f"**{'PASS' if verdict['passed'] else 'FAIL'}**: "
        + ("every goal is met; the judge can sit on the panel." if verdict["passed"] else
           "keep this judge out of the panel, or treat its verdicts as noise. A trustworthy panel needs a judge "
           "that passes here: a larger model on an endpoint (SUPPORTKIT_JUDGE_URL), validated with this command."),
        "",
        f"Planted answers for {planted['questions']} questions, levels best first: {', '.join(LEVELS)}; "
        f"pairwise on {planted['pairwise_questions']} of them (neighbouring levels, both orders). "
        f"Judge `{judge['url']}`, rubric verdict `{judge['rubric_verdict']}`, max_tokens {judge['max_tokens']}, "
        f"temperature {judge['temperature']}, re-asks {judge['parse_retries']}.", "",
        "| goal | figure | target | met |", "| --- | --- | --- | --- |",
    ]
    for name, check in verdict["checks"].items():
        lines.append(f"| {name} | {_f(check['figure'])} | {check['goal']} | {'yes' if check['passed'] else 'no'} |")
    lines += ["", "## Rank recovery (rubric)", "",
              f"Mean within-question Kendall tau-b {_f(rank.get('kendall_tau'))}, 95% CI {_ci(rank.get('kendall_tau_ci'))} "
              f"over {rank.get('questions', 0)} questions (bootstrap over questions).", ""]
    if rank.get("mean_score_by_level"):
        lines += ["| level | mean score |", "| --- | --- |"]
        lines += [f"| {lv} | {_f(rank['mean_score_by_level'][lv])} |" for lv in LEVELS]
        lines += ["", "| in order (score strictly higher) | share of questions |", "| --- | --- |"]
        lines += [f"| {a} > {b} | {_f(rank['separated'][f'{a}>{b}'])} |" for a, b in ADJACENT]
    if pair:
        lines += ["", "## Pairwise", "",
                  f"Position consistency {_f(pair['position_consistency'])} (CI {_ci(pair['position_consistency_ci'])}) "
                  f"over {pair['pairs_both_orders']} pairs judged in both orders; the planted better answer preferred "
                  f"in {_f(pair['prefers_better'])} of {pair['verdicts']} verdicts; position A won "
                  f"{_f(pair['first_position_win_rate'])} of decisive verdicts (0.5 = no position bias)."]
    lines += ["", "## Verdicts", "",
              f"{parse['missing']} of {parse['verdicts']} missing (malformed after every re-ask): rate "
              f"{_f(parse['malformed_rate'], 3)}; {parse['needed_reask']} needed a re-ask. By protocol: "
              + ", ".join(f"{k} {_f(v, 3)}" for k, v in parse.get("by_protocol", {}).items()) + ".", "",
              f"Run: `{result['run']['command']}` on {result['run']['date']} ({result['run']['machine']}), "
              f"{result['run']['wall_s_this_run']} s for this run.", ""]
    return "\n".join(lines)
