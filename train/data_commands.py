"""`supportkit data generate|stats|scenarios`: the commands; the work is in train/data/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

Opt = typer.Option


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg="red", err=True)
    raise typer.Exit(2)


def _print_stats(stats: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="dataset")
    table.add_column("figure")
    table.add_column("value")
    for key in ("conversations", "scenarios", "by_split", "scenarios_by_split", "turns", "user_words",
                "assistant_words", "duplicates_dropped", "fingerprint"):
        if key in stats:
            table.add_row(key, json.dumps(stats[key]) if isinstance(stats[key], dict) else str(stats[key]))
    Console().print(table)


def generate(
    out: Annotated[Path, Opt(help="Output directory: conversations.jsonl + stats.json")],
    offline: Annotated[bool, Opt("--offline", help="Compose from the glossary; no model needed")] = False,
    endpoint: Annotated[Optional[str], Opt(help="Base URL of an OpenAI-compatible or TGI endpoint")] = None,
    model: Annotated[Optional[str], Opt(help="Model name sent to the endpoint (OpenAI `model`)")] = None,
    api: Annotated[str, Opt(help="openai | tgi")] = "openai",
    glossary: Annotated[Optional[Path], Opt(help="Glossary YAML (default: the kit's)")] = None,
    per_scenario: Annotated[int, Opt(help="Conversations per scenario")] = 1,
    scenarios: Annotated[Optional[int], Opt(help="Use a seeded sample of N scenarios (default: all 1,716)")] = None,
    seed: Annotated[int, Opt(help="Generation seed")] = 0,
    split_seed: Annotated[int, Opt(help="Seed of the scenario split")] = 0,
    val: Annotated[float, Opt(help="Share of scenarios for validation")] = 0.1,
    test: Annotated[float, Opt(help="Share of scenarios for test")] = 0.1,
    cache: Annotated[Optional[Path], Opt(help="Endpoint answer cache (default OUT/cache.jsonl); re-runs resume")] = None,
    concurrency: Annotated[int, Opt(help="Parallel conversations (endpoint)")] = 4,
    retries: Annotated[int, Opt(help="Retries per request on transport errors, 429 and 5xx")] = 4,
    backoff: Annotated[float, Opt(help="First backoff in seconds; doubles each retry")] = 1.0,
    temperature: Annotated[float, Opt(help="Sampling temperature (endpoint)")] = 0.8,
    max_tokens: Annotated[int, Opt(help="Max new tokens per answer (endpoint)")] = 256,
    min_chars: Annotated[int, Opt(help="Shortest valid answer, in characters (endpoint)")] = 20,
    prompts: Annotated[Optional[Path], Opt(help="Directory of prompt templates (default: the kit's)")] = None,
) -> None:
    """Generate support conversations from the scenario grid, split by scenario, and print statistics.

    The endpoint's API key, if it needs one, is read from SUPPORTKIT_GENERATE_API_KEY (never from argv).
    """
    from rich.progress import Progress

    from train.data.job import DataError, GenerateSettings, generate_dataset

    settings = GenerateSettings(
        out=out, offline=offline, endpoint=endpoint, model=model, api=api, glossary=glossary, prompts=prompts,
        per_scenario=per_scenario, scenarios=scenarios, seed=seed, split_seed=split_seed, val=val, test=test,
        cache=cache, concurrency=concurrency, retries=retries, backoff_s=backoff, temperature=temperature,
        max_tokens=max_tokens, min_chars=min_chars,
    )
    try:
        settings.check()
        if offline:
            result = generate_dataset(settings)
        else:
            with Progress() as bar:
                task = bar.add_task("conversations", total=None)
                result = generate_dataset(settings, lambda n, total: bar.update(task, completed=n, total=total))
    except DataError as exc:
        _fail(str(exc))
    if result.endpoint_stats is not None:
        typer.echo(json.dumps({"generation": result.endpoint_stats}))
    _print_stats(result.stats)
    typer.echo(f"wrote {result.path}")
    if result.failed:
        typer.secho(f"{len(result.failed)} conversations failed; run the same command again to generate only those",
                    fg="yellow", err=True)
        raise typer.Exit(1)


def stats(path: Annotated[Path, typer.Argument(help="Dataset directory or conversations.jsonl")]) -> None:
    """Print (and refresh stats.json of) an existing dataset."""
    from train.data.records import check_disjoint, dataset_stats, fingerprint, read_conversations

    try:
        rows = read_conversations(path)
        check_disjoint(rows)
    except (OSError, ValueError) as exc:
        _fail(str(exc))
    _print_stats({**dataset_stats(rows), "fingerprint": fingerprint(rows)})


def scenario_grid(
    glossary: Annotated[Optional[Path], Opt(help="Glossary YAML (default: the kit's)")] = None,
    ids: Annotated[bool, Opt("--ids", help="Print every scenario id")] = False,
) -> None:
    """Size of the scenario grid (terms x causes x contexts), or its ids."""
    from train.data.glossary import load_glossary, scenarios as grid

    try:
        g = load_glossary(glossary)
    except (OSError, ValueError) as exc:
        _fail(str(exc))
    all_ = grid(g)
    if ids:
        typer.echo("\n".join(s.id for s in all_))
    else:
        faults = sum(not s.informational for s in all_)
        typer.echo(f"{len(g.terms)} terms x {len(g.causes)} causes x {len(g.contexts)} contexts = {faults} fault "
                   f"scenarios, + {len(all_) - faults} informational (term x context) = {len(all_)}")
