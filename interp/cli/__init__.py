"""The `interp` command line: `interp models`, `interp score <analyzer>`, ..."""

from __future__ import annotations

import typer

from interp.cli.effect import effect_act
from interp.cli.models import models
from interp.cli.sinks import score_sinks

app = typer.Typer(
    help="Score, visualise and intervene on attention heads.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
score_app = typer.Typer(help="Score every head of a model with an analyzer.", no_args_is_help=True)
effect_app = typer.Typer(
    help="Apply an intervention and measure its effect on tasks.", no_args_is_help=True
)
app.add_typer(score_app, name="score")
app.add_typer(effect_app, name="effect")
app.command("models")(models)
score_app.command("sinks")(score_sinks)
effect_app.command("act")(effect_act)

__all__ = ["app"]
