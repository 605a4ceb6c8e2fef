"""Entry point of the `supportkit` console command. Each step's commands live in that step's package."""

import typer

from eval.cli import app as eval_app
from serve.cli import app as serve_app
from serve.feedback_cli import feedback_app
from supportkit.model_commands import app as model_app
from supportkit.study import study
from train.cli import data_app, train_app

app = typer.Typer(help="supportkit: build, measure, serve and judge a telecom support assistant.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
app.add_typer(feedback_app, name="feedback")
app.command("study")(study)
app.registered_commands += serve_app.registered_commands
app.registered_groups += serve_app.registered_groups

if __name__ == "__main__":
    app()
