"""`supportkit data ...` and `supportkit train ...`."""

import typer

data_app = typer.Typer(help="Generate synthetic support conversations.", no_args_is_help=True)
train_app = typer.Typer(help="Fine-tune LoRA adapters and report on runs.", no_args_is_help=True)
