"""What the circuit commands share: count checks, config from options, progress, output."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from interp.cli.common import write_outputs


def check_counts(**values: int) -> None:
    """Seeds and sizes the tasks and the bootstrap take: whole numbers, seeds >= 0, prompt
    counts within what a task is built with (checked again against its templates)."""
    from circuits.circuit_task import MAX_PROMPTS
    from interp.errors import InputError

    for name, value in values.items():
        low = 0 if name == "seed" else 1
        if value < low:
            raise InputError(f"--{name.replace('_', '-')} must be at least {low}, got {value}.")
        if name in ("n", "repair_n") and value > MAX_PROMPTS:
            raise InputError(
                f"--{name.replace('_', '-')} {value}: a task takes at most {MAX_PROMPTS}"
                " prompts (each is built, held and patched per head)."
            )


def config_from(kind: type, options: dict[str, Any], **given: Any) -> Any:
    """The workflow config `kind` from the command's options of its fields' names; `given`
    sets fields the options do not (or that mean something else there)."""
    names = {field.name for field in dataclasses.fields(kind)}
    return kind(**{**{k: v for k, v in options.items() if k in names}, **given})


def write_result(folder: Path, record: Any, result: Any, static: bool, **summary: Any) -> None:
    """A workflow result's tables, figures and summary (`summary` adds or replaces fields)."""
    write_outputs(
        folder,
        record,
        tables=result.tables(),
        figures=result.figures(),
        static=static,
        summary={**result.summary, **summary},
    )
