"""`supportkit eval ...`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Judge live endpoints with a panel and rank adapters.", no_args_is_help=True)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(1)


@app.command()
def run(
    endpoint: Optional[str] = typer.Option(None, help="Base URL of the endpoint under test [env SUPPORTKIT_EVAL_ENDPOINT]"),
    panel: Optional[Path] = typer.Option(None, help="Panel YAML (default: eval/configs/panel-local.yaml)"),
    out: Optional[Path] = typer.Option(None, help="Output directory; re-running in it asks only what is missing"),
    targets: Optional[str] = typer.Option(None, help="Comma-separated adapter names and/or `base` (default: all)"),
    questions: Optional[list[Path]] = typer.Option(None, help="Question file(s), JSONL (repeatable; default: the demo set)"),
    limit: Optional[int] = typer.Option(None, min=1, help="Ask only the first N questions"),
    api: Optional[str] = typer.Option(None, help="openai (default) or tgi"),
    adapters: Optional[Path] = typer.Option(None, help="Adapter store to read manifests from (val loss, training energy)"),
    concurrency: Optional[int] = typer.Option(None, min=1, help="Answers in flight to the endpoint"),
    timeout: Optional[float] = typer.Option(None, min=1, help="Seconds to wait for one answer (default 600)"),
) -> None:
    """Ask every target every question, judge the answers with the panel, and write the ranking report."""
    from pydantic import ValidationError

    from eval.job import JobError, run_job
    from eval.judging import JudgingError
    from eval.panel import PanelError
    from eval.questions import QuestionFileError
    from eval.settings import EvalSettings
    from eval.targets import TargetError

    try:
        settings = EvalSettings.from_cli(
            endpoint=endpoint, panel=panel, out=out, limit=limit, api=api, adapters=adapters,
            concurrency=concurrency, timeout_s=timeout, questions=questions or None,
            targets=[t.strip() for t in targets.split(",") if t.strip()] if targets else None,
        )
    except ValidationError as exc:
        _fail(str(exc))
    try:
        files = run_job(settings, log=lambda m: typer.echo(m, err=True))
    except (JobError, JudgingError, PanelError, QuestionFileError, TargetError) as exc:
        _fail(str(exc))
    for path in files.values():
        typer.echo(str(path))


@app.command()
def report(out: Path = typer.Argument(..., help="Directory of an eval run")) -> None:
    """Re-render statistics, plots and reports from stored answers and judgments, asking nothing."""
    from eval.job import JobError, render

    try:
        files = render(out)
    except JobError as exc:
        _fail(str(exc))
    for path in files.values():
        typer.echo(str(path))


@app.command("validate-judge")
def validate_judge(
    endpoint: str = typer.Option(..., help="Base URL of the judge's endpoint (OpenAI-compatible, or TGI with the panel's api)"),
    panel: Optional[Path] = typer.Option(None, help="Panel YAML whose judge is validated (default: eval/configs/panel-offline.yaml)"),
    judge: Optional[str] = typer.Option(None, help="Name of the LLM judge in the panel (default: its first LLM judge)"),
    model: Optional[str] = typer.Option(None, help="Model name at the endpoint (default: the panel's, else the endpoint's base model)"),
    out: Path = typer.Option(Path("judge-validity"), help="Output directory; re-running in it asks only what is missing"),
    questions: int = typer.Option(12, min=1, help="Planted questions judged with the rubric (5 answers each)"),
    pairwise_questions: int = typer.Option(6, min=0, help="Of those, how many are also judged pairwise (3 pairs x 2 orders)"),
    concurrency: Optional[int] = typer.Option(None, min=1, help="Verdicts in flight (default: the judge's concurrency)"),
    protocols: Optional[str] = typer.Option(None, help="rubric, pairwise or rubric,pairwise (default: the judge's)"),
    no_ask: bool = typer.Option(False, "--no-ask", help="Ask nothing: figures from the verdicts already in --out (give --model)"),
    min_tau: float = typer.Option(0.5, help="Goal: the lower end of the rank-recovery tau's 95% CI"),
    min_consistency: float = typer.Option(0.8, help="Goal: pairwise position consistency"),
    max_malformed: float = typer.Option(0.05, help="Goal: share of verdicts missing after re-asks"),
) -> None:
    """Measure an LLM judge on planted answers of known quality order; write judge_validity.json and .md."""
    import sys

    from eval.judge_validity import ValidityError, validate
    from eval.judging import JudgingError, judge_model
    from eval.panel import CONFIGS, PanelError, load_panel
    from eval.validity_stats import Goals

    try:
        config_panel = load_panel(panel or CONFIGS / "panel-offline.yaml")
        llm = [j for j in config_panel.judges if j.kind == "llm" and (judge is None or j.name == judge)]
        if not llm:
            _fail(f"the panel has no LLM judge{f' named {judge!r}' if judge else ''}")
        updates = {"url": endpoint, **({"model": model} if model else {}),
                   **({"concurrency": concurrency} if concurrency else {})}
        if protocols:
            asked = [p.strip() for p in protocols.split(",") if p.strip()]
            if not asked or set(asked) - {"rubric", "pairwise"}:
                _fail(f"--protocols takes rubric and/or pairwise, not {protocols!r}")
            updates["protocols"] = asked
        config = llm[0].model_copy(update=updates)
        if no_ask and not config.model:
            _fail("--no-ask needs --model (the endpoint is not asked for its model)")
        files = validate(config, config_panel, config.model if no_ask else judge_model(config), out, questions=questions,
                         pairwise_questions=pairwise_questions,
                         goals=Goals(min_tau, min_consistency, max_malformed),
                         command="supportkit " + " ".join(sys.argv[1:]), progress=lambda m: typer.echo(m, err=True),
                         ask_missing=not no_ask)
    except (JudgingError, PanelError, ValidityError) as exc:
        _fail(str(exc))
    import json

    passed = json.loads(files["json"].read_text())["assessment"]["passed"]
    typer.echo(f"judge {config.name}: {'PASS' if passed else 'FAIL'}", err=True)
    for path in files.values():
        typer.echo(str(path))


if __name__ == "__main__":
    app()
