"""Prefilling prompts for the generation driver, plain or through a shared-prefix tree.

`prefill(model, prompts)` left-pads a batch and caches every prompt minus its last token in
one forward. `prefill_inputs(model, inputs)` does the same for a prepared batch
(`Model.prepare`: texts with images, pixel kwargs passed to the forward), or with
`whole_prompt` caches every token and keeps the last position's logits, from which the
first response token is chosen (as `model.hf.generate` does).
`PrefixTree(model, prompts)` does what `prefill` does for the prompts of a whole run but
computes each shared token prefix once: prompts of a run often share one (NIAH tests: the
chat template and the haystack before the needle; a longer test extends a shorter one's
haystack), and a causal model's keys and values at a position depend only on the tokens up
to it. The tree is a compressed prefix tree over the prompts minus their last token. Nodes
are computed level by level: the nodes whose parent is cached run as forwards of similar
segment length, each row its parent's prefix cache (left-padded to the longest prefix, with
the mask and positions of a padded batch) then its own segment, right-padded (a causal
model's real tokens never see padding on their right). Every position equals the unshared
run's.
`PrefixTree.prefill(prompts)` then lays the prompts' caches out left-padded, exactly as
`prefill` would (same mask and positions; padding columns are zero and masked, so they add
exactly nothing), and `interp.generation.decode` continues from either alike.

Exactness: a shared cache equals the unshared one up to float rounding (other matrix
shapes); the decode steps that follow run the unshared run's layout. Segment forwards have at
least two query rows, so attention hooks that want only decode steps (one query row) never
see them; hooks and interventions active around `PrefixTree.prefill` apply to its forwards.

Memory: each tree node keeps its own tokens' keys and values, [layer, kv_head, pos, d_head],
from its forward until every prompt below it is served, so at most the distinct prefix
tokens of the prompts not yet served; a forward adds its rows' copies of the parent prefix.
A prompt asked for again after it was served is recomputed.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from transformers import DynamicCache

from interp.encoding import Encoding
from interp.errors import InputError, UnsupportedModelError
from interp.image_layouts import position_offsets
from interp.inputs import PER_POSITION, ModelInputs
from interp.kv_cache import cache_kwargs, caches_full_attention, row_states
from interp.models import Model

__all__ = [
    "Prefilled",
    "PrefixStats",
    "PrefixTree",
    "default_batch_size",
    "prefill",
    "prefill_inputs",
    "supports_prefix_sharing",
]

# Tokens per batch (prompt plus budget, summed over rows) that `default_batch_size` aims
# for on CPU, where larger batches stop paying once the matrix products are compute-bound.
_CPU_BATCH_TOKENS = 8192
_CPU_DECODE_TOKENS = 32768
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
        cache: the KV cache of every prompt minus its last token, or of every token when
            `first_logits` is set.
        first_logits: [batch, vocab] the whole prompts' last-position logits (the first
            response token is chosen from them), or None.
        position_offsets: [3, batch, 1] what a model that numbers its own multimodal
            positions adds to each row's text positions after the prompt
            (`interp.image_layouts.position_offsets`), or None.
    """

    batch: Encoding
    rows: tuple[int, ...]
    cache: DynamicCache
    first_logits: Tensor | None = None
    position_offsets: Tensor | None = None

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
        first = None if self.first_logits is None else self.first_logits[index]
        offsets = self.position_offsets
        offsets = None if offsets is None else offsets[:, index]
        return Prefilled(batch, tuple(self.rows[i] for i in rows), cache, first, offsets)


def default_batch_size(model: Model, n_tokens: int, *, shared_prefill: bool = False) -> int:
    """How many prompts of `n_tokens` (prompt plus budget) to decode at once on the device.

    CPU: about 8k tokens per batch, or 32k when the batch's prefill comes from a
    `PrefixTree` (`shared_prefill`): the batch then sets only the decode's rows, and a
    decode step keeps getting cheaper per row with more rows (27, 20 and 18 ms per row at
    7, 12 and 24 rows of 1k tokens on the default model, one thread). CUDA: a quarter of
    the free memory over a row's KV cache with room for its activations (four times the
    cache). At most 64.
    """
    n_tokens = max(1, n_tokens)
    device = model.device
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        g = model.geometry
        element = torch.finfo(model.hf.dtype).bits // 8
        per_row = 2 * g.n_layers * g.n_kv_heads * g.d_head * element * n_tokens * 4
        return int(min(_MAX_BATCH, max(1, free // 4 // per_row)))
    budget = _CPU_DECODE_TOKENS if shared_prefill else _CPU_BATCH_TOKENS
    return int(min(_MAX_BATCH, max(1, budget // n_tokens)))


def _left_padded(model: Model, prompts: Sequence[Tensor]) -> Encoding:
    pad = model.tokenizer.pad_token_id
    return Encoding.left_padded(
        [p.tolist() for p in prompts], 0 if pad is None else pad, model.device
    )


def prefill(
    model: Model, prompts: Sequence[Tensor], rows: Sequence[int] | None = None
) -> Prefilled:
    """Left-pad `prompts` ([pos] ids each) into one batch and cache all but their last token.

    Args:
        model: the model (hooks and interventions active around this call apply).
        prompts: the batch's prompts.
        rows: the prompt index of each (default 0..n-1), reported in every `Step`.
    """
    return prefill_inputs(model, ModelInputs.from_encoding(_left_padded(model, prompts)), rows)


@torch.no_grad()
def prefill_inputs(
    model: Model,
    inputs: ModelInputs,
    rows: Sequence[int] | None = None,
    *,
    whole_prompt: bool = False,
) -> Prefilled:
    """Cache a prepared batch (`Model.prepare`) minus its last token, or whole.

    Args:
        model: the model (hooks and interventions active around this call apply).
        inputs: the left-padded batch; its other kwargs (pixels) go to the forward as given.
        rows: the prompt index of each row (default 0..n-1), reported in every `Step`.
        whole_prompt: cache every token and keep the last position's logits
            (`Prefilled.first_logits`), so the first response token comes from this forward.
            Needed when the last prompt token cannot run alone (an image token) or an
            intervention chooses on the whole prompt (VHR's selection).
    """
    batch = Encoding(inputs.input_ids, inputs.attention_mask)
    stop = None if whole_prompt else -1
    cache = DynamicCache(config=model.hf.config)
    first = None
    offsets = position_offsets(model.hf, inputs)
    if whole_prompt or batch.input_ids.shape[1] > 1:
        other = {k: v for k, v in inputs.kwargs.items() if k not in PER_POSITION}
        padding = _padding_kwargs(batch, slice(None, stop))
        if offsets is not None:  # the model numbers its own positions, as under generate
            padding.pop("position_ids", None)
        # logits_to_keep=1: all positions' logits would be [batch, pos, vocab] floats
        # (1.5 GB per row at 8k tokens for a 49k vocabulary); only the last is ever read.
        out = model.hf(
            batch.input_ids[:, :stop],
            **padding,
            **other,
            **cache_kwargs(model.hf, cache),
            use_cache=True,
            logits_to_keep=1,
        )
        first = out.logits[:, -1] if whole_prompt else None
    rows = tuple(range(batch.input_ids.shape[0]) if rows is None else rows)
    return Prefilled(batch, rows, cache, first, offsets)


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
    """Tokens [start, stop) of the prompts below, and their keys and values once computed."""

    segment: Tensor
    start: int
    parent: _Node | None
    children: dict[int, _Node] = field(default_factory=dict)
    uses: int = 0  # prompts whose cached part ends here
    ends: int = 0  # of those, not yet served
    pending: int = 0  # prompts not yet served at or below this node
    kv: KV | None = None  # per layer [1, kv_head, len(segment), d_head]

    @property
    def stop(self) -> int:
        return self.start + len(self.segment)

    def path(self) -> list[_Node]:
        """The nodes from the root's first child down to this one."""
        nodes, node = [], self
        while node.parent is not None:
            nodes.append(node)
            node = node.parent
        return nodes[::-1]


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
        node, at, path = self.root, 0, [self.root]
        while at < len(ids):
            child = node.children.get(int(ids[at]))
            if child is None:
                child = _Node(ids[at:].clone(), at, node)
                node.children[int(ids[at])] = child
            n = min(len(child.segment), len(ids) - at)
            same = int((child.segment[:n] == ids[at : at + n]).cumprod(0).sum())
            if same < len(child.segment):  # split child at `same`
                head = _Node(child.segment[:same], at, node, pending=child.pending)
                child.segment, child.start, child.parent = child.segment[same:], at + same, head
                head.children[int(child.segment[0])] = child
                node.children[int(ids[at])] = head
                child = head
            node, at = child, at + same
            path.append(node)
        node.uses += 1
        node.ends += 1
        for on_path in path:
            on_path.pending += 1

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
        cache = DynamicCache(config=self.model.hf.config)
        width = batch.input_ids.shape[1] - 1
        paths = [leaf.path() for leaf in leaves]
        if width > 0:
            for layer, states in enumerate(_layout(paths, width)):
                cache.update(*states, layer)
        for leaf, path in zip(leaves, paths, strict=True):
            self._stats["prompt_tokens"] += leaf.stop
            leaf.ends = max(0, leaf.ends - 1)
            for node in [self.root, *path]:
                node.pending = max(0, node.pending - 1)
                if node.pending == 0 and node is not self.root:
                    node.kv = None  # no prompt below needs it
        return Prefilled(batch, tuple(range(len(prompts)) if rows is None else rows), cache)

    def _compute(self, nodes: Sequence[_Node]) -> None:
        """Caches of `nodes` and any missing ancestors, level by level: every node whose
        parent is cached is ready, and ready nodes of similar length share a forward."""
        missing: list[_Node] = []
        for node in nodes:
            while node.kv is None and node not in missing:
                missing.append(node)
                node = node.parent  # type: ignore[assignment]
        while missing:
            ready = [n for n in missing if n.parent.kv is not None]  # type: ignore[union-attr]
            for group in self._groups(sorted(ready, key=lambda n: len(n.segment))):
                self._extend(group)
            missing = [n for n in missing if n.kv is None]

    def _groups(self, nodes: list[_Node]) -> list[list[_Node]]:
        """Nodes (sorted by length) in forwards of similar segment lengths, so right
        padding wastes little, and of at most `default_batch_size` rows."""
        groups: list[list[_Node]] = []
        for node in nodes:
            if groups:
                first = groups[-1][0]
                size = default_batch_size(self.model, max(n.stop for n in [*groups[-1], node]))
                similar = len(node.segment) <= _SIMILAR * len(first.segment) + _SLACK
                if similar and len(groups[-1]) < size:
                    groups[-1].append(node)
                    continue
            groups.append([node])
        return groups

    def _extend(self, nodes: Sequence[_Node]) -> None:
        """One forward: each node's segment, right-padded, after its parent's prefix cache.

        Prefixes of other lengths are left-padded, with the mask and positions that make
        each row its own unpadded sequence (the padded prefill's convention)."""
        n_rows = len(nodes)
        width = max(2, *(len(n.segment) for n in nodes))  # >= 2 query rows: not a decode
        prefix = max(n.start for n in nodes)  # parent lengths: n.start == parent.stop
        pad = self.model.tokenizer.pad_token_id or 0
        ids = torch.full((n_rows, width), pad, dtype=torch.long)
        for row, node in enumerate(nodes):
            ids[row, : len(node.segment)] = node.segment
        cache = DynamicCache(config=self.model.hf.config)
        if prefix:
            paths = [node.parent.path() for node in nodes]  # type: ignore[union-attr]
            for layer, states in enumerate(_layout(paths, prefix)):
                cache.update(*states, layer)
        extra: dict[str, Tensor] = {}
        starts = torch.tensor([n.start for n in nodes])
        if bool((starts != prefix).any()):
            columns = torch.arange(prefix + width)
            extra["attention_mask"] = (columns[None] >= (prefix - starts)[:, None]).long()
            extra["position_ids"] = starts[:, None] + torch.arange(width)[None]
        device = self.model.device
        self.model.hf(
            ids.to(device),
            **{k: v.to(device) for k, v in extra.items()},
            **cache_kwargs(self.model.hf, cache),
            use_cache=True,
            logits_to_keep=1,
        )
        for row, node in enumerate(nodes):
            own = slice(prefix, prefix + len(node.segment))
            node.kv = row_states(cache, row, own)
        self._forwards += 1
        self._stats["prefilled_tokens"] += sum(len(n.segment) for n in nodes)
        self._stats["forward_tokens"] += n_rows * width


def _layout(paths: Sequence[Sequence[_Node]], width: int) -> list[tuple[Tensor, Tensor]]:
    """Per layer, keys and values [row, kv_head, width, d_head]: each row's path segments
    laid end to end at the right, zeros before them (an empty path: a row of zeros)."""
    like = next(path[-1].kv for path in paths if path)
    out = []
    for layer, pair in enumerate(like):  # type: ignore[union-attr]
        states = []
        for which, tensor in enumerate(pair):
            full = tensor.new_zeros(len(paths), tensor.shape[1], width, tensor.shape[3])
            for row, path in enumerate(paths):
                offset = width - (path[-1].stop if path else 0)
                for node in path:
                    segment = node.kv[layer][which]  # type: ignore[index]
                    full[row, :, offset + node.start : offset + node.stop] = segment[0]
            states.append(full)
        out.append((states[0], states[1]))
    return out


def supports_prefix_sharing(model: Model) -> bool:
    """Whether `PrefixTree` works on `model`: every layer caches full attention."""
    return caches_full_attention(model.hf.config)
