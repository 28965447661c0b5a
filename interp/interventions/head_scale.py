"""Scale, zero or mean-ablate chosen heads' outputs (z, before the output projection).

z <- alpha * z for the selected query heads at every position, prefill and decode alike
(alpha = 0 masks, 2 reinforces as in VHR). Because the output projection's bias is added
after the sum over heads, this scales exactly the head's contribution. `mode="mean"`
replaces z by a reference mean (Wang et al.'s mean ablation). Works with any attention
kernel and costs one multiply per selected layer. Method notes: docs/methods.md §4.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import ConfigError, HookError
from interp.heads import HeadGeometry, Heads, RowHeads, as_heads
from interp.hooks import head_output_hooks
from interp.interventions.base import tensor_digest
from interp.models import Model
from interp.prompts import as_texts


@dataclass(frozen=True, eq=False)
class HeadScale:
    """Scale (or mean-ablate) the outputs of `heads`.

    A value: equal settings compare equal and hash alike, the reference by content (it is
    copied at construction, so later changes to the caller's tensor do not leak in).

    Attributes:
        heads: query heads to act on: a HeadSet, labels ("L18H8", ["L18H8", "L3H1"]) or
            (layer, head) pairs; or `RowHeads`, one set per batch row.
        alpha: factor for mode "scale" (0 masks, 1 is bit-for-bit the identity).
        mode: "scale", or "mean" to replace z by `reference`.
        reference: [layer, head, d_head] mean z, required for mode "mean"
            (see `mean_head_outputs`).

    Example:
        >>> from interp.tiny_models import tiny_llama
        >>> model = tiny_llama()
        >>> ids = model.encode("hello").input_ids
        >>> with HeadScale("L2H1", alpha=0.0).applied(model):
        ...     out = model.hf.generate(ids, max_new_tokens=3, do_sample=False)
        >>> tuple(out.shape)
        (1, 8)
    """

    heads: Heads
    alpha: float = 0.0
    mode: Literal["scale", "mean"] = "scale"
    reference: Tensor | None = None
    _digest: dict[str, Any] | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", as_heads(self.heads))
        if self.mode not in ("scale", "mean"):
            raise ConfigError(f"HeadScale.mode must be 'scale' or 'mean', got {self.mode!r}.")
        if self.mode == "mean" and self.reference is None:
            raise ConfigError("HeadScale(mode='mean') needs a reference: see mean_head_outputs.")
        if self.mode == "scale" and self.reference is not None:
            raise ConfigError("HeadScale.reference is used by mode='mean' only; drop it.")
        if self.reference is not None:
            _check_reference(self.reference, self.heads)
            object.__setattr__(self, "reference", self.reference.detach().clone())
        digest = None if self.reference is None else tensor_digest(self.reference)
        object.__setattr__(self, "_digest", digest)

    def to_dict(self) -> dict[str, Any]:
        """The reproducible record of this intervention (the reference by its digest)."""
        return {
            "intervention": "HeadScale",
            "heads": self.heads.labels,
            "alpha": self.alpha,
            "mode": self.mode,
            "reference": self._digest,  # type: ignore[attr-defined]
        }

    def identity(self) -> HeadScale:
        """alpha = 1 on the same heads: bit-for-bit the plain model (z is read, not changed)."""
        return HeadScale(self.heads, alpha=1.0)

    def select(self, rows: Sequence[int]) -> HeadScale:
        """The intervention of batch rows `rows` (itself unless `heads` is per row)."""
        if not isinstance(self.heads, RowHeads):
            return self
        return HeadScale(self.heads.select(rows), self.alpha, self.mode, self.reference)

    def _key(self) -> tuple[object, ...]:
        d = self._digest
        reference = (d["sha256"], tuple(d["shape"]), d["dtype"]) if d else None
        return (self.heads, self.alpha, self.mode, reference)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._key() == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._key())

    @contextmanager
    def applied(self, model: Model) -> Iterator[None]:
        selected = self.heads.mask(model.geometry)  # validates the heads
        rows = len(self.heads) if isinstance(self.heads, RowHeads) else None

        def per_head(layer_values: Tensor) -> Tensor:
            """[head] -> [head, 1], or per row [row, head] -> [row, 1, head, 1], over z."""
            return layer_values[:, None] if rows is None else layer_values[:, None, :, None]

        if self.mode == "scale":
            factors = torch.where(selected, self.alpha, 1.0)  # [layer, (row,) head]
        else:
            _check_reference(self.reference, self.heads, model.geometry)  # type: ignore[arg-type]
        # Each layer's operands, moved once to the device and dtype of its z (under a
        # device_map layers live on different devices), so a decode step costs one op.
        operands: dict[int, tuple[Tensor, ...]] = {}

        def edit(layer: int, z: Float[Tensor, "batch pos head d_head"]) -> Tensor:
            if rows is not None and z.shape[0] != rows:
                raise HookError(f"HeadScale has heads for {rows} rows; the batch has {z.shape[0]}.")
            if layer not in operands:
                if self.mode == "scale":
                    operands[layer] = (per_head(factors[layer]).to(z.device, z.dtype),)
                else:
                    mean = self.reference[layer].to(z.device, z.dtype)  # type: ignore[index]
                    operands[layer] = (per_head(selected[layer]).to(z.device), mean)
            if self.mode == "scale":
                return z * operands[layer][0]
            chosen, mean = operands[layer]
            return torch.where(chosen, mean, z)

        with head_output_hooks(model.hf, edit, layers=self.heads.layers):
            yield


def _check_reference(reference: Tensor, heads: Heads, geometry: HeadGeometry | None = None) -> None:
    """Raise ConfigError unless `reference` is [layer, head, d_head] covering `heads`."""
    heads = heads.all_heads if isinstance(heads, RowHeads) else heads
    shape = tuple(reference.shape)
    if geometry is not None:
        ok = shape == (geometry.n_layers, geometry.n_heads, geometry.d_head)
    else:
        ok = len(shape) == 3 and all(h.layer < shape[0] and h.head < shape[1] for h in heads)
    if not ok:
        want = (
            f"({geometry.n_layers}, {geometry.n_heads}, {geometry.d_head})"
            if geometry
            else "[layer, head, d_head] covering the heads"
        )
        raise ConfigError(
            f"HeadScale.reference has shape {shape}, expected {want}: see mean_head_outputs."
        )


def mean_head_outputs(
    model: Model, prompts: str | Sequence[str]
) -> Float[Tensor, "layer head d_head"]:
    """Mean z over all positions of `prompts` (one text or several), per layer and head.

    The reference of mean ablation. Prompts run one at a time, so no padding enters the mean.
    """
    geometry = model.geometry
    total = torch.zeros(geometry.n_layers, geometry.n_heads, geometry.d_head)
    count = 0

    def accumulate(layer: int, z: Tensor) -> None:
        total[layer] += z.detach().float().sum(dim=(0, 1)).cpu()

    with torch.no_grad(), head_output_hooks(model.hf, accumulate):
        for prompt in as_texts(prompts):
            batch = model.encode(prompt)
            model.hf(**batch)
            count += batch.input_ids.shape[1]
    if count == 0:
        raise ConfigError("mean_head_outputs needs at least one non-empty prompt.")
    return total / count
