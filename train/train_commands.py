"""`supportkit train run|sweep|report|validate`: argument parsing only; the work is in train/job.py and friends."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Opt = typer.Option


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg="red", err=True)
    raise typer.Exit(2)


def _run_one(cfg, settings, progress: bool, command: str | None = None) -> Path:
    from train.job import run_job
    from train.recipe import RecipeError

    try:
        return run_job(cfg, settings.out, settings.work_dir, command=command, progress=progress)
    except RecipeError as exc:
        _fail(str(exc))


def run(
    config: Annotated[Path, Opt(help="Run config YAML, or a sweep YAML with --index")],
    overrides: Annotated[Optional[list[str]], typer.Argument(help="key=value overrides, e.g. r=32 learning_rate=1e-4")] = None,
    index: Annotated[Optional[int], Opt(help="Run of a sweep file (default: $JOB_COMPLETION_INDEX)")] = None,
    out: Annotated[Optional[Path], Opt(help="Adapter store to publish into [env SUPPORTKIT_TRAIN_OUT; ./adapters]")] = None,
    work_dir: Annotated[Optional[Path], Opt(help="Checkpoint directory (default: cache/runs/NAME-CONFIGHASH)")] = None,
    progress: Annotated[bool, Opt(help="Progress bars")] = True,
) -> None:
    """Fine-tune one LoRA adapter; resumes from its last checkpoint if a previous attempt was killed."""
    from train.config import ConfigError, load_config

    try:
        cfg = load_config(config, index, overrides or [])
    except ConfigError as exc:
        _fail(str(exc))
    from train.settings import TrainSettings

    settings = TrainSettings.from_cli(out=out, work_dir=work_dir)
    path = _run_one(cfg, settings, progress)
    typer.echo(f"adapter written to {path}")


def sweep(
    config: Annotated[Path, Opt(help="Sweep YAML (defaults + runs)")] = Path(__file__).parent / "configs" / "sweep.yaml",
    overrides: Annotated[Optional[list[str]], typer.Argument(help="key=value overrides applied to every run")] = None,
    out: Annotated[Optional[Path], Opt(help="Adapter store [env SUPPORTKIT_TRAIN_OUT; ./adapters]")] = None,
    only: Annotated[Optional[str], Opt(help="Comma-separated run indices, e.g. 0,3,5")] = None,
    progress: Annotated[bool, Opt(help="Progress bars")] = True,
) -> None:
    """Run every configuration of a sweep in turn (a cluster runs them in parallel as an Indexed Job)."""
    import shlex

    from train.config import ConfigError, load_config, load_sweep

    try:
        n = len(load_sweep(config))
        picked = [int(i) for i in only.split(",")] if only else list(range(n))
        cfgs = [(i, load_config(config, i, overrides or [])) for i in picked]
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))
    from train.settings import TrainSettings

    settings = TrainSettings.from_cli(out=out)
    for i, cfg in cfgs:
        typer.echo(f"[{i + 1}/{n}] {cfg.name}")
        cmd = shlex.join(["supportkit", "train", "run", "--config", str(config), "--index", str(i),
                          "--out", str(settings.out), *(overrides or [])])
        _run_one(cfg, settings, progress, command=cmd)


def report(
    store: Annotated[Path, typer.Argument(help="Adapter store directory")],
    csv: Annotated[Optional[Path], Opt(help="Also write the table as CSV")] = None,
    json: Annotated[Optional[Path], Opt(help="Also write the table as JSON")] = None,
) -> None:
    """Table of all runs in a store: configuration, val loss, perplexity, energy, duration."""
    from train.report import collect, print_table, write_csv, write_json

    try:
        rows = collect(store)
    except OSError as exc:
        _fail(str(exc))
    print_table(rows, f"runs in {store}")
    if csv:
        write_csv(rows, csv)
    if json:
        write_json(rows, json)


def validate(configs: Annotated[list[Path], typer.Argument(help="Config or sweep YAML files")]) -> None:
    """Check config files without training."""
    from train.config import ConfigError, is_sweep, load_config, load_sweep, read_yaml

    for path in configs:
        try:
            n = len(load_sweep(path)) if is_sweep(read_yaml(path)) else (load_config(path) and 1)
        except ConfigError as exc:
            _fail(str(exc))
        typer.echo(f"{path}: ok ({n} run{'s' if n != 1 else ''})")
