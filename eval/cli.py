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


if __name__ == "__main__":
    app()
