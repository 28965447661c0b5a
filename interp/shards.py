"""Which share of a run's work this process takes, and how the processes of one run meet.

A long sweep is independent items (`interp.work`), so it splits across processes without a
scheduler of our own. `current_shard()` says where this process stands:

- one process (the default): `Shard(0, 1)`, it runs everything;
- ranks launched together by `torchrun` or `accelerate launch` (their RANK/WORLD_SIZE, or
  an initialised torch.distributed): `Shard(rank, world, "ranks")`; each rank runs its
  share, waits for the others at `barrier()`, then reads every rank's rows, so every rank
  holds the single-process result and rank 0 alone writes it;
- separate jobs (`--shard i/N`, e.g. a Slurm array through submitit): `Shard(i, N,
  "jobs")`; a job runs its share and logs it, then stops (`ShardStopped`) where it would
  need another's rows, or at its end, writing no tables; `interp merge` writes them once
  every job is done;
- the merge itself (`Shard(0, N, "merge")`): it computes nothing, and names the shards
  whose work is missing.

`split(units, count, load)` deals the work driver's batches to the shards, balanced by what
they cost together: largest first, each to the shard whose load is least once it holds the
batch; it depends on the loads alone, so every process computes the same split.
`rank_device` puts each rank on its own GPU; `rank_max_memory` gives a rank that splits its
model with a device map its own group of the node's GPUs.

Memory: every process holds its own copy of the model (docs/distributed.md plans it per
rank), and once it has read the other shards' logs, the rows of the whole run.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from interp.errors import InputError, InterpError

Mode = Literal["single", "ranks", "jobs", "merge"]
# A rank waits at the barrier for the slowest share of a sweep, which can take hours; a dead
# rank does not leave the others waiting this long: torchrun stops them all.
BARRIER_TIMEOUT = dt.timedelta(hours=24)


class ShardStopped(InterpError):
    """A separately launched shard logged its share and stops (not a failure): the tables
    wait for `interp merge`."""


@dataclass(frozen=True)
class Shard:
    """Share `index` of `count`, and how this process meets the others (module doc)."""

    index: int = 0
    count: int = 1
    mode: Mode = "single"

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise InputError(f"A shard is i/N with 0 <= i < N, got {self.index}/{self.count}.")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`--shard i/N` ("0/4": the first of four separately launched jobs).

        Raises:
            InputError: the text is not i/N with 0 <= i < N.
        """
        found = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if found is None:
            raise InputError(f"--shard takes i/N (e.g. 0/4), got {text!r}.")
        return cls(int(found.group(1)), int(found.group(2)), "jobs")

    @property
    def label(self) -> str:
        """How file names and messages name the shard: "0-of-2"."""
        return f"{self.index}-of-{self.count}"

    @property
    def reports(self) -> bool:
        """Whether this process prints and shows progress: all but ranks after the first."""
        return self.mode != "ranks" or self.index == 0

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's tables, figures and manifest: one process,
        rank 0 or the merge (a separately launched shard leaves them to the merge)."""
        return self.reports and self.mode != "jobs"


_CHOSEN: list[Shard] = []  # the shard a command or a merge set (use_shard), innermost last


@contextmanager
def use_shard(shard: Shard | None) -> Iterator[None]:
    """Run the block as `shard` (None: as the launcher says; see `current_shard`).

    Raises:
        InputError: a shard given under torchrun/accelerate launch, which split already.
    """
    if shard is None:
        yield
        return
    if _launched() is not None:
        raise InputError("--shard splits separately launched jobs; torchrun already splits.")
    _CHOSEN.append(shard)
    try:
        yield
    finally:
        _CHOSEN.pop()


def current_shard() -> Shard:
    """This process's shard: one chosen by `use_shard`, the launcher's rank, or the whole."""
    if _CHOSEN:
        return _CHOSEN[-1]
    return _launched() or Shard()


def _launched() -> Shard | None:
    """The rank of a process started by torchrun or accelerate launch (None: not one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    return Shard(rank, world, "ranks") if world > 1 else None


def split(units: int, count: int, load: Callable[[list[int]], float]) -> list[int]:
    """The shard of each of `units` work units: largest first, each to the shard whose
    load is least once it holds the unit, where `load(units)` is what a set of units costs
    one process.

    For a load that is a sum this is the least loaded shard. A load that is not (units
    sharing a prompt prefix cost less together than apart) can send a unit where its
    shared part is already computed. Ties go to the earlier unit and
    the lower shard, so the split is a function of the loads alone and every process
    computes the same one.
    """
    members: list[list[int]] = [[] for _ in range(count)]
    owner = [0] * units
    for unit in sorted(range(units), key=lambda u: -load([u])):
        after = [load([*members[s], unit]) for s in range(count)]
        shard = min(range(count), key=lambda s: after[s])
        owner[unit] = shard
        members[shard].append(unit)
    return owner


_GROUP: list[Any] = []  # the gloo group the ranks meet in, made at the first barrier


def _group() -> Any:
    """The ranks' gloo group: the default group when the toolkit starts it, else a new
    gloo group over the launcher's (whose backend or timeout may not suit a long wait)."""
    import torch.distributed as dist

    if not _GROUP:
        if dist.is_initialized():
            _GROUP.append(dist.new_group(backend="gloo", timeout=BARRIER_TIMEOUT))
        else:
            dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
            _GROUP.append(None)
    return _GROUP[0]


def barrier() -> None:
    """Wait until every rank gets here (nothing to wait for outside torchrun)."""
    if current_shard().mode == "ranks":
        import torch.distributed as dist

        dist.barrier(group=_group())


def gather(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order (a barrier too); [value] outside torchrun."""
    if current_shard().mode != "ranks":
        return [value]
    import torch.distributed as dist

    values: list[Any] = [None] * current_shard().count
    dist.all_gather_object(values, value, group=_group())
    return values


def rank_device(device: str) -> str:
    """The device of this rank: under torchrun a GPU device becomes cuda:LOCAL_RANK (one GPU
    per rank, wrapping round when ranks outnumber GPUs); any other device is kept."""
    import torch

    if current_shard().mode != "ranks" or not device.startswith("cuda"):
        return device
    if not torch.cuda.is_available():
        return device
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"


def rank_max_memory(
    device_map: Any, max_memory: dict[str | int, Any] | None
) -> dict[str | int, Any] | None:
    """This rank's own GPUs for a device-map strategy under torchrun: the node's GPUs dealt
    to its ranks in equal runs (4 GPUs, 2 ranks a node: local rank 1 gets GPUs 2 and 3),
    as the max_memory that confines accelerate's strategy to them. A GPU of the group keeps
    its given limit, else its free memory; the CPU keeps its given limit, else an equal share
    of the free RAM (the ranks of a node share it). Anything else keeps `max_memory`.

    Raises:
        InputError: more ranks on the node than GPUs, or an explicit map that names GPUs
            (every rank would put the same modules on the same GPUs).
    """
    import torch

    if current_shard().mode != "ranks" or device_map is None or not torch.cuda.is_available():
        return max_memory
    if not isinstance(device_map, str):
        if any(str(where) not in ("cpu", "disk") for where in device_map.values()):
            raise InputError(
                "Under torchrun every rank would put a --device-map JSON map's modules on the"
                " same GPUs: give a strategy (auto, balanced, ...), which places each rank on"
                " its own GPUs, or launch --shard jobs with their own CUDA_VISIBLE_DEVICES."
            )
        return max_memory
    ranks, gpus = int(os.environ.get("LOCAL_WORLD_SIZE", 1)), torch.cuda.device_count()
    per_rank = gpus // ranks
    if per_rank == 0:
        raise InputError(
            f"{ranks} ranks on this node share {gpus} GPUs: a device map needs a GPU per rank;"
            f" launch at most {gpus} ranks a node (--nproc_per_node) or give --device cuda."
        )
    first = int(os.environ.get("LOCAL_RANK", 0)) * per_rank
    given = dict(max_memory or {})
    limits: dict[str | int, Any] = {
        gpu: given.get(gpu, torch.cuda.mem_get_info(gpu)[0])
        for gpu in range(first, first + per_rank)
    }
    if "cpu" not in given:
        import psutil

        limits["cpu"] = psutil.virtual_memory().available // ranks
    return limits | {where: size for where, size in given.items() if not isinstance(where, int)}
