"""`supportkit serve` (filled in by the serving core)."""

import typer

app = typer.Typer()
