"""The work driver: independent items run in batches, each recorded as its batch finishes.

Every analyzer that loops over independent items (NIAH tests, traces, calibration
sequences) hands them to `Work`, so stopping and resuming works the same from Python and
from the CLI. An `Item` has a stable string key (what the log records it under), its value
and a length. `Work(items, log, batch_size)` plans batches of similar length over all the
items (`batches`); `run(process)` calls `process(values) -> rows per item` on each batch
the log does not hold and records the batch's items in the `interp.runs.WorkLog` with one
write as soon as it returns. Run again with the same log (same folder) and the recorded
batches are skipped, so a run stopped at any point loses at most one batch. The plan does
not depend on what the log holds, so a resumed run computes every item in the batch an
uninterrupted run would: even an analyzer whose floats depend on a batch's padding gives
the same tables. A batch the log holds only in part (a write cut short, or another batch
size) runs whole again and records what it lacks. `run` returns every item's rows in item
order, always as their JSON line decodes, logged or not, so a result never depends on
whether, or where, the run was resumed.

A run splits across processes (`interp.shards`): the plan is a function of the items alone,
so every process deals the same batches to the shards (`interp.shards.split`, balanced by
their padded tokens, or by the distinct prompt tokens a prefix tree computes, so batches
that share a prefix tend to share a shard) and runs only its own, into its own log file.
Under torchrun the ranks then wait for each other and read every shard's rows, so each
returns exactly what one process would; a separately launched shard (`--shard i/N`) stops
once its share is logged (`ShardStopped`), unless the log already holds the rest; a merge
(`interp merge`) computes nothing and names the shards whose items are missing. Under
torchrun only rank 0 reports progress, counting every shard's items.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Generic, TypeAlias, TypeVar

import numpy as np

from interp.errors import InputError
from interp.results import Provenance
from interp.runs import WorkLog, run_identity
from interp.shards import Shard, ShardStopped, barrier, current_shard, gather, split

T = TypeVar("T")
Row = dict[str, Any]
# Where a run records its finished items: a folder, or a log the caller opened and shares.
WorkFolder: TypeAlias = str | os.PathLike[str] | WorkLog

# A workflow's progress through its stages: progress(stage, done, total).
StageProgress: TypeAlias = Callable[[str, int, int], None]


def for_stage(progress: StageProgress | None, stage: str) -> Callable[[int, int], None] | None:
    """The progress(done, total) callback one stage of a workflow hands its analyzer."""
    return None if progress is None else functools.partial(progress, stage)


@dataclass(frozen=True)
class Item(Generic[T]):
    """One unit of work: its log key, the value `process` receives, its length for batching."""

    key: str
    value: T
    length: int = 0
    order: float | None = None  # batched in this order among similar lengths (see batches)
    # the ids a prefix tree serves: the split counts each distinct prefix token once a shard
    prompt: Sequence[int] | None = field(default=None, compare=False, repr=False)


def batches(
    lengths: Sequence[int],
    batch_size: int,
    similar: float | None = None,
    order: Sequence[float] | None = None,
) -> list[list[int]]:
    """Indices into `lengths` in groups of at most `batch_size`, shortest first.

    Sorted by length, stably (equal lengths keep their order). With `similar`, a group also
    ends before a length more than `similar` times its first (shortest), so padding wastes
    at most that share of a batch. With `order`, the items of each such run of similar
    lengths are batched in that order instead, whole groups of one order value to a batch
    where they fit (e.g. NIAH tests by needle: a needle's tests share prompt prefixes across
    depths and lengths, so a split that keeps them together computes those once).

    Raises:
        InputError: `batch_size` is below 1.
    """
    if batch_size < 1:
        raise InputError(f"The batch size must be at least 1, got {batch_size}.")
    groups: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if (
            not groups
            or (order is None and len(groups[-1]) == batch_size)
            or (similar is not None and lengths[index] > similar * lengths[groups[-1][0]])
        ):
            groups.append([])
        groups[-1].append(index)
    if order is None:
        return groups
    return [batch for run in groups for batch in _packed(run, order, batch_size)]


def _packed(run: list[int], order: Sequence[float], batch_size: int) -> list[list[int]]:
    """`run` in batches of at most `batch_size`, in `order`, each holding whole groups of
    one order value where they fit (a group larger than a batch fills batches of its own)."""
    out: list[list[int]] = [[]]
    for _, members in itertools.groupby(
        sorted(run, key=lambda i: order[i]), key=lambda i: order[i]
    ):
        group = list(members)
        if len(out[-1]) + len(group) > batch_size:
            out.append([])
        while len(group) > batch_size:
            out[-1:] = [group[:batch_size], []]
            group = group[batch_size:]
        out[-1].extend(group)
    return [batch for batch in out if batch]


def open_log(folder: WorkFolder | None, identity: Provenance | dict[str, Any]) -> WorkLog | None:
    """The work log a run of `identity` records in `folder` (None: no log).

    A `WorkLog` is used as it is: a caller that shares one log across stages (the CLI's
    commands) opened it with an identity covering them all.

    Raises:
        InputError: the folder's log belongs to a run with another identity.
    """
    if folder is None or isinstance(folder, WorkLog):
        return folder
    if isinstance(identity, Provenance):
        identity = run_identity(identity)
    return WorkLog(folder, identity)


class Work(Generic[T]):
    """The items of one run, their batches, and the loop over the batches a log lacks."""

    def __init__(
        self,
        items: Sequence[Item[T]],
        log: WorkLog | None = None,
        batch_size: int = 1,
        similar: float | None = None,
        shard: Shard | None = None,
    ) -> None:
        """Plan the batches (see `batches`; `similar`: the length ratio a batch may span) and
        this process's share of them (`shard`, default `interp.shards.current_shard()`).

        When every item has an `order`, items of similar length are batched in that order.
        The split balances what each shard's batches cost: the distinct prefix tokens of
        their prompts when every item has a `prompt` (what a prefix tree over them computes,
        so a batch tends to go where its prefix is already computed), else their padded
        tokens.

        Raises:
            InputError: two items share a key, or `batch_size` is below 1.
        """
        keys = [item.key for item in items]
        if len(set(keys)) < len(keys):
            repeated = sorted({k for k in keys if keys.count(k) > 1})
            raise InputError(f"Work items need distinct keys; repeated: {repeated[:5]}.")
        self.items = list(items)
        self.log = log
        self.shard = shard or current_shard()
        self._rows: dict[str, list[Row]] = {}
        self._take_logged()
        lengths = [item.length for item in self.items]
        orders = [item.order for item in self.items]
        plan = batches(lengths, batch_size, similar, None if None in orders else orders)
        self.plan = [[self.items[i] for i in batch] for batch in plan]
        self.owners = split(len(plan), self.shard.count, self._load(plan))

    def _load(self, plan: list[list[int]]) -> Callable[[list[int]], float]:
        """What a set of the plan's batches costs one process: the distinct prefix tokens
        of their items' prompts when every item has one, else their padded tokens."""
        if all(item.prompt is not None for item in self.items):
            distinct = DistinctPrefixTokens([item.prompt for item in self.items])  # type: ignore[misc]
            return lambda chosen: distinct([i for b in chosen for i in plan[b]])
        padded = [len(b) * max(1, *(self.items[i].length for i in b)) for b in plan]
        return lambda chosen: sum(padded[b] for b in chosen)

    def _take_logged(self) -> None:
        """Take the rows the log holds for this run's items (others' shards' included)."""
        if self.log is not None:
            for item in self.items:
                if item.key not in self._rows and self.log.is_done(item.key):
                    self._rows[item.key] = self.log.rows(item.key)

    def _pending(self) -> list[list[Item[T]]]:
        """This process's batches the log lacks (the merge runs none)."""
        mine = [
            batch
            for batch, owner in zip(self.plan, self.owners, strict=True)
            if self.shard.mode == "single"
            or (self.shard.mode != "merge" and owner == self.shard.index)
        ]
        return [batch for batch in mine if any(i.key not in self._rows for i in batch)]

    @property
    def todo(self) -> list[T]:
        """The values of the items in this process's batches still to run, in item order."""
        keys = {item.key for batch in self._pending() for item in batch}
        return [item.value for item in self.items if item.key in keys]

    def run(
        self,
        process: Callable[[list[T]], Sequence[list[Row]]],
        progress: Callable[[int, int], None] | None = None,
    ) -> list[list[Row]]:
        """Run this process's batches the log lacks; every item's rows, in item order.

        Args:
            process: a batch of values -> one list of JSON-serialisable rows per value.
            progress: called as progress(done, total) once before any work (done = items
                the log already held) and after each batch is recorded; done counts every
                shard's items. Under torchrun only rank 0 calls it.

        Raises:
            TypeError: a row holds a value JSON cannot represent.
            ValueError: `process` returned another number of row lists than values.
            ShardStopped: a separately launched shard logged its share; others' are missing.
            InputError: a merge finds items no shard logged (it names those shards), or
                a separately launched shard has no log to write to.
        """
        if self.log is None and self.shard.mode in ("jobs", "merge"):
            raise InputError("A shard run separately (--shard) needs an output folder.")
        total = len(self.items)
        report = progress if self.shard.reports else None
        pending = self._pending()
        if report is not None:
            report(len(self._rows), total)
        for batch in pending:
            out = process([item.value for item in batch])
            if len(out) != len(batch):
                raise ValueError(f"process gave rows for {len(out)} of {len(batch)} items.")
            new = [
                (item.key, _as_logged(rows))
                for item, rows in zip(batch, out, strict=True)
                if item.key not in self._rows
            ]
            if self.log is not None:
                self.log.record_all(new)
            self._rows.update(new)
            if report is not None:
                if self.shard.count > 1 and self.log is not None:
                    self.log.refresh()  # the whole sweep's progress: the other shards' items
                    self._take_logged()
                report(len(self._rows), total)
        self._join()
        if report is not None and self.shard.count > 1:  # the other shards' items joined
            report(len(self._rows), total)
        return [self._rows[item.key] for item in self.items]

    def _join(self) -> None:
        """Take the other shards' rows: under torchrun after every rank's share, else what
        their logs hold now; stop a separate shard that lacks some, or fail (a merge, a rank)."""
        if self.shard.mode == "single":
            return
        if self.shard.mode == "ranks":
            barrier()
            if self.log is None:  # no files to meet in: the ranks send each other their rows
                for rows in gather(self._rows):
                    self._rows.update(rows)
        if self.log is not None:
            self.log.refresh()
            self._take_logged()
        missing = {
            owner
            for batch, owner in zip(self.plan, self.owners, strict=True)
            if any(item.key not in self._rows for item in batch)
        }
        if not missing:
            return
        lacking = sum(item.key not in self._rows for item in self.items)
        where = self.log.folder if self.log is not None else "the run"
        if self.shard.mode == "jobs":
            raise ShardStopped(
                f"shard {self.shard.index}/{self.shard.count} logged its share in {where};"
                f" {lacking} of {len(self.items)} items are other shards'. Once every shard"
                f" has run, `interp merge {where}` writes the results."
            )
        names = ", ".join(f"{i}/{self.shard.count}" for i in sorted(missing))
        raise InputError(
            f"{where} lacks {lacking} of {len(self.items)} items of shards {names}: "
            + (
                "run them (the same command with --shard i/N), then merge again."
                if self.shard.mode == "merge"
                else "their ranks passed the barrier without logging them."
            )
        )


class DistinctPrefixTokens:
    """How many distinct prefix tokens a set of prompts holds: the tokens a prefix tree over
    them computes (`interp.prefill.PrefixTree`), where shared prefixes count once.

    The prompts are sorted once, so prompts sharing a prefix sit side by side; a set's
    count is its tokens less, for each prompt, the prefix it shares with the set's previous
    one in that order (the least common prefix length of the neighbours between them).
    """

    def __init__(self, prompts: Sequence[Sequence[int]]) -> None:
        ids = [np.asarray(p, dtype=np.int64) for p in prompts]
        order = sorted(range(len(ids)), key=lambda i: ids[i].astype(">i8").tobytes())
        self.rank = {index: r for r, index in enumerate(order)}
        self.lengths = [len(p) for p in ids]
        self.common = [0] + [_common_prefix(ids[a], ids[b]) for a, b in pairwise(order)]

    def __call__(self, indices: Sequence[int]) -> int:
        """The distinct prefix tokens of the prompts at `indices` (positions in the list)."""
        ranks = sorted(self.rank[i] for i in indices)
        shared = sum(min(self.common[a + 1 : b + 1]) for a, b in pairwise(ranks))
        return sum(self.lengths[i] for i in indices) - shared


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


def _as_logged(rows: list[Row]) -> list[Row]:
    """The rows as a work log gives them back: through JSON, refusing what it cannot hold."""
    return json.loads(json.dumps(rows, ensure_ascii=False))
