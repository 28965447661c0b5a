"""Explicit attention in blocks of query rows: the rows that attention hooks see.

For a layer that some hook of `interp.hooks.attention_hooks` wants, the attention output is
computed here instead of by SDPA. Per block of query rows: scores q·kᵀ·scale in float32,
the mask, softmax, the hooks (each reads the probabilities and may replace them, between
softmax and A·V), then A·V. Query heads that share a KV head (GQA) are scored as one matrix
product against that K and V, which are never repeated.

What is scored: a block covers keys 0 .. e-1, where e - 1 is the last key that any of its
rows sees. Under the causal mask that is the block's last query position, so an N-token
prompt costs about N²/2 scores per head, not N², and only the block's diagonal square
needs masking; with HF's 4D mask (padding) e comes from the mask and its slice is the
block's visibility. Nothing [query, key]-sized is built for the whole layer.

Memory: one block of float32 scores and probabilities [batch, head, block rows, keys] at a
time, sized by a byte budget, so the extra memory per layer is a small multiple of the
budget at any context length. The budget is 16 MiB on CPU, where a block that stays in
cache runs up to 2x faster than a 64 MiB one (single-thread CPU time at 4k tokens), and 64
MiB elsewhere, where large blocks amortise kernel launches; `INTERP_ATTENTION_BLOCK_BYTES`
sets it. A hook whose edit needs every row first (`PrepassHook`, e.g. ACT's m_j) gets a
first pass over all blocks: free when the rows fit one block, otherwise the scores are
computed twice, still one block at a time.

Arguments beyond the mask, each as the model's eager kernel applies it: an additive float
mask per head (ALiBi: BLOOM-style biases that Falcon folds into the mask) is added to the
scores; `softcap` (Gemma-2) maps scores to softcap·tanh(scores / softcap) before the mask;
`sinks` (gpt-oss's learned per-head logits) join each row's softmax as one extra column
that is then dropped, so a row's probabilities sum to its `mass`, 1 minus the sink's share.

Gradients: nothing is modified in place after the softmax and masked scores are finite
(the lowest float, not -inf), so a backward pass works through any hook and rows that see
no key (padding) give zeros, not NaN.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.errors import HookError

# Budget in bytes for one block of float32 scores [batch, head, query rows, key]; None
# picks it by device (_DEFAULT_BLOCK_BYTES).
_BLOCK_BYTES: int | None = (
    int(os.environ["INTERP_ATTENTION_BLOCK_BYTES"])
    if "INTERP_ATTENTION_BLOCK_BYTES" in os.environ
    else None
)
_DEFAULT_BLOCK_BYTES = {"cpu": 16 * 2**20}
_OTHER_DEVICES_BLOCK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class AttentionRows:
    """Post-softmax attention of one layer for a block of query rows.

    The key axis is narrowed to the block: it holds keys 0 .. `probs.shape[-1]` - 1 of the
    forward's `n_keys` keys (cache included) and ends after the last key that some row of
    the block sees. Under the causal mask that is the block's last query position, so keys
    hidden from the whole block are neither scored nor stored; a decode step and a prompt's
    last block hold all `n_keys` keys. On a sliding-window layer whose cache dropped its
    first positions, the kernel puts them back as keys no query sees
    (`at_absolute_positions`), so key indices are positions on every layer. A per-key
    reduction adds each block into the first `probs.shape[-1]` entries of an [..., n_keys]
    accumulator, and a hook that replaces probs returns a tensor of the block's (narrowed)
    shape.

    Attributes:
        layer: decoder layer index.
        probs: [batch, head, query, key] float32 over the block's keys; each row sums to 1
            over its visible keys, and a row that sees no key (a padded query) is all 0.
        query_positions: [query] index of each query row on the key axis (cache included).
        n_queries: number of query rows in this forward (1 at a decode step).
        n_keys: number of keys in this forward (cache included): the full key axis.
        mask: [batch, query, key] the block's slice of HF's mask (True = visible), or None
            when the layer is causal and HF passed no mask; `visible` reads either.
        mass: [batch, head, query] each row's total over the keys when a learned sink takes
            the rest (gpt-oss); None when rows sum to 1. An edit that renormalises rows
            scales them to this total.
    """

    layer: int
    probs: Float[Tensor, "batch head query key"]
    query_positions: Int[Tensor, " query"]
    n_queries: int
    n_keys: int
    mask: Bool[Tensor, "batch query key"] | None = None
    mass: Float[Tensor, "batch head query"] | None = None

    @property
    def is_decode(self) -> bool:
        return self.n_queries == 1

    @property
    def visible(self) -> Bool[Tensor, "batch query key"]:
        """True where the key is visible to the query (causal mask and padding applied).

        Built on each access from the positions when there is no mask ([query, key] bools,
        expanded over the batch): read it, never write to it.
        """
        if self.mask is not None:
            return self.mask
        keys = torch.arange(self.probs.shape[-1], device=self.probs.device)
        causal = keys[None, :] <= self.query_positions[:, None]
        return causal.expand(self.probs.shape[0], -1, -1)


class AttentionHook(Protocol):
    """Reads, and optionally replaces, attention probabilities of the layers it wants."""

    def wants(self, layer: int, n_queries: int) -> bool:
        """Whether to compute explicit rows for `layer` in a forward with `n_queries` rows."""
        ...

    def __call__(self, rows: AttentionRows) -> Tensor | None:
        """Return replacement probs of `rows.probs`' shape, or None to leave them."""
        ...


@runtime_checkable
class RowsHook(AttentionHook, Protocol):
    """An attention hook that edits some batch rows of a layer only (per-row interventions).

    The rows it does not edit, where no other hook edits them either, get the model's own
    kernel's output (`rows_edited`), so each row computes exactly what it computes when run
    with only its own edits.
    """

    def edited_rows(self, layer: int) -> Bool[Tensor, " batch"] | None:
        """The batch rows this hook edits in `layer` (None: every row)."""
        ...


def rows_edited(hooks: list[AttentionHook], layer: int) -> Tensor | None:
    """[batch] True where some hook edits the row in `layer`; None when every row is."""
    edited = None
    for hook in hooks:
        rows = hook.edited_rows(layer) if isinstance(hook, RowsHook) else None
        if rows is None:
            return None
        edited = rows if edited is None else edited | rows.to(edited.device)
    return edited


@runtime_checkable
class PrepassHook(AttentionHook, Protocol):
    """An attention hook whose edit of any row depends on all rows of the layer (ACT's m_j).

    Where `needs_prepass` holds, every block of the layer's rows goes to `prepare`, in order,
    before the first block goes to `__call__`: `prepare` accumulates what the edit needs
    (per-key column sums) and `__call__` then edits block by block. `prepare` sees the
    model's own rows, before any hook's edit.
    """

    def needs_prepass(self, layer: int, n_queries: int, n_keys: int) -> bool:
        """Whether this forward's rows of `layer` must all be prepared before any edit.

        Asked once per wanted layer and forward, before any of its blocks: a hook may
        reset its per-forward state here.
        """
        ...

    def prepare(self, rows: AttentionRows) -> None:
        """Read one block of the first pass."""
        ...


@dataclass(frozen=True)
class _Blocks:
    """One layer's scaled queries, keys and mask, turned into rows one block at a time."""

    layer: int
    query: Float[Tensor, "batch kv_head group query d_head"]  # float32, already scaled
    key: Float[Tensor, "batch kv_head key d_head"]  # float32
    mask: Tensor | None  # HF's 4D mask [batch or 1, 1 or head, query, key]; None: causal or full
    causal: bool
    hidden: Bool[Tensor, "row row"] | None  # strict upper triangle of the largest block
    softcap: float | None = None  # Gemma-2's attention logit softcapping
    sinks: Float[Tensor, " head"] | None = None  # float32 logits of gpt-oss's learned sinks

    def rows(self, start: int, stop: int) -> AttentionRows:
        """Rows for query rows start..stop-1 over the keys some of them see."""
        batch, n_kv, group, n_queries, d_head = self.query.shape
        n_keys, n_rows = self.key.shape[2], stop - start
        offset = n_keys - n_queries  # queries are the last n_queries positions of the key axis
        device = self.query.device
        positions = torch.arange(start + offset, stop + offset, device=device)
        mask, bias = None, None
        if self.mask is not None:
            block = self.mask[:, :, start:stop]
            if block.dtype == torch.bool:
                allowed = block[:, 0]
            else:  # additive: 0 or a bias (ALiBi) where visible, the dtype's lowest where not
                allowed = block[:, 0] > torch.finfo(block.dtype).min / 2
                bias = block
            end = _keys_seen(allowed)
            mask = allowed[..., :end].expand(batch, -1, -1)
        elif self.causal:
            end = stop + offset
        else:
            end = n_keys
            mask = torch.ones((), dtype=torch.bool, device=device).expand(batch, n_rows, end)
        queries = self.query[:, :, :, start:stop].reshape(batch, n_kv, group * n_rows, d_head)
        scores = torch.matmul(queries, self.key[:, :, :end].transpose(-1, -2))
        scores = scores.view(batch, n_kv * group, n_rows, end)  # [batch, head, query, key]
        if self.softcap is not None:
            scores = torch.tanh(scores / self.softcap) * self.softcap
        if bias is not None:  # 0 where visible, or ALiBi's bias; hidden keys are masked below
            scores = scores + bias[..., :end].float()
        # The lowest float, not -inf: a row that sees nothing gets a finite softmax (zeroed
        # below), so no NaN reaches the output or the gradients.
        lowest = torch.finfo(scores.dtype).min
        if mask is not None:
            scores.masked_fill_(~mask[:, None], lowest)
        else:  # causal: keys before the block's diagonal square are visible to all its rows
            assert self.hidden is not None
            scores[..., start + offset :].masked_fill_(self.hidden[:n_rows, :n_rows], lowest)
        mass = None
        if self.sinks is None:
            probs = torch.softmax(scores, dim=-1)
        else:  # the sink is one more column of the softmax, dropped after it
            sink = self.sinks.view(1, -1, 1, 1).expand(batch, -1, n_rows, 1)
            probs = torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]
        if mask is not None:
            empty = ~mask.any(-1)  # [batch, query]: padded query rows
            if empty.any():
                probs = probs.masked_fill(empty[:, None, :, None], 0.0)
        if self.sinks is not None:
            mass = probs.sum(-1)
        return AttentionRows(self.layer, probs, positions, n_queries, n_keys, mask, mass)


def _keys_seen(allowed: Bool[Tensor, "batch query key"]) -> int:
    """How many leading keys a block needs: up to the last key any of its rows sees."""
    seen = allowed.any(1).any(0).nonzero()
    return int(seen[-1]) + 1 if len(seen) else 1


def at_absolute_positions(
    key: Float[Tensor, "batch kv_head key d_head"],
    value: Float[Tensor, "batch kv_head key d_head"],
    attention_mask: Tensor | None,
    causal: bool,
    n_queries: int,
    dropped: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Keys, values and a mask whose key axis starts at position 0 again, for a layer whose
    cache dropped its first `dropped` positions (a sliding window): those positions come
    back as zero keys and values that no query sees, so hooks index keys by position on
    every layer, and the output is the same.
    """
    batch, n_kv, n_keys, _ = key.shape
    if attention_mask is None:  # the pattern the kernel would apply: causal or full
        seen = torch.ones(n_queries, n_keys, dtype=torch.bool, device=key.device)
        if causal:  # query i sits at key n_keys - n_queries + i
            seen = seen.tril(n_keys - n_queries)
        attention_mask = seen[None, None]
    hidden = False if attention_mask.dtype == torch.bool else torch.finfo(attention_mask.dtype).min
    pad = attention_mask.new_full((*attention_mask.shape[:-1], dropped), hidden)

    def padded(states: Tensor) -> Tensor:
        return torch.cat([states.new_zeros(batch, n_kv, dropped, states.shape[-1]), states], 2)

    return padded(key), padded(value), torch.cat([pad, attention_mask], dim=-1)


def _block_rows(batch: int, n_heads: int, n_keys: int, device: torch.device) -> int:
    budget = _BLOCK_BYTES or _DEFAULT_BLOCK_BYTES.get(device.type, _OTHER_DEVICES_BLOCK_BYTES)
    return max(1, budget // max(1, 4 * batch * n_heads * n_keys))


def explicit_attention(
    layer: int,
    hooks: list[AttentionHook],
    query: Float[Tensor, "batch head query d_head"],
    key: Float[Tensor, "batch kv_head key d_head"],
    value: Float[Tensor, "batch kv_head key d_head"],
    attention_mask: Tensor | None,
    scale: float,
    causal: bool,
    softcap: float | None = None,
    sinks: Float[Tensor, " head"] | None = None,
) -> Float[Tensor, "batch query head d_head"]:
    """Attention output with `hooks` applied to the probabilities of every block of rows.

    `attention_mask` is HF's 4D mask (bool, or additive float, with a per-head bias for
    ALiBi) or None for a plain causal (or, with `causal=False`, full) pattern; `softcap`
    and `sinks` as the model's eager kernel applies them. Returns the output in `query`'s
    dtype, laid out as HF attention functions return it.
    """
    batch, n_heads, n_queries, d_head = query.shape
    n_kv, n_keys = key.shape[1], key.shape[2]
    size = min(n_queries, _block_rows(batch, n_heads, n_keys, query.device))
    hidden = None
    if attention_mask is None and causal:
        hidden = torch.ones(size, size, dtype=torch.bool, device=query.device).triu_(1)
    # Query heads h = kv * group + j share kv head `kv` (HF repeat_kv order): group them
    # instead of copying K and V `group` times. The scale goes on the queries, not the scores.
    grouped = (query.float() * scale).reshape(batch, n_kv, n_heads // n_kv, n_queries, d_head)
    sink_logits = None if sinks is None else sinks.float()
    blocks = _Blocks(
        layer, grouped, key.float(), attention_mask, causal, hidden, softcap, sink_logits
    )
    value = value.float()
    out = query.new_empty(batch, n_queries, n_heads, value.shape[-1])
    spans = [(start, min(n_queries, start + size)) for start in range(0, n_queries, size)]
    prepass = [
        h for h in hooks if isinstance(h, PrepassHook) and h.needs_prepass(layer, n_queries, n_keys)
    ]
    if prepass and len(spans) > 1:  # first pass: every block, before any edit
        for span in spans:
            _prepare(prepass, blocks.rows(*span))
    for start, stop in spans:
        rows = blocks.rows(start, stop)
        if prepass and len(spans) == 1:  # one block: both passes see these rows
            _prepare(prepass, rows)
        probs = _apply(hooks, rows)
        end = probs.shape[-1]
        mixed = torch.matmul(probs.reshape(batch, n_kv, -1, end), value[:, :, :end])
        out[:, start:stop] = mixed.view(batch, n_heads, stop - start, -1).transpose(1, 2)
    return out


def _prepare(hooks: list[PrepassHook], rows: AttentionRows) -> None:
    for hook in hooks:
        hook.prepare(rows)


def _apply(hooks: list[AttentionHook], rows: AttentionRows) -> Tensor:
    """Run the hooks in order, each on the rows as the previous ones left them."""
    for hook in hooks:
        edited = hook(rows)
        if edited is None:
            continue
        if edited.shape != rows.probs.shape:
            raise HookError(
                f"{type(hook).__name__} returned probs of shape {tuple(edited.shape)} for"
                f" layer {rows.layer}; expected {tuple(rows.probs.shape)}: the block's rows"
                " over its narrowed key axis (see AttentionRows)."
            )
        rows = replace(rows, probs=edited)
    return rows.probs
