"""ACT, attention calibration: shrink attention to hidden sinks in selected heads.

Yu et al., ICML 2024, arXiv 2406.15765; formulas from the code GATECH-EIC/ACT @a267af7
(docs/methods.md §5). Per selected head, on the prompt (prefill), in float32:

* sinks S = {j : m_j > tau} with m_j = sum_{i>=j} P_ij / (N - j) (`interp.sink_rule`);
* S' = S minus its first position (normally the first token; if that is not a sink, the first
  hidden sink is spared);
* per row i: s_i = sum_{j in S'} P_ij; P'_ij = beta * P_ij on S'; elsewhere
  P'_ij = P_ij + (1 - beta) * s_i * P_ij / sum_{k not in S'} P_ik (first token included), so
  the rows still sum to 1 and the freed mass mostly returns to the first token.

Decode (toolkit rule, docs/methods.md §5; the code is prefill-only): each head's S' found at
prefill is carried, and every later row (decode steps, or a multi-token continuation on the
cache) gets the same scaling and redistribution; generated tokens are never sinks and no
entry is forced to 1. Batches: sinks per batch row, padded queries and keys excluded from
every sum and denominator (the code edits batch row 0 only and assumes no padding).

Cost: explicit attention in the selected heads' layers only (others keep SDPA); the edit is
vectorized over a layer's selected heads. The carried state is [batch, head, key] booleans
per selected layer. m_j needs every row of the prompt before any row is edited: a prompt
that spans several blocks of explicit query rows (see interp.hooks) is scored twice, a first
pass accumulating [batch, head, key] column sums and a second that edits, so memory stays
one block; a prompt that fits one block is scored once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.config import Config, check_range
from interp.errors import HookError
from interp.heads import Head, HeadGeometry, Heads, HeadSet, RowHeads, as_heads
from interp.hooks import AttentionRows
from interp.interventions.attention_edit import AttentionEdit
from interp.models import Model
from interp.sink_rule import ThresholdMode, sink_mask


@dataclass(frozen=True, kw_only=True)
class ActConfig(Config):
    """ACT parameters; defaults are the reference code's (docs/methods.md §5).

    Attributes:
        beta: factor on the attention to hidden sinks S' (code: 0.4).
        threshold: tau on m_j (code: 0.1, absolute).
        threshold_mode: "absolute" (code) or "relative" (m_j > relative_alpha / N).
        relative_alpha: alpha of the relative rule (5, one reimplementation's value).
        min_queries: keys seen by fewer queries are never sinks (1 = code).
    """

    beta: float = 0.4
    threshold: float = 0.1
    threshold_mode: ThresholdMode = "absolute"
    relative_alpha: float = 5.0
    min_queries: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "beta", 0.0, 1.0)
        check_range(self, "threshold", 0.0, 1.0, strict_low=True)
        check_range(self, "relative_alpha", 0.0, strict_low=True)
        check_range(self, "min_queries", 1)


def act_layers(geometry: HeadGeometry) -> list[int]:
    """The layers ACT searches by default: 2 .. L-2 (code), both ends included."""
    return list(range(2, geometry.n_layers - 1))


def act_candidates(geometry: HeadGeometry) -> HeadSet:
    """Every query head in `act_layers`: the default head-search space."""
    heads = range(geometry.n_heads)
    return HeadSet(Head(layer, h) for layer in act_layers(geometry) for h in heads)


def hidden_sinks(
    sums: Float[Tensor, "batch head key"], seen_by: Float[Tensor, "batch key"], config: ActConfig
) -> Bool[Tensor, "batch head key"]:
    """S' per batch row and head: the sink rule's keys minus the first one.

    `sums` and `seen_by` are `column_sums` over every query row of the prompt, added up
    over the blocks of rows when the prompt came in several (as `Calibrator` does).
    """
    return _without_first(sink_mask(sums, seen_by[:, None], config)[0])


def column_sums(
    probs: Float[Tensor, "batch head query key"],
    visible: Bool[Tensor, "batch query key"],
    query_positions: Int[Tensor, " query"] | None = None,
) -> tuple[Float[Tensor, "batch head key"], Float[Tensor, "batch key"]]:
    """Per key, the attention it receives from valid (non-padded) query rows, and their count.

    A query row is padding iff it cannot see its own position (the padding mask hides a
    padded token from every row). Sums over blocks of rows add up to those of the prompt.
    `query_positions` defaults to 0..query-1: `probs` holds the prompt's rows from the first.
    """
    if query_positions is None:
        query_positions = torch.arange(probs.shape[2], device=probs.device)
    n_keys = visible.shape[-1]
    own = query_positions.clamp(max=n_keys - 1).expand(visible.shape[0], -1)[..., None]
    valid = visible.gather(-1, own)[..., 0] & (query_positions < n_keys)  # [batch, query]
    rows = visible & valid[:, :, None]
    return (probs * rows[:, None]).sum(2), rows.sum(1).to(probs.dtype)


def _without_first(sinks: Bool[Tensor, "... key"]) -> Bool[Tensor, "... key"]:
    """S' = S minus its first position (normally the first token)."""
    return sinks & (sinks.cumsum(-1) != 1)


def calibrate_rows(
    probs: Float[Tensor, "batch head query key"],
    sinks: Bool[Tensor, "batch head key"],
    beta: float,
) -> Float[Tensor, "batch head query key"]:
    """ACT's row edit: scale attention on `sinks` by beta, give the rest back proportionally.

    A row with no mass outside the sinks (nothing to give the mass to) is left unchanged.
    Masked (zero) entries stay zero, so rows keep summing to 1 over visible keys.
    """
    on_sink = sinks[:, :, None, :]
    sink_mass = (probs * on_sink).sum(-1, keepdim=True)
    rest = probs.sum(-1, keepdim=True) - sink_mass
    safe_rest = rest.clamp_min(torch.finfo(probs.dtype).tiny)
    spread = probs + (1.0 - beta) * sink_mass * probs / safe_rest
    edited = torch.where(on_sink, beta * probs, spread)
    return torch.where(rest > 0, edited, probs)


@dataclass(frozen=True)
class ACT:
    """Attention calibration on `heads`, applied with `with ACT(heads).applied(model):`.

    Attributes:
        heads: the searched heads (see `interp.interventions.act_search.search_heads`), or
            `RowHeads`: each batch row calibrates its own set.
        config: beta and the sink rule.

    Example:
        >>> from interp.tiny_models import tiny_llama
        >>> model = tiny_llama()
        >>> ids = model.encode("hello world").input_ids
        >>> with ACT(HeadSet(["L1H0", "L1H3"])).applied(model):
        ...     logits = model.hf(ids).logits
        >>> tuple(logits.shape)
        (1, 11, 259)
    """

    heads: Heads
    config: ActConfig = field(default_factory=ActConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", as_heads(self.heads))

    def to_dict(self) -> dict[str, Any]:
        """The reproducible record: heads and every ACT parameter."""
        return {"intervention": "ACT", "heads": self.heads.labels, **self.config.to_dict()}

    def select(self, rows: Sequence[int]) -> ACT:
        """The calibration of batch rows `rows` (itself unless `heads` is per row)."""
        if not isinstance(self.heads, RowHeads):
            return self
        return ACT(self.heads.select(rows), self.config)

    def identity(self) -> ACT:
        """beta = 1: the same sink detection and row edit, which then change nothing."""
        return ACT(self.heads, replace(self.config, beta=1.0))

    @contextmanager
    def applied(self, model: Model) -> Iterator[None]:
        # A fresh calibrator per context: the sinks it carries belong to this prompt.
        # Rows already sum to 1 after calibrate_rows, so no renormalisation is applied.
        edit = AttentionEdit(self.heads, Calibrator(self.config), renormalize=False)
        with edit.applied(model):
            yield


class Calibrator:
    """The ACT edit: detects S' from a prompt's rows per selected layer, calibrates every row.

    At prefill the column sums are accumulated over all blocks of the prompt's rows in a
    first pass (`interp.hooks.PrepassHook`), so a prompt of any length is edited exactly as
    if it fit one block; S' is then carried to later forwards on the cache.
    """

    def __init__(self, config: ActConfig) -> None:
        self.config = config
        # layer -> (column sums [batch, head, key], seen_by [batch, key], rows prepared)
        self.pending: dict[int, tuple[Tensor, Tensor, int]] = {}
        self.carried: dict[int, Tensor] = {}  # layer -> S' [batch, selected head, prompt key]

    def needs_prepass(self, layer: int, n_queries: int, n_keys: int) -> bool:
        self.pending.pop(layer, None)  # a new forward: drop sums an interrupted one left
        return n_keys == n_queries  # a prompt without cache: detect its sinks

    def prepare(self, rows: AttentionRows, index: Tensor) -> None:
        probs = rows.probs.detach()[:, index]  # S' is boolean: no gradient flows through it
        sums, seen_by = column_sums(probs, rows.visible, rows.query_positions)
        batch, n_heads, n_rows, end = probs.shape
        if rows.layer not in self.pending:
            self.pending[rows.layer] = (
                probs.new_zeros(batch, n_heads, rows.n_keys),
                probs.new_zeros(batch, rows.n_keys),
                0,
            )
        total, total_seen, done = self.pending[rows.layer]
        total[..., :end] += sums
        total_seen[..., :end] += seen_by
        if done + n_rows < rows.n_queries:
            self.pending[rows.layer] = (total, total_seen, done + n_rows)
            return
        del self.pending[rows.layer]
        self.carried[rows.layer] = hidden_sinks(total, total_seen, self.config)

    def __call__(self, rows: AttentionRows, index: Tensor) -> Tensor:
        probs = rows.probs[:, index]
        sinks = self._carried(rows.layer, probs.shape[0], rows.n_keys)
        return calibrate_rows(probs, sinks[..., : probs.shape[-1]], self.config.beta)

    def _carried(self, layer: int, batch: int, n_keys: int) -> Tensor:
        sinks = self.carried.get(layer)
        if sinks is None or sinks.shape[0] != batch or sinks.shape[-1] > n_keys:
            raise HookError(
                "ACT saw a forward on a cache without its prompt: run the prefill inside the"
                " same `ACT(...).applied(model)` context (e.g. call generate inside it)."
            )
        # Tokens after the prompt are never sinks.
        return torch.nn.functional.pad(sinks, (0, n_keys - sinks.shape[-1]), value=False)
