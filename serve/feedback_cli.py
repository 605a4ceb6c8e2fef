"""`supportkit feedback export`: demo feedback as a JSONL question file for the eval job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

feedback_app = typer.Typer(help="Feedback given on the demo page.", no_args_is_help=True)


@feedback_app.command("export")
def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file to write")],
    db: Annotated[Path | None, typer.Option(help="Feedback database [default: SUPPORTKIT_SERVE_FEEDBACK_DB, else the cache's]")] = None,
    rating: Annotated[str, typer.Option(help="all | up | down")] = "all",
):
    """Write one question record per rated reply: `{"id", "messages", "reference"?}`; a liked reply is the reference."""
    from rich.console import Console

    from serve.feedback import FeedbackStore, export_jsonl
    from serve.settings import ServeSettings

    console = Console(stderr=True)
    wanted = {"all": None, "up": 1, "down": -1}
    if rating not in wanted:
        console.print(f"[red]error:[/red] --rating must be all, up or down (given {rating!r})")
        raise typer.Exit(2)
    path = db or ServeSettings().feedback_db
    if path is not None and not Path(path).is_file():
        console.print(f"[red]error:[/red] no feedback database at {path}")
        raise typer.Exit(2)
    store = FeedbackStore(path)
    n = export_jsonl(store, out, wanted[rating])
    console.print(f"wrote {n} question(s) from {store.path} to {out}")
