"""`interp.cli.options`: a command's own defaults for config fields, and inherited field help."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer
from typer.testing import CliRunner

from interp.cli.options import Fields, Run, command
from interp.config import Config


@dataclass(frozen=True, kw_only=True)
class _Base(Config):
    """A base.

    Attributes:
        size: how many, said once in the base.
        dims: which dimensions.
    """

    size: int = 1
    dims: tuple[int, ...] = (0,)


@dataclass(frozen=True, kw_only=True)
class _Child(_Base):
    """A subclass that says nothing of its fields."""


def _app(seen: list[Config]) -> typer.Typer:
    @command("probe test", placement=False, figures=False)
    def probe(
        run: Run, config: Annotated[_Child, Fields(defaults={"size": 7, "dims": (2, 3)})]
    ) -> None:
        seen.append(config)

    app = typer.Typer()
    app.command()(probe)
    return app


def test_the_commands_defaults_replace_the_classes_and_given_values_win() -> None:
    seen: list[Config] = []
    app = _app(seen)
    assert CliRunner().invoke(app, []).exit_code == 0
    assert seen[-1] == _Child(size=7, dims=(2, 3))
    assert CliRunner().invoke(app, ["--size", "2", "--dims", "5"]).exit_code == 0
    assert seen[-1] == _Child(size=2, dims=(5,))


def test_help_comes_from_the_base_class_attributes_with_the_commands_defaults() -> None:
    result = CliRunner().invoke(_app([]), ["--help"], env={"COLUMNS": "200"})
    assert "how many, said once in the base." in result.output
    assert "[default: 7]" in result.output and "Comma-separated (default: 2,3)" in result.output
