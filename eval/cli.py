"""`supportkit eval ...`."""

import typer

app = typer.Typer(help="Judge live endpoints with a panel and rank adapters.", no_args_is_help=True)
