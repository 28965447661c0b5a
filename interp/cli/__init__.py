"""The `interp` command line: `interp models`, `interp score <analyzer>`, ..."""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer._click import exceptions as click_errors  # typer >= 0.29 vendors click
from typer.core import TyperGroup

from interp.cli.anchors import score_anchors
from interp.cli.effect import effect_act
from interp.cli.effect_vision import effect_var, effect_vhr
from interp.cli.models import models
from interp.cli.retrieval import ablate_retrieval, score_retrieval
from interp.cli.sinks import score_sinks
from interp.cli.vision import score_vision
from interp.version import toolkit_version


class _OneLineErrors(TyperGroup):
    """Usage errors (a bad option value, a missing option) as one `error:` line, exit 2.

    Click and typer print them as a usage block or a rich panel; the toolkit's own errors
    are one line (interp.cli.common.fail), and so are these. Help requested by giving no
    arguments is still shown as help.
    """

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click_errors.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click_errors.ClickException as exc:
            message = " ".join(exc.format_message().split())
            typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
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
effect_app.command("vhr")(effect_vhr)
effect_app.command("var")(effect_var)
ablate_app.command("retrieval")(ablate_retrieval)
score_app.command("anchors")(score_anchors)
score_app.command("vision")(score_vision)

# shapes-llava's benchmarks (issue 13)
from interp.cli.shapes import shapes_tasks  # noqa: E402

shapes_app = typer.Typer(
    help="shapes-llava, the trained toy VLM: its held-out POPE and caption tasks.",
    no_args_is_help=True,
)
app.add_typer(shapes_app, name="shapes")
shapes_app.command("tasks")(shapes_tasks)

# circuits (issue 9)
from interp.cli.circuit import circuit_colored_objects, circuit_ioi, circuit_overlap  # noqa: E402

circuit_app = typer.Typer(
    help="Circuits: IOI and Colored Objects, discovery, faithfulness, reuse and repair.",
    no_args_is_help=True,
)
app.add_typer(circuit_app, name="circuit")
circuit_app.command("ioi")(circuit_ioi)
circuit_app.command("colored-objects")(circuit_colored_objects)
circuit_app.command("overlap")(circuit_overlap)

# sparse autoencoders (issue 10)
from interp.cli.sae import sae_app  # noqa: E402
from interp.cli.sae_circuit import circuit_sae  # noqa: E402

app.add_typer(sae_app, name="sae")
circuit_app.command("sae")(circuit_sae)

__all__ = ["app"]
