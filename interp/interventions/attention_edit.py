"""Edit chosen heads' attention probabilities between softmax and A·V.

The primitive that ACT, VAR, uniform masking and circuit repair build on. For each selected
head the edit function receives that layer's post-softmax rows and returns new rows; the
toolkit zeroes invisible keys and renormalises each row to sum to 1 over visible keys (in
float32, guarding empty rows; under gpt-oss's learned sinks, to the row's own total, so the
sink keeps its share). It runs in prefill and at every decode step, so generation
with the KV cache sees the same edit as full re-forwards. An edit that needs all of a
layer's rows first (ACT's sinks) also implements `PreparedEditFn`. Cost: explicit attention
for the selected layers only (see interp.hooks); other layers keep the fused kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

from interp.errors import ConfigError, HookError
from interp.heads import Heads, RowHeads, as_heads
from interp.hooks import AttentionRows, attention_hooks
from interp.interventions.base import PerRow, function_name
from interp.models import Model

# fn(rows, head_index) -> new probs [batch, len(head_index), query, key] for those heads,
# over the block's keys (rows.probs.shape[-1], see AttentionRows).
EditFn = Callable[[AttentionRows, Tensor], Tensor]


@runtime_checkable
class PreparedEditFn(Protocol):
    """An edit that reads all of a layer's rows before editing any (`hooks.PrepassHook`)."""

    def __call__(self, rows: AttentionRows, index: Tensor) -> Tensor: ...

    def needs_prepass(self, layer: int, n_queries: int, n_keys: int) -> bool: ...

    def prepare(self, rows: AttentionRows, index: Tensor) -> None: ...


Phase = Literal["all", "prefill", "decode"]


@dataclass(frozen=True)
class AttentionEdit:
    """Replace the attention rows of `heads` by `fn(rows, head_index)`, renormalised.

    A value: edits with the same heads, function, phase and renormalisation compare equal
    and hash alike. `to_dict()` names the function by its qualified name, so use a named,
    module-level function for a reproducible record (a lambda is recorded as `<lambda>`).

    Attributes:
        heads: query heads to edit (per query head, never a shared KV head); `RowHeads`
            edits each batch row's own set: `fn` sees the union of the rows' heads in a
            layer, each row keeps its unselected heads' rows, and a row with no head in a
            layer gets the model's own kernel there (`interp.explicit_attention.RowsHook`).
        fn: the edit; receives all heads' rows and the selected heads' indices in this layer.
        phase: "all" (prefill and decode), "prefill" or "decode" forwards only.
        renormalize: rescale edited rows to sum to 1 over visible keys.
    """

    heads: Heads
    fn: EditFn
    phase: Phase = "all"
    renormalize: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", as_heads(self.heads))
        if self.phase not in ("all", "prefill", "decode"):
            raise ConfigError(
                f"AttentionEdit.phase must be all/prefill/decode, got {self.phase!r}."
            )

    def to_dict(self) -> dict[str, Any]:
        """The reproducible record of this edit (the function by `module:qualname`)."""
        return {
            "intervention": "AttentionEdit",
            "heads": self.heads.labels,
            "fn": function_name(self.fn),
            "phase": self.phase,
            "renormalize": self.renormalize,
        }

    def identity(self) -> AttentionEdit:
        """The same heads, phase and renormalisation, with the rows left as they are."""
        return AttentionEdit(self.heads, unchanged_rows, self.phase, self.renormalize)

    def select(self, rows: Sequence[int]) -> AttentionEdit:
        """The edit of batch rows `rows`: per-row heads and a per-row `fn` (`PerRow`) cut."""
        heads = self.heads.select(rows) if isinstance(self.heads, RowHeads) else self.heads
        fn = self.fn.select(rows) if isinstance(self.fn, PerRow) else self.fn
        return replace(self, heads=heads, fn=fn)  # type: ignore[arg-type]

    @contextmanager
    def applied(self, model: Model) -> Iterator[None]:
        selected = self.heads.mask(model.geometry)  # validates the heads
        per_row = selected if isinstance(self.heads, RowHeads) else None
        with attention_hooks(model.hf, _EditHook(self, per_row)):
            yield


class _EditHook:
    def __init__(self, edit: AttentionEdit, per_row: Tensor | None) -> None:
        self.edit = edit
        self.by_layer = edit.heads.index_by_layer()
        self.per_row = per_row  # [layer, row, head] for RowHeads, else None

    def edited_rows(self, layer: int) -> Tensor | None:
        return None if self.per_row is None else self.per_row[layer].any(-1)

    def wants(self, layer: int, n_queries: int) -> bool:
        phase = self.edit.phase
        in_phase = phase == "all" or (phase == "decode") == (n_queries == 1)
        return layer in self.by_layer and in_phase

    def needs_prepass(self, layer: int, n_queries: int, n_keys: int) -> bool:
        fn = self.edit.fn
        return (
            isinstance(fn, PreparedEditFn)
            and self.wants(layer, n_queries)
            and fn.needs_prepass(layer, n_queries, n_keys)
        )

    def prepare(self, rows: AttentionRows) -> None:
        fn = self.edit.fn
        assert isinstance(fn, PreparedEditFn)  # needs_prepass asked for this pass
        fn.prepare(rows, self.by_layer[rows.layer].to(rows.probs.device))

    def __call__(self, rows: AttentionRows) -> Tensor:
        index = self.by_layer[rows.layer].to(rows.probs.device)
        new = self.edit.fn(rows, index).float()
        new = new.masked_fill(~rows.visible[:, None], 0.0)
        if self.edit.renormalize:
            new = new / new.sum(-1, keepdim=True).clamp_min(torch.finfo(new.dtype).tiny)
            if rows.mass is not None:  # a learned sink keeps its share of each row
                new = new * rows.mass[:, index, :, None]
        if self.per_row is not None:  # each row edits its own heads only
            chosen = self.per_row[rows.layer].to(rows.probs.device)[:, index]
            if chosen.shape[0] != new.shape[0]:
                raise HookError(
                    f"AttentionEdit has heads for {chosen.shape[0]} rows; the batch has"
                    f" {new.shape[0]}."
                )
            new = torch.where(chosen[:, :, None, None], new, rows.probs[:, index])
        probs = rows.probs.clone()
        probs[:, index] = new
        return probs


def unchanged_rows(rows: AttentionRows, index: Tensor) -> Tensor:
    """The identity edit: the selected heads' rows as the model computed them."""
    return rows.probs[:, index]


def uniform_rows(rows: AttentionRows, index: Tensor) -> Tensor:
    """The uniform edit: 1 on every visible key (renormalised to 1/n by AttentionEdit)."""
    shape = (rows.probs.shape[0], len(index), *rows.probs.shape[2:])
    return rows.visible[:, None].expand(shape).float()


def uniform_attention(heads: Heads, phase: Phase = "all") -> AttentionEdit:
    """Each selected head attends uniformly to its visible keys: it outputs mean(V), not 0.

    This is Wu et al.'s retrieval-head masking (their code zeroes the query, which gives
    uniform attention); use phase="decode" to match their code, which masks decode only.
    """
    return AttentionEdit(heads, uniform_rows, phase=phase)
