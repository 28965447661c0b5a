"""The job of the submitit array test: one shard of a toy sweep through the work driver.

Kept apart from the test module, so a job process imports the work driver only.
"""

from __future__ import annotations

from interp.runs import WorkLog
from interp.shards import Shard, ShardStopped, use_shard
from interp.work import Item, Work

IDENTITY = {"analyzer": "squares"}


def items() -> list[Item[int]]:
    return [Item(f"n/{n}", n, length=n % 5) for n in range(12)]


def squares(values: list[int]) -> list[list[dict]]:
    return [[{"n": v, "square": v * v}] for v in values]


def share(folder: str, index: int, count: int) -> str:
    """Run shard `index` of `count` of the sweep into `folder`: "stopped" or "all"."""
    with use_shard(Shard(index, count, "jobs")):
        try:
            Work(items(), WorkLog(folder, IDENTITY), batch_size=2).run(squares)
        except ShardStopped:
            return "stopped"
    return "all"
