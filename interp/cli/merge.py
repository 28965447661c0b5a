"""`interp merge FOLDER`: the results of a run split into separately launched shards.

Each job of `--shard i/N` logs its share of the work in FOLDER and, once its share is
logged, leaves `shard.<i>-of-<N>.json`: the command and the options it was given, less
`--shard` and `--out`. `interp merge` checks that every shard of the split left one (and
names those that did not), then runs that command once more on FOLDER as the merge
(`interp.shards`, mode "merge"): every item is read from the shard logs, nothing is
computed, and the tables, figures and manifest are those one process writes. A shard whose
log lacks items (killed after its record, or a workflow whose later stage needs the whole
of an earlier one) is named too: rerun the jobs, which take up where they stopped.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer._click import exceptions as click_errors
from typer._click.core import ParameterSource
from typer._click.globals import get_current_context

from interp.cli.common import user_errors
from interp.errors import InputError

if TYPE_CHECKING:
    from typer._click.core import Context

_NOT_REPEATED = ("shard", "out")  # the merge gives its own folder, and is no shard


def shard_done(folder: Path, command: str, message: str | None = None) -> None:
    """Leave the record of a shard of `command` ("score retrieval") whose share is logged,
    for the merge (module doc); print `message`, or what comes next."""
    from interp.shards import current_shard

    shard = current_shard()
    ctx = get_current_context()
    entry = {
        "command": command,
        "args": _given_options(ctx),
        "count": shard.count,
    }
    path = folder / f"shard.{shard.label}.json"
    path.write_text(json.dumps(entry, indent=2) + "\n", encoding="utf-8")
    typer.echo(
        message
        or f"shard {shard.index}/{shard.count} logged its share in {folder}; once every shard"
        f" has run, `interp merge {folder}` writes the results.",
        err=True,
    )


def _given_options(ctx: Context) -> list[str]:
    """The options a command was given (not defaults), as command-line words."""
    words: list[str] = []
    for param in ctx.command.params:
        name = param.name or ""
        if name in _NOT_REPEATED or ctx.get_parameter_source(name) is ParameterSource.DEFAULT:
            continue
        value = ctx.params[name]
        if getattr(param, "is_flag", False):  # --static/--no-static, or a lone switch
            words += [param.opts[0]] if value else param.secondary_opts[:1]
            continue
        for one in value if getattr(param, "multiple", False) else [value]:
            words += [param.opts[0], str(one.value if isinstance(one, enum.Enum) else one)]
    return words


def merge(
    folder: Annotated[Path, typer.Argument(help="The --out folder the shards wrote.")],
) -> None:
    """Write the results of a run split with --shard i/N, once every shard has run."""
    from interp.shards import Shard, use_shard

    root = get_current_context().find_root().command  # the `interp` group
    with user_errors():
        command, args, count = _split_of(folder)
        with use_shard(Shard(0, count, "merge")):
            try:
                code = root.main(
                    [*command.split(), *args, "--out", str(folder)],
                    prog_name="interp",
                    standalone_mode=False,
                )
            except click_errors.ClickException as exc:
                raise InputError(exc.format_message()) from None
    if code:
        raise typer.Exit(code)


def _split_of(folder: Path) -> tuple[str, list[str], int]:
    """The command, options and shard count the shards' records agree on.

    Raises:
        InputError: no shard record, records of several commands or splits, or shards
            whose record is missing (named).
    """
    records: list[dict[str, Any]] = []
    for path in sorted(folder.glob("shard.*-of-*.json")):
        try:
            records.append(json.loads(path.read_text("utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{path} is not a shard record ({exc}).") from exc
    if not records:
        raise InputError(
            f"{folder} holds no finished shard (shard.<i>-of-<N>.json): run the jobs with"
            " --shard i/N and this --out first."
        )
    runs = {json.dumps([r.get("command"), r.get("args"), r.get("count")]) for r in records}
    if len(runs) > 1:
        raise InputError(f"{folder} holds shards of different commands, options or splits.")
    command, args, count = json.loads(runs.pop())
    missing = [i for i in range(count) if not (folder / f"shard.{i}-of-{count}.json").is_file()]
    if missing:
        names = ", ".join(f"{i}/{count}" for i in missing)
        raise InputError(
            f"{folder} lacks shards {names}: run them (--shard i/{count}), then merge again."
        )
    return command, args, count
