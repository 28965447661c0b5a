"""Options generated from config dataclasses (interp.cli.options), on a toy config."""

from dataclasses import dataclass
from typing import Annotated, Literal

import pytest
import typer
from typer.testing import CliRunner

from interp.cli.options import Fields, Run, command, field_help
from interp.config import Config, check_range

runner = CliRunner()


@dataclass(frozen=True, kw_only=True)
class ToyConfig(Config):
    """A config as the analyzers write them.

    Attributes:
        mode: "fast" or "exact" (the choices come from the Literal).
        depth: how deep, a positive count,
            whose help goes on over two lines.
        sizes: lengths to try.
        seed: seed of the draws.
        strict: refuse what is not clean.
    """

    mode: Literal["fast", "exact"] = "exact"
    depth: int = 3
    sizes: tuple[int, ...] = (8, 16)
    seed: int = 0
    strict: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "depth", 1)


@dataclass(frozen=True, kw_only=True)
class OtherConfig(Config):
    """Attributes:
    seed: the same seed, shared.
    depth: a depth with another default.
    """

    seed: int = 0
    depth: int = 7


def _app(function) -> typer.Typer:
    app = typer.Typer()
    app.command()(function)
    return app


def _run(*args: str, config_type=ToyConfig) -> dict:
    seen: dict = {}

    @command("toy run", placement=False, figures=False)
    def toy(
        run: Run,
        config: config_type,
        other: Annotated[OtherConfig, Fields(rename={"depth": "other_depth"})],
        label: Annotated[str, typer.Option(help="A label of the command's own.")] = "x",
    ) -> None:
        """A toy command."""
        seen.update(config=config, other=other, label=label, run=run)

    result = runner.invoke(_app(toy), list(args))
    seen["result"] = result
    return seen


def test_field_help_reads_the_attributes_section_with_continuations():
    helps = field_help(ToyConfig)
    assert helps["depth"] == "how deep, a positive count, whose help goes on over two lines."
    assert helps["mode"].startswith('"fast" or "exact"')
    assert field_help(OtherConfig) == {  # a docstring that opens on "Attributes:"
        "seed": "the same seed, shared.",
        "depth": "a depth with another default.",
    }


def test_defaults_build_the_configs_defaults():
    seen = _run()
    assert seen["result"].exit_code == 0, seen["result"].output
    assert seen["config"] == ToyConfig() and seen["other"] == OtherConfig()
    assert seen["label"] == "x" and seen["run"].model_spec is None


def test_every_field_is_an_option_with_its_type():
    seen = _run(
        "--mode", "fast", "--depth", "5", "--sizes", "4,2", "--seed", "9", "--no-strict",
        "--other-depth", "2", "--label", "y",
    )  # fmt: skip
    assert seen["result"].exit_code == 0, seen["result"].output
    assert seen["config"] == ToyConfig(mode="fast", depth=5, sizes=(4, 2), seed=9, strict=False)
    assert seen["other"] == OtherConfig(seed=9, depth=2)  # one --seed feeds both configs
    assert seen["label"] == "y"


def test_help_lists_choices_defaults_and_field_help():
    help_text = _run("--help")["result"].output
    for text in ("fast|exact", "--other-depth", "--no-strict", "Comma-separated", "8,16"):
        assert text in help_text


def test_bad_values_are_refused():
    for args, message in [
        (("--mode", "slow"), "'slow' is not one of"),
        (("--depth", "0"), "ToyConfig.depth must lie in"),
        (("--sizes", "4,a"), "--sizes takes comma-separated int values"),
    ]:
        result = _run(*args)["result"]
        assert result.exit_code == 2 and message in result.output, result.output


def test_a_shared_name_with_two_defaults_is_refused_when_the_command_is_made():
    with pytest.raises(TypeError, match="--depth has defaults 3 and 7"):

        @command("toy clash", placement=False)
        def clash(config: ToyConfig, other: OtherConfig) -> None:
            """Two configs whose `depth` fields differ."""


@dataclass(frozen=True, kw_only=True)
class ChildConfig(ToyConfig):
    """A subclass that says nothing of its fields: their help is the base's."""


def _run_with_defaults(*args: str) -> dict:
    seen: dict = {}

    @command("toy defaults", placement=False, figures=False)
    def toy(
        run: Run, config: Annotated[ChildConfig, Fields(defaults={"depth": 7, "sizes": (2, 3)})]
    ) -> None:
        """A command whose own defaults are not the config's."""
        seen.update(config=config)

    seen["result"] = runner.invoke(_app(toy), list(args), env={"COLUMNS": "200"})
    return seen


def test_the_commands_own_defaults_replace_the_classes_and_given_values_win():
    assert _run_with_defaults()["config"] == ChildConfig(depth=7, sizes=(2, 3))
    given = _run_with_defaults("--depth", "2", "--sizes", "5")["config"]
    assert given == ChildConfig(depth=2, sizes=(5,))


def test_help_shows_the_commands_defaults_and_the_base_classes_field_help():
    help_text = _run_with_defaults("--help")["result"].output
    assert "how deep, a positive count" in help_text and "[default: 7]" in help_text
    assert "Comma-separated (default: 2,3)" in help_text
