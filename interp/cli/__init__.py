"""The `interp` command line: `interp models`, `interp score <analyzer>`, ..."""

from __future__ import annotations

import functools
import importlib
import sys
from typing import Any

import typer
from typer._click import core as click
from typer._click import exceptions as click_errors  # typer >= 0.29 vendors click
from typer.core import TyperGroup

from interp.cli.merge import merge
from interp.cli.models import models
from interp.version import toolkit_version

# Every command, as (group, name, "module:function"), loaded only when it runs or its help
# is asked for: `interp --help` stays instant, and the core reaches the commands of the
# analyzer packages (probes, circuits) by name, never by an import. Group "": a top-level
# command (`interp atlas`).
COMMANDS_BY_NAME: tuple[tuple[str, str, str], ...] = (
    ("", "atlas", "probes.commands.atlas:atlas"),
    ("score", "sinks", "probes.commands.sinks:score_sinks"),
    ("score", "retrieval", "probes.commands.retrieval:score_retrieval"),
    ("score", "anchors", "probes.commands.anchors:score_anchors"),
    ("score", "vision", "probes.commands.vision:score_vision"),
    ("ablate", "retrieval", "probes.commands.retrieval:ablate_retrieval"),
    ("effect", "act", "interp.cli.effect:effect_act"),
    ("effect", "vhr", "interp.cli.effect_vision:effect_vhr"),
    ("effect", "var", "interp.cli.effect_vision:effect_var"),
    ("circuit", "ioi", "circuits.commands.circuit:circuit_ioi"),
    ("circuit", "colored-objects", "circuits.commands.circuit:circuit_colored_objects"),
    ("circuit", "overlap", "circuits.commands.circuit:circuit_overlap"),
    ("circuit", "sae", "circuits.commands.sae_circuit:circuit_sae"),
    ("sae", "train", "probes.commands.sae:sae_train"),
    ("sae", "latents", "probes.commands.sae:sae_latents"),
    ("shapes", "tasks", "probes.commands.shapes:shapes_tasks"),
)
GROUPS = {
    "score": "Score every head of a model with an analyzer.",
    "effect": "Apply an intervention and measure its effect on tasks.",
    "ablate": "Mask heads and measure what breaks (the causal tests).",
    "circuit": "Circuits: IOI and Colored Objects, discovery, faithfulness, reuse and repair.",
    "sae": "Sparse autoencoders: train them on a model's activations, read their latents.",
    "shapes": "shapes-llava, the trained toy VLM: its held-out POPE and caption tasks.",
}


@functools.cache
def load_command(name: str, target: str) -> click.Command:
    """The click command of the function `target` ("module:function"), imported now."""
    module, attribute = target.split(":")
    single = typer.Typer(add_completion=False)
    single.command(name)(getattr(importlib.import_module(module), attribute))
    return typer.main.get_command(single)


def _lazy_group(group: str) -> type[TyperGroup]:
    """A group class whose commands of `group` are imported when one is asked for, beside
    the commands added to it directly."""
    targets = {name: target for g, name, target in COMMANDS_BY_NAME if g == group}

    class LazyGroup(TyperGroup):
        def list_commands(self, ctx: click.Context) -> list[str]:
            return [*super().list_commands(ctx), *targets]

        def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
            if name in targets:
                return load_command(name, targets[name])
            return super().get_command(ctx, name)

    return LazyGroup


class _OneLineErrors(_lazy_group("")):
    """The top-level group: its lazily imported commands (group ""), and usage errors (a
    bad option value, a missing option) as one `error:` line, exit 2.

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


app.command("models")(models)
app.command("merge")(merge)
for group, text in GROUPS.items():
    app.add_typer(typer.Typer(cls=_lazy_group(group), help=text, no_args_is_help=True), name=group)

__all__ = ["app"]
