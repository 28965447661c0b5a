"""What every intervention is: a value that applies itself to a model inside a context.

An intervention is a frozen dataclass naming heads and parameters. `intervention.applied(model)`
is a context manager that installs its hooks and removes them on exit, exceptions and Ctrl-C
included; `applied_all(model, a, b, ...)` stacks several. Interventions compare equal and
hash as values (tensors by content, through `tensor_digest`), and `to_dict()` gives the
reproducible form recorded in provenance: plain JSON, functions by qualified name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any, Protocol, TypeAlias, runtime_checkable

import torch

from interp.models import Model


class Intervention(Protocol):
    """Anything with `applied(model)` returning a context manager, a `to_dict()` record and
    an `identity()`.

    `identity()` is the baseline arm an effect is measured against: the same hooks and
    attention kernels in the same layers, changing nothing (HeadScale alpha=1, ACT beta=1,
    an unedited AttentionEdit). Measuring against it, rather than against the plain model
    whose attention runs a fused kernel, keeps float rounding out of every effect: an
    identity intervention shows exactly none.
    """

    def applied(self, model: Model) -> AbstractContextManager[None]: ...

    def to_dict(self) -> dict[str, Any]: ...

    def identity(self) -> Intervention: ...


def tensor_digest(tensor: torch.Tensor) -> dict[str, Any]:
    """A tensor's identity by content: SHA-256 of its bytes, with shape and dtype."""
    flat = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    return {
        "sha256": hashlib.sha256(flat.numpy().tobytes()).hexdigest(),
        "shape": list(tensor.shape),
        "dtype": str(tensor.dtype).removeprefix("torch."),
    }


def function_name(fn: Callable[..., Any]) -> str:
    """`module:qualname` of a function (or a callable's class), never its memory address."""
    target = fn if hasattr(fn, "__qualname__") else type(fn)
    return f"{target.__module__}:{target.__qualname__}"


@runtime_checkable
class PerRow(Protocol):
    """An intervention built for the rows of one batch (`interp.heads.RowHeads`, a repair's
    positions): `select(rows)` is the intervention of those rows, to run them as a batch."""

    def select(self, rows: Sequence[int]) -> Intervention: ...


def for_rows(intervention: Intervention, rows: Sequence[int]) -> Intervention:
    """The intervention of batch rows `rows`: its `select` if it is per row, else itself."""
    return intervention.select(rows) if isinstance(intervention, PerRow) else intervention


@runtime_checkable
class PerItem(Protocol):
    """An effects arm whose intervention depends on the work items it runs on (heads drawn
    per item): `for_items(values)` is the intervention of one batch of them, `identity()` the
    arm it is measured against; arms compare equal and hash as values."""

    def for_items(self, values: Sequence[Any]) -> Intervention: ...

    def identity(self) -> Any: ...


# What `interp.effects.measure_arms` sweeps: an intervention, or an arm built per batch.
Arm: TypeAlias = Intervention | PerItem


def for_items(arm: Arm, values: Sequence[Any]) -> Intervention:
    """The intervention of `arm` on a batch of items: its `for_items`, or the arm itself."""
    return arm.for_items(values) if isinstance(arm, PerItem) else arm


@contextmanager
def applied_all(model: Model, *interventions: Intervention) -> Iterator[None]:
    """Apply several interventions at once, in order; all are removed on exit."""
    with ExitStack() as stack:
        for intervention in interventions:
            stack.enter_context(intervention.applied(model))
        yield
