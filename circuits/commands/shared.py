"""What the circuit commands share: count checks, config from options, progress, output."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from interp.cli.common import progress_bar, write_outputs


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


@contextmanager
def step_bars() -> Iterator[Callable[[str, int, int], None]]:
    """The progress(step, done, total) a workflow takes, as one bar per step in turn."""
    current: list[Any] = []  # [step, update, bar] of the step running

    def progress(step: str, done: int, total: int) -> None:
        if not current or current[0] != step:
            if current:
                current[2].close()
            current[:] = [step, *progress_bar(total, step, unit="step")]
        current[1](done, total)

    try:
        yield progress
    finally:
        if current:
            current[2].close()


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
