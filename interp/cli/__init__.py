"""The `interp` command line: `interp models`, `interp score <analyzer>`, ..."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer
from typer._click import exceptions as click_errors  # typer >= 0.29 vendors click
from typer.core import TyperGroup

from interp.cli.effect import effect_act
from interp.cli.effect_vision import effect_var, effect_vhr
from interp.cli.models import models
from interp.cli.shapes import shapes_tasks
from interp.version import toolkit_version

# Commands whose workflows live above the core, as (group, name, "module:attribute"). They
# are registered by name so that the core never imports an analyzer package (probes,
# circuits); an analyzer package adds its commands here, not the other way round.
COMMANDS_BY_NAME: tuple[tuple[str, str, str], ...] = (
    ("score", "sinks", "probes.commands.sinks:score_sinks"),
    ("score", "retrieval", "probes.commands.retrieval:score_retrieval"),
    ("score", "anchors", "probes.commands.anchors:score_anchors"),
    ("score", "vision", "probes.commands.vision:score_vision"),
    ("ablate", "retrieval", "probes.commands.retrieval:ablate_retrieval"),
    ("circuit", "ioi", "circuits.commands.circuit:circuit_ioi"),
    ("circuit", "colored-objects", "circuits.commands.circuit:circuit_colored_objects"),
    ("circuit", "overlap", "circuits.commands.circuit:circuit_overlap"),
    ("circuit", "sae", "circuits.commands.sae_circuit:circuit_sae"),
)
GROUPS_BY_NAME: tuple[tuple[str, str], ...] = (("sae", "probes.commands.sae:sae_app"),)


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


def _by_name(target: str) -> Any:
    module, attribute = target.split(":")
    return getattr(importlib.import_module(module), attribute)


shapes_app = typer.Typer(
    help="shapes-llava, the trained toy VLM: its held-out POPE and caption tasks.",
    no_args_is_help=True,
)
circuit_app = typer.Typer(
    help="Circuits: IOI and Colored Objects, discovery, faithfulness, reuse and repair.",
    no_args_is_help=True,
)
groups = {"score": score_app, "effect": effect_app, "ablate": ablate_app, "circuit": circuit_app}
for name, group in groups.items():
    app.add_typer(group, name=name)
app.add_typer(shapes_app, name="shapes")
app.command("models")(models)
effect_app.command("act")(effect_act)
effect_app.command("vhr")(effect_vhr)
effect_app.command("var")(effect_var)
shapes_app.command("tasks")(shapes_tasks)
for group_name, name, target in COMMANDS_BY_NAME:
    groups[group_name].command(name)(_by_name(target))
for name, target in GROUPS_BY_NAME:
    app.add_typer(_by_name(target), name=name)

__all__ = ["app"]
