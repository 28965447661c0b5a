"""Stopping a work-driver run from Python as a kill would, and counting what a resume redoes.

A run through `interp.work` calls its progress callback once before any work and after
each item it records; `stop_after(n)` raises there once `n` new items are recorded, so the
run ends between two items (possibly mid-batch: the batch's other items are lost), as a
kill does. `count_items` wraps an analyzer's batch function to count the items it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from interp.runs import log_files


class Stop(Exception):
    """Raised from a progress callback: the run stops as if killed."""


def stop_after(n: int) -> Callable[[int, int], None]:
    """A progress callback that stops the run once it has recorded `n` new items."""
    start: list[int] = []

    def progress(done: int, total: int) -> None:
        if not start:
            start.append(done)  # the first call: items already in the log
        elif done - start[0] >= n:
            raise Stop

    return progress


def count_items(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, arg: int = 1) -> list[int]:
    """Wrap `module.name`; the list it returns grows by the size of argument `arg` per call
    (1 if that argument is a single item rather than a list)."""
    original = getattr(module, name)
    sizes: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        batch = args[arg]
        sizes.append(len(batch) if isinstance(batch, list | tuple) else 1)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return sizes


def logged(folder: Path) -> int:
    """How many complete item lines the folder's work log holds (every shard's file)."""
    return sum(path.read_bytes().count(b"\n") for path in log_files(folder))
