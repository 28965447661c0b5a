"""The `interp` command line: `interp models`, `interp score <analyzer>`, ..."""

from __future__ import annotations

import typer

from interp.cli.effect import effect_act
from interp.cli.models import models
from interp.cli.retrieval import ablate_retrieval, score_retrieval
from interp.cli.sinks import score_sinks
from interp.version import toolkit_version

app = typer.Typer(
    help="Score, visualise and intervene on attention heads.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
score_app = typer.Typer(help="Score every head of a model with an analyzer.", no_args_is_help=True)
effect_app = typer.Typer(
    help="Apply an intervention and measure its effect on tasks.", no_args_is_help=True
)
ablate_app = typer.Typer(
    help="Mask heads and measure what breaks (the causal tests).", no_args_is_help=True
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"interp {toolkit_version()}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the toolkit's version and exit.",
    ),
) -> None:
    """Score, visualise and intervene on attention heads."""


app.add_typer(score_app, name="score")
app.add_typer(effect_app, name="effect")
app.add_typer(ablate_app, name="ablate")
app.command("models")(models)
score_app.command("sinks")(score_sinks)
score_app.command("retrieval")(score_retrieval)
effect_app.command("act")(effect_act)
ablate_app.command("retrieval")(ablate_retrieval)

__all__ = ["app"]
