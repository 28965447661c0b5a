"""TransformerLens hook names on any HF causal LM: record, hook and patch activations.

`HOOK_POINTS` maps each TransformerLens (TL) name form (`blocks.{layer}.attn.hook_z`, ...)
onto a hook family of `interp.hooks`, with the shape TL's TransformerBridge gives it, so
    record(model, ids, ["blocks.3.attn.hook_pattern"])
returns a dict of tensors in one line, `hooked(hf, {name: fn})` reads or replaces them by
name, and `patched(hf, source, patches)` writes activations recorded in one run into another
for chosen (row, head, positions): one patched forward can patch a different head, from a
different source row, in each batch row, so a sweep over heads is a batched forward.

Memory: `record` keeps what it is asked for, one tensor per name; `hook_pattern` is the one
S×S point ([batch, head, query_pos, key_pos] float32 per asked layer, computed with explicit
attention only for those layers, SDPA elsewhere), and `hook_result` is [batch, pos, head,
d_model] per asked layer. Unlike the bridge, nothing is computed for names nobody asked for.
"""

from __future__ import annotations

import inspect
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from interp.errors import HookError, InputError
from interp.explicit_attention import AttentionRows
from interp.hooks import (
    attention_hooks,
    decoder_layers,
    head_output_hooks,
    head_result_hooks,
    output_hooks,
    qkv_hooks,
    residual_hooks,
)
from interp.models import Model, geometry_of

__all__ = ["HOOK_POINTS", "HeadPatch", "HookPoint", "hooked", "patched", "record"]


@dataclass(frozen=True)
class HookPoint:
    """Where a TL name is hooked (the `interp.hooks` family) and the shape it has."""

    family: str
    shape: str


HOOK_POINTS: dict[str, HookPoint] = {
    "blocks.{layer}.hook_resid_pre": HookPoint("residual_hooks", "[batch, pos, d_model]"),
    "blocks.{layer}.hook_resid_post": HookPoint("output_hooks/layer", "[batch, pos, d_model]"),
    "blocks.{layer}.hook_attn_out": HookPoint("output_hooks/attention", "[batch, pos, d_model]"),
    "blocks.{layer}.hook_mlp_out": HookPoint("output_hooks/mlp", "[batch, pos, d_model]"),
    "blocks.{layer}.attn.hook_q": HookPoint("qkv_hooks/q", "[batch, pos, head, d_head]"),
    "blocks.{layer}.attn.hook_k": HookPoint("qkv_hooks/k", "[batch, pos, kv_head, d_head]"),
    "blocks.{layer}.attn.hook_v": HookPoint("qkv_hooks/v", "[batch, pos, kv_head, d_head]"),
    "blocks.{layer}.attn.hook_z": HookPoint("head_output_hooks", "[batch, pos, head, d_head]"),
    "blocks.{layer}.attn.hook_result": HookPoint(
        "head_result_hooks", "[batch, pos, head, d_model]"
    ),
    "blocks.{layer}.attn.hook_pattern": HookPoint(
        "attention_hooks", "[batch, head, query_pos, key_pos]"
    ),
}
_PATTERNS = {
    re.compile(re.escape(form).replace(r"\{layer\}", r"(\d+)") + "$"): form for form in HOOK_POINTS
}

HookFn = Callable[[Tensor], Tensor | None]
PatchPoint = Literal["z", "q", "k", "v"]


def _parse(name: str, n_layers: int) -> tuple[str, int]:
    """(name form, layer) of a TL hook name; InputError listing the valid forms otherwise."""
    for pattern, form in _PATTERNS.items():
        match = pattern.match(name)
        if match:
            layer = int(match.group(1))
            if layer >= n_layers:
                raise InputError(f"{name!r}: layer {layer} of a {n_layers}-layer model.")
            return form, layer
    raise InputError(f"Unknown hook point {name!r}; valid forms: {', '.join(HOOK_POINTS)}.")


@contextmanager
def hooked(hf: nn.Module, fns: Mapping[str, HookFn]) -> Iterator[None]:
    """Call `fns[name](activation)` for each TL-named point; a returned tensor replaces it.

    Replacements keep the autograd graph. `hook_pattern` functions get the layer's whole
    [batch, head, query_pos, key_pos] pattern once per forward (explicit attention for that
    layer), and a replacement is applied between softmax and A·V. Removes everything in
    `finally`; nests with itself and every `interp.hooks` context.

    Example:
        >>> from interp.tiny_models import tiny_llama
        >>> model = tiny_llama()
        >>> ids = model.encode("hello").input_ids
        >>> with hooked(model.hf, {"blocks.1.attn.hook_z": lambda z: z * 0}):
        ...     logits = model.hf(ids).logits
    """
    by_form: dict[str, dict[int, HookFn]] = defaultdict(dict)
    n_layers = len(decoder_layers(hf))
    for name, fn in fns.items():
        form, layer = _parse(name, n_layers)
        by_form[HOOK_POINTS[form].family][layer] = fn

    def per_layer(table: dict[int, HookFn]) -> Callable[[int, Tensor], Tensor | None]:
        return lambda layer, x: table[layer](x)

    with ExitStack() as stack:
        for family, table in by_form.items():
            layers = sorted(table)
            if family == "residual_hooks":
                stack.enter_context(residual_hooks(hf, per_layer(table), layers))
            elif family == "head_output_hooks":
                stack.enter_context(head_output_hooks(hf, per_layer(table), layers))
            elif family == "head_result_hooks":
                stack.enter_context(head_result_hooks(hf, per_layer(table), layers))
            elif family.startswith("output_hooks/"):
                part = family.split("/")[1]
                stack.enter_context(output_hooks(hf, per_layer(table), part, layers))  # type: ignore[arg-type]
            elif family.startswith("qkv_hooks/"):
                kind = family.split("/")[1]
                stack.enter_context(qkv_hooks(hf, _only(kind, table), layers))
            else:
                assert family == "attention_hooks", family
                stack.enter_context(attention_hooks(hf, _PatternHook(table)))
        yield


def _only(kind: str, table: dict[int, HookFn]) -> Callable[[int, str, Tensor], Tensor | None]:
    return lambda layer, k, x: table[layer](x) if k == kind and layer in table else None


class _PatternHook:
    """Hands a layer's whole pattern to a function, then applies its replacement by block.

    A prepass hook: every block of the layer's rows is assembled into one [batch, head,
    query, key] tensor before the first edit, so the function sees the whole pattern.
    """

    def __init__(self, fns: dict[int, HookFn]) -> None:
        self.fns = fns
        self.whole: Tensor | None = None
        self.replacement: Tensor | None = None
        self.called = False

    def wants(self, layer: int, n_queries: int) -> bool:
        return layer in self.fns

    def needs_prepass(self, layer: int, n_queries: int, n_keys: int) -> bool:
        self.whole, self.replacement, self.called = None, None, False
        return True

    def prepare(self, rows: AttentionRows) -> None:
        batch, heads, _, end = rows.probs.shape
        if self.whole is None:
            self.whole = rows.probs.new_zeros(batch, heads, rows.n_queries, rows.n_keys)
        self.whole[:, :, _query_rows(rows), :end] = rows.probs

    def __call__(self, rows: AttentionRows) -> Tensor | None:
        if not self.called:
            self.called = True
            whole = self.whole
            assert whole is not None  # prepare saw every block first
            self.replacement = self.fns[rows.layer](whole)
            if self.replacement is not None and self.replacement.shape != whole.shape:
                raise HookError(
                    f"A hook_pattern function returned {tuple(self.replacement.shape)} for"
                    f" layer {rows.layer}; expected {tuple(whole.shape)}."
                )
        if self.replacement is None:
            return None
        return self.replacement[:, :, _query_rows(rows), : rows.probs.shape[-1]]


def _query_rows(rows: AttentionRows) -> Tensor:
    """Indices of the block's query rows among the forward's queries."""
    return rows.query_positions - (rows.n_keys - rows.n_queries)


def record(
    model: Model | nn.Module,
    inputs: Mapping[str, Any] | Tensor,
    names: Sequence[str],
    *,
    grad: bool = False,
) -> dict[str, Tensor]:
    """Run one forward and return the activations named in TL's vocabulary.

    Args:
        model: a `Model` or the HF module itself.
        inputs: an `Encoding` (or any dict of forward kwargs), or a [batch, pos] ids tensor.
        names: TL hook names, e.g. "blocks.3.attn.hook_pattern" (forms: `HOOK_POINTS`).
        grad: run with gradients on and return tensors still in the graph.

    Returns:
        {name: tensor}, shapes as TransformerBridge gives them (`HOOK_POINTS`).

    Example:
        >>> from interp.tiny_models import tiny_llama
        >>> model = tiny_llama()
        >>> acts = record(model, model.encode("hello"), ["blocks.1.attn.hook_pattern"])
        >>> acts["blocks.1.attn.hook_pattern"].shape
        torch.Size([1, 4, 5, 5])
    """
    hf = model.hf if isinstance(model, Model) else model
    kwargs = {"input_ids": inputs} if isinstance(inputs, Tensor) else dict(inputs)
    out: dict[str, Tensor] = {}

    def keep(name: str) -> HookFn:
        def fn(x: Tensor) -> None:
            out[name] = x if grad else x.detach()

        return fn

    kwargs.setdefault("use_cache", False)  # only the hooks' reads are wanted, not a KV cache
    if "logits_to_keep" in inspect.signature(hf.forward).parameters:
        kwargs.setdefault("logits_to_keep", 1)  # nor all positions' logits
    with torch.set_grad_enabled(grad), hooked(hf, {name: keep(name) for name in names}):
        hf(**kwargs)
    return out


@dataclass(frozen=True)
class HeadPatch:
    """Write one head's source activation into one batch row of a patched forward.

    Attributes:
        row: the batch row of the patched forward.
        layer: decoder layer.
        head: query head for "z" and "q"; KV head for "k" and "v".
        source_row: the row of the source activations to copy (default: `row`).
        positions: padded positions to patch (default: all); negative counts from the end.
        point: which activation: "z" (`hook_z`), "q", "k" or "v" (`hook_q/k/v`).
    """

    row: int
    layer: int
    head: int
    source_row: int | None = None
    positions: tuple[int, ...] | None = None
    point: PatchPoint = "z"

    def __post_init__(self) -> None:
        if self.point not in get_args(PatchPoint):
            raise InputError(f"HeadPatch point {self.point!r}; expected one of z, q, k, v.")
        if min(self.row, self.layer, self.head, self.source_row or 0) < 0:
            raise InputError(f"HeadPatch indices must be >= 0, got {self}.")
        if self.positions is not None:  # an int, a sequence or a tensor of positions
            positions = torch.as_tensor(self.positions).reshape(-1).tolist()
            object.__setattr__(self, "positions", tuple(int(p) for p in positions))


@dataclass(frozen=True)
class _Writes:
    """Flat indices of every (row, pos, head) a group of patches writes, and where from."""

    rows: Tensor
    positions: Tensor
    heads: Tensor
    source_rows: Tensor

    @classmethod
    def of(cls, patches: list[HeadPatch], n_pos: int, n_heads: int, n_source: int) -> _Writes:
        rows, positions, heads, source_rows = [], [], [], []
        every = torch.arange(n_pos)
        for patch in patches:
            source = patch.row if patch.source_row is None else patch.source_row
            if patch.head >= n_heads or source >= n_source:
                raise InputError(f"{patch}: head must be < {n_heads} and source row < {n_source}.")
            pos = every if patch.positions is None else torch.tensor(patch.positions)
            if len(pos) and not (-n_pos <= int(pos.min()) and int(pos.max()) < n_pos):
                raise InputError(f"{patch}: positions must lie in [-{n_pos}, {n_pos}).")
            pos = pos % n_pos
            positions.append(pos)
            rows.append(torch.full_like(pos, patch.row))
            heads.append(torch.full_like(pos, patch.head))
            source_rows.append(torch.full_like(pos, source))
        writes = cls(*(torch.cat(t) for t in (rows, positions, heads, source_rows)))
        flat = (writes.rows * n_pos + writes.positions) * n_heads + writes.heads
        if len(flat.unique()) != len(flat):
            raise InputError("Two patches write the same (row, position, head); merge them.")
        return writes

    def apply(self, x: Tensor, source: Tensor) -> Tensor:
        if self.rows.numel() and int(self.rows.max()) >= x.shape[0]:
            raise HookError(
                f"A patch targets row {int(self.rows.max())} of a {x.shape[0]}-row batch."
            )
        if x.shape[1:] != source.shape[1:]:
            raise HookError(
                f"Source activations {tuple(source.shape)} do not fit {tuple(x.shape)}:"
                " record the source on inputs of the same padded length."
            )
        device = x.device
        rows, positions, heads = (t.to(device) for t in (self.rows, self.positions, self.heads))
        values = source[
            self.source_rows.to(source.device), positions.to(source.device), heads.to(source.device)
        ]
        return x.index_put((rows, positions, heads), values.to(device, x.dtype))


@contextmanager
def patched(
    hf: nn.Module, source: Mapping[str, Tensor], patches: Sequence[HeadPatch]
) -> Iterator[None]:
    """Inside, forwards of `hf` carry the source activations the patches name.

    `source` maps TL names (`blocks.{layer}.attn.hook_z`, `hook_q`, `hook_k`, `hook_v`) to
    activations recorded by `record` on inputs of the same padded length; each patch copies
    its head's [d_head] vectors at its positions from `source_row` into `row`. Everything
    else is bit-for-bit the unpatched forward. Gradients flow through the patched tensors.

    Example:
        >>> from interp.tiny_models import tiny_llama
        >>> model = tiny_llama()
        >>> clean, corrupt = model.encode(["abcd", "abcd"]), model.encode(["abce", "abcf"])
        >>> source = record(model, corrupt, ["blocks.1.attn.hook_z"])
        >>> patches = [HeadPatch(row=0, layer=1, head=0), HeadPatch(row=1, layer=1, head=3)]
        >>> with patched(model.hf, source, patches):
        ...     logits = model.hf(**clean).logits
    """
    geometry = geometry_of(hf)
    groups: dict[str, list[HeadPatch]] = defaultdict(list)
    for patch in patches:
        groups[f"blocks.{patch.layer}.attn.hook_{patch.point}"].append(patch)
    missing = sorted(set(groups) - set(source))
    if missing:
        raise HookError(f"patched: no source activations for {missing[:3]}: record them first.")
    functions = {}
    for name, group in groups.items():
        values = source[name]
        n_heads = geometry.n_heads if group[0].point in ("z", "q") else geometry.n_kv_heads
        writes = _Writes.of(group, values.shape[1], n_heads, values.shape[0])
        functions[name] = _writer(writes, values)
    with hooked(hf, functions):
        yield


def _writer(writes: _Writes, values: Tensor) -> HookFn:
    return lambda x: writes.apply(x, values)
