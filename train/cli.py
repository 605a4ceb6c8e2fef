"""`supportkit data ...` and `supportkit train ...`: light wiring only; commands import their work lazily."""

import typer

from train import data_commands, train_commands

data_app = typer.Typer(help="Generate synthetic support conversations.", no_args_is_help=True)
train_app = typer.Typer(help="Fine-tune LoRA adapters and report on runs.", no_args_is_help=True)

data_app.command("generate")(data_commands.generate)
data_app.command("stats")(data_commands.stats)
data_app.command("scenarios")(data_commands.scenario_grid)

train_app.command("run")(train_commands.run)
train_app.command("sweep")(train_commands.sweep)
train_app.command("report")(train_commands.report)
train_app.command("validate")(train_commands.validate)
