"""Prefilling prompts for the generation driver, plain or through a shared-prefix tree.

`prefill(model, prompts)` left-pads a batch and caches every prompt minus its last token in
one forward. `PrefixTree(model, prompts)` does the same for the prompts of a whole run but
computes each shared token prefix once: prompts of a run often share one (NIAH tests: the
chat template and the haystack before the needle; a longer test extends a shorter one's
haystack), and a causal model's keys and values at a position depend only on the tokens up
to it. The tree is a compressed prefix tree over the prompts minus their last token; the
children of a node run as one forward over the node's cache, copied to each child, with
their segments right-padded (a causal model's real tokens never see padding on their right,
so no mask is needed, and positions continue the node's: each equals the unshared run's).
`PrefixTree.prefill(prompts)` then lays the prompts' caches out left-padded, exactly as
`prefill` would (same mask and positions; padding columns are zero and masked, so they add
exactly nothing), and `interp.generation.decode` continues from either alike.

Exactness: a shared cache equals the unshared one up to float rounding (other matrix
shapes); the decode steps that follow run the unshared run's layout. Segment forwards have at
least two query rows, so attention hooks that want only decode steps (one query row) never
see them; hooks and interventions active around `PrefixTree.prefill` apply to its forwards.

Memory: a node's cache [layer, kv_head, pos, d_head] lives from its forward until no prompt
below it needs it (every child computed, or every prompt below served); a leaf's until its
prompt is taken. A prompt asked for again after that is recomputed.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from interp.encoding import Encoding
from interp.errors import InputError, UnsupportedModelError
from interp.models import Model

__all__ = [
    "Prefilled",
    "PrefixStats",
    "PrefixTree",
    "default_batch_size",
    "prefill",
    "supports_prefix_sharing",
]

# Tokens per batch (prompt plus budget, summed over rows) that `default_batch_size` aims
# for on CPU, where larger batches stop paying once the matrix products are compute-bound.
_CPU_BATCH_TOKENS = 8192
_MAX_BATCH = 64
# Siblings run in one forward while the longest segment is within this factor (plus a few
# tokens) of the shortest: right padding then wastes at most about a tenth of it.
_SIMILAR, _SLACK = 1.1, 8
KV = list[tuple[Tensor, Tensor]]  # per layer: keys and values [batch, kv_head, pos, d_head]


@dataclass
class Prefilled:
    """A batch after its prefill: what `interp.generation.decode` continues from.

    Attributes:
        batch: the left-padded prompts.
        rows: the prompt index of each batch row.
        cache: the KV cache of every prompt minus its last token.
    """

    batch: Encoding
    rows: tuple[int, ...]
    cache: DynamicCache

    def select(self, rows: Sequence[int]) -> Prefilled:
        """An independent copy of batch rows `rows` (in that order), to decode once.

        Decoding grows the cache in place, so a prefill shared by several decodes (each
        under another intervention, say) is decoded through copies.
        """
        index = torch.tensor(list(rows), dtype=torch.long, device=self.batch.input_ids.device)
        cache = copy.deepcopy(self.cache)
        if list(rows) != list(range(len(self.rows))):
            cache.batch_select_indices(index)
        batch = Encoding(self.batch.input_ids[index], self.batch.attention_mask[index])
        return Prefilled(batch, tuple(self.rows[i] for i in rows), cache)


def default_batch_size(model: Model, n_tokens: int) -> int:
    """How many prompts of `n_tokens` (prompt plus budget) to decode at once on the device.

    CPU: about 8k tokens per batch. CUDA: a quarter of the free memory over a row's KV
    cache with room for its activations (four times the cache). At most 64.
    """
    n_tokens = max(1, n_tokens)
    device = model.device
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        g = model.geometry
        element = torch.finfo(model.hf.dtype).bits // 8
        per_row = 2 * g.n_layers * g.n_kv_heads * g.d_head * element * n_tokens * 4
        return int(min(_MAX_BATCH, max(1, free // 4 // per_row)))
    return int(min(_MAX_BATCH, max(1, _CPU_BATCH_TOKENS // n_tokens)))


def _left_padded(model: Model, prompts: Sequence[Tensor]) -> Encoding:
    pad = model.tokenizer.pad_token_id
    return Encoding.left_padded(
        [p.tolist() for p in prompts], 0 if pad is None else pad, model.device
    )


@torch.no_grad()
def prefill(
    model: Model, prompts: Sequence[Tensor], rows: Sequence[int] | None = None
) -> Prefilled:
    """Left-pad `prompts` ([pos] ids each) into one batch and cache all but their last token.

    Args:
        model: the model (hooks and interventions active around this call apply).
        prompts: the batch's prompts.
        rows: the prompt index of each (default 0..n-1), reported in every `Step`.
    """
    batch = _left_padded(model, prompts)
    cache = DynamicCache(config=model.hf.config)
    if batch.input_ids.shape[1] > 1:
        # logits_to_keep=1: the prefill's logits are unused; all positions' would be
        # [batch, pos, vocab] floats (1.5 GB per row at 8k tokens for a 49k vocabulary).
        model.hf(
            batch.input_ids[:, :-1],
            **_padding_kwargs(batch, slice(None, -1)),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
    return Prefilled(batch, tuple(range(len(prompts)) if rows is None else rows), cache)


def _padding_kwargs(batch: Encoding, columns: slice) -> dict[str, Tensor]:
    """Mask and positions for a padded batch; none for an unpadded one (the plain forward)."""
    if bool(batch.attention_mask.all()):
        return {}
    return {
        "attention_mask": batch.attention_mask[:, columns],
        "position_ids": batch.position_ids[:, columns],
    }


@dataclass(frozen=True)
class PrefixStats:
    """What a `PrefixTree` computed so far.

    Attributes:
        prompt_tokens: cached tokens of the prompts served (each prompt minus its last
            token): what unshared prefills compute, padding aside.
        prefilled_tokens: tokens the tree's forwards computed (right padding aside).
        forward_tokens: tokens the forwards ran, right padding included.
        forwards: model forwards run.
    """

    prompt_tokens: int
    prefilled_tokens: int
    forward_tokens: int
    forwards: int


@dataclass(eq=False)
class _Node:
    """Tokens [start, stop) of the prompts below; its cache covers positions [0, stop)."""

    segment: Tensor
    start: int
    parent: _Node | None
    children: dict[int, _Node] = field(default_factory=dict)
    uses: int = 0  # prompts whose cached part ends here
    ends: int = 0  # of those, not yet served
    kv: KV | None = None

    @property
    def stop(self) -> int:
        return self.start + len(self.segment)

    def pending(self) -> int:
        """Prompts not yet served at or below this node."""
        return self.ends + sum(child.pending() for child in self.children.values())


class PrefixTree:
    """The prompts of a run, prefilled with each shared token prefix computed once.

    Example:
        >>> tree = PrefixTree(model, prompts)  # doctest: +SKIP
        >>> decode(model, tree.prefill(prompts[:4]), config)  # doctest: +SKIP
    """

    def __init__(self, model: Model, prompts: Sequence[Tensor]) -> None:
        """Build the tree over `prompts` ([pos] ids each); nothing runs until `prefill`.

        Raises:
            UnsupportedModelError: the model's cache is not full attention in every layer
                (a sliding-window layer keeps only part of a prefix).
        """
        if not supports_prefix_sharing(model):
            raise UnsupportedModelError(
                f"{model.spec}: prefix sharing needs full-attention KV caches in every layer;"
                " prefill without it."
            )
        self.model = model
        self.root = _Node(torch.zeros(0, dtype=torch.long), 0, None, kv=[])
        for prompt in prompts:
            self._insert(torch.as_tensor(prompt, dtype=torch.long).cpu()[:-1])
        self._stats = {"prompt_tokens": 0, "prefilled_tokens": 0, "forward_tokens": 0}
        self._forwards = 0

    @property
    def stats(self) -> PrefixStats:
        """Tokens served and computed so far."""
        return PrefixStats(**self._stats, forwards=self._forwards)

    def coverage(self) -> tuple[int, int]:
        """(tokens the tree computes to serve every prompt once, tokens of the prompts'
        cached parts): the second is what unshared prefills compute, padding aside."""
        tokens = prompt_tokens = 0
        stack = [self.root]
        while stack:
            node = stack.pop()
            tokens += len(node.segment)
            prompt_tokens += node.uses * node.stop
            stack.extend(node.children.values())
        return tokens, prompt_tokens

    def _insert(self, ids: Tensor) -> None:
        """Add one cached part to the compressed tree, splitting a node where it diverges."""
        node, at = self.root, 0
        while at < len(ids):
            child = node.children.get(int(ids[at]))
            if child is None:
                node.children[int(ids[at])] = _Node(ids[at:].clone(), at, node, uses=1, ends=1)
                return
            n = min(len(child.segment), len(ids) - at)
            same = int((child.segment[:n] == ids[at : at + n]).cumprod(0).sum())
            if same < len(child.segment):  # split child at `same`
                head = _Node(child.segment[:same], at, node)
                child.segment, child.start, child.parent = child.segment[same:], at + same, head
                head.children[int(child.segment[0])] = child
                node.children[int(ids[at])] = head
                child = head
            node, at = child, at + same
        node.uses += 1
        node.ends += 1

    def _find(self, ids: Tensor) -> _Node:
        node, at = self.root, 0
        while at < len(ids):
            child = node.children.get(int(ids[at]))
            n = 0 if child is None else len(child.segment)
            if child is None or not torch.equal(child.segment, ids[at : at + n]):
                raise InputError("A prompt passed to PrefixTree.prefill is not in the tree.")
            node, at = child, at + n
        return node

    @torch.no_grad()
    def prefill(self, prompts: Sequence[Tensor], rows: Sequence[int] | None = None) -> Prefilled:
        """What `prefill(model, prompts, rows)` returns, from the tree's shared caches.

        Raises:
            InputError: a prompt was not given to the tree.
        """
        batch = _left_padded(self.model, prompts)
        leaves = [self._find(torch.as_tensor(p, dtype=torch.long).cpu()[:-1]) for p in prompts]
        self._compute(leaves)
        width = batch.input_ids.shape[1] - 1
        cache = DynamicCache(config=self.model.hf.config)
        if width > 0:
            layers = max(len(leaf.kv or []) for leaf in leaves)
            for layer in range(layers):
                keys = _left_pad([leaf.kv[layer][0] if leaf.kv else None for leaf in leaves], width)
                values = _left_pad(
                    [leaf.kv[layer][1] if leaf.kv else None for leaf in leaves], width
                )
                cache.update(keys, values, layer)
        for leaf in leaves:
            self._stats["prompt_tokens"] += leaf.stop
            leaf.ends = max(0, leaf.ends - 1)
        for leaf in leaves:
            self._release(leaf)
        return Prefilled(batch, tuple(range(len(prompts)) if rows is None else rows), cache)

    def _compute(self, nodes: Sequence[_Node]) -> None:
        """Caches of `nodes` and any missing ancestors: one forward per parent's children."""
        missing: list[_Node] = []
        for node in nodes:
            while node.kv is None and node not in missing:
                missing.append(node)
                node = node.parent  # type: ignore[assignment]
        while missing:
            parent = next(n.parent for n in missing if n.parent.kv is not None)  # type: ignore[union-attr]
            ready = sorted((n for n in missing if n.parent is parent), key=lambda n: n.stop)
            for group in self._groups(ready):
                self._extend(parent, group)
            missing = [n for n in missing if n.parent is not parent]
            self._release(parent)

    def _groups(self, children: list[_Node]) -> list[list[_Node]]:
        """Siblings (sorted by length) in forwards of similar segment lengths, so right
        padding wastes little, and of at most `default_batch_size` rows."""
        groups: list[list[_Node]] = []
        for child in children:
            if groups:
                first = groups[-1][0]
                size = default_batch_size(self.model, child.stop)
                similar = len(child.segment) <= _SIMILAR * len(first.segment) + _SLACK
                if similar and len(groups[-1]) < size:
                    groups[-1].append(child)
                    continue
            groups.append([child])
        return groups

    def _extend(self, parent: _Node, children: Sequence[_Node]) -> None:
        """One forward: `parent`'s cache copied to each child, the segments right-padded."""
        n_rows = len(children)
        width = max(2, *(len(c.segment) for c in children))  # >= 2 query rows: not a decode
        pad = self.model.tokenizer.pad_token_id or 0
        ids = torch.full((n_rows, width), pad, dtype=torch.long)
        for row, child in enumerate(children):
            ids[row, : len(child.segment)] = child.segment
        cache = DynamicCache(config=self.model.hf.config)
        for layer, (keys, values) in enumerate(parent.kv or []):
            cache.update(keys.expand(n_rows, -1, -1, -1), values.expand(n_rows, -1, -1, -1), layer)
        self.model.hf(
            ids.to(self.model.device), past_key_values=cache, use_cache=True, logits_to_keep=1
        )
        for row, child in enumerate(children):
            child.kv = [
                (
                    layer.keys[row : row + 1, :, : child.stop].clone(),
                    layer.values[row : row + 1, :, : child.stop].clone(),
                )
                for layer in cache.layers
            ]
        self._forwards += 1
        self._stats["prefilled_tokens"] += sum(len(c.segment) for c in children)
        self._stats["forward_tokens"] += n_rows * width

    def _release(self, node: _Node | None) -> None:
        """Free caches no prompt still needs, from `node` up to the root."""
        while node is not None and node is not self.root:
            done = all(c.kv is not None or c.pending() == 0 for c in node.children.values())
            if node.ends == 0 and done:
                node.kv = None
            node = node.parent


def _left_pad(rows: Sequence[Tensor | None], width: int) -> Tensor:
    """[row, kv_head, width, d_head]: each row's [1, kv_head, n, d_head] at the right, zeros
    before it (None: an empty row)."""
    like = next(r for r in rows if r is not None)
    out = like.new_zeros(len(rows), like.shape[1], width, like.shape[3])
    for index, row in enumerate(rows):
        if row is not None and row.shape[2]:
            out[index, :, width - row.shape[2] :] = row[0]
    return out


def supports_prefix_sharing(model: Model) -> bool:
    """Whether `PrefixTree` works on `model`: every layer caches full attention."""
    cache = DynamicCache(config=model.hf.config)
    return all(type(layer) is DynamicLayer for layer in cache.layers)
