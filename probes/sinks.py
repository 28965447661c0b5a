"""Attention sinks: per-head sink mass, sink tokens beyond the first, massive activations.

Attention view (ACT, Yu et al. 2024, arXiv 2406.15765; code GATECH-EIC/ACT @a267af7). For
head h and key j of an N-token prompt, the mean attention j receives from the queries that
see it is m_j = sum_{i>=j} A_ij / (N - j) (on a sliding-window layer, divided by the queries
inside j's window instead). Key j is a sink of that head iff m_j > tau
(tau = 0.1, the code's absolute rule; `threshold="relative"` uses alpha/N, alpha = 5, the
form some descriptions give). Per head the table reports:

* `score`: attention share on the head's sinks, the mean over query rows 1..N-1 of
  sum_{j in S} A_ij (row 0 can only attend to itself and is left out),
* `first_token_share`: the same for key 0 alone, `hidden_sink_share` for sinks after it,
* `n_sinks`: sinks per prompt, `first_token_dominant`: share of prompts whose argmax_j m_j
  is key 0,
* `massive_share`: the same share on the keys whose residual entering the head's layer
  holds a massive activation (below): how much the head reads the massive-activation tokens.

Activation view (massive activations, Sun et al. 2024; VAR, Kang et al. 2025): for the
residual x entering each layer, phi_d(x) = |x_d| / RMS(x) with RMS = sqrt(mean x^2 + 1e-6),
in float32, no learned norm weight; every (token, dim) with phi >= 20 is reported.

Memory: only per-key column sums are kept, [layer, head, key] floats per prompt (4.3 MB for
30 layers x 9 heads x 4k keys); explicit attention is computed one layer and one block of
query rows at a time, over the keys the block can see (see interp.explicit_attention), never
all layers' [query, key] patterns.

Method notes, defaults and pitfalls: docs/methods.md §2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from interp.config import Config, check_range
from interp.errors import InputError
from interp.hooks import AttentionRows, attention_hooks, residual_hooks
from interp.models import Model
from interp.prompts import as_texts
from interp.results import (
    Bundle,
    HeadScores,
    ItemTable,
    Provenance,
    TokenScores,
    hash_inputs,
    head_frame,
)
from interp.sink_rule import sink_mask

ANALYZER = "sinks"


@dataclass(frozen=True, kw_only=True)
class SinkConfig(Config):
    """Parameters of the sink analyzer; defaults from ACT's and VAR's reference code.

    Attributes:
        threshold: tau for m_j (ACT code: 0.1, absolute).
        threshold_mode: "absolute" (ACT code) or "relative" (m_j > alpha / N, alpha below).
        relative_alpha: alpha of the relative rule (5, as one reimplementation uses).
        min_queries: only keys seen by at least this many queries can be sinks (1 = code;
            larger values stop the last few tokens being flagged on their self-attention).
        massive_threshold: phi threshold of the activation view (VAR: 20).
    """

    threshold: float = 0.1
    threshold_mode: Literal["absolute", "relative"] = "absolute"
    relative_alpha: float = 5.0
    min_queries: int = 1
    massive_threshold: float = 20.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "threshold", 0.0, 1.0, strict_low=True)
        check_range(self, "relative_alpha", 0.0, strict_low=True)
        check_range(self, "min_queries", 1)
        check_range(self, "massive_threshold", 0.0, strict_low=True)


@dataclass(frozen=True)
class SinkResult(Bundle):
    """What `run` returns.

    Attributes:
        heads: per (layer, head, example) sink statistics (`HeadScores.per_head` averages).
        sink_tokens: every (example, layer, head, position) detected as a sink, with m_j.
        massive: every (example, layer, position, dim) with phi >= the massive threshold.
    """

    FILES: ClassVar[dict[str, str]] = {"heads": "scores"}

    heads: HeadScores
    sink_tokens: TokenScores
    massive: TokenScores

    def summaries(self) -> dict[str, HeadScores | ItemTable]:
        """Per-head averages over the prompts and the massive dimensions, as tables."""
        return {
            "scores_per_head": HeadScores(self.heads.per_head(), self.heads.provenance),
            "massive_dims": ItemTable(massive_dimensions(self.massive), self.massive.provenance),
        }

    def summary_lines(self) -> list[str]:
        """What a reader checks first: how many heads have the first token as their dominant
        sink from layer 3 on, the strongest hidden sinks, the massive dimensions."""
        per_head = self.heads.per_head()
        dims = massive_dimensions(self.massive)
        dominant = per_head[per_head.layer >= 3]["first_token_dominant"].gt(0.5).mean()
        top = per_head.nlargest(5, "hidden_sink_share")
        strongest = ", ".join(f"{r.label} ({r.hidden_sink_share:.2f})" for r in top.itertuples())
        lines = [
            f"{len(per_head)} heads scored over {self.provenance.n_inputs} prompts",
            f"first token is the dominant sink for {dominant:.0%} of heads in layers >= 3",
            f"strongest hidden sinks: {strongest}",
        ]
        if not dims.empty:
            lines.append(f"massive-activation dims: {dims['dim'].head(5).tolist()}")
        return lines

    def figures(self) -> dict[str, object]:
        """Layer x head maps of the sink, first-token and hidden-sink shares."""
        from interp.figures import head_heatmap

        shares = {
            "sink_share": ("score", "Attention share on sink tokens"),
            "first_token_share": ("first_token_share", "Attention share on the first token"),
            "hidden_sink_share": (
                "hidden_sink_share",
                "Attention share on hidden sinks (after token 0)",
            ),
        }
        return {name: head_heatmap(self.heads, *args) for name, args in shares.items()}


class _ColumnSums:
    """Attention hook that accumulates sum_i A_ij per layer and head (batch of one), and
    per layer how many queries see each key.

    Each block covers a prefix of the keys, so it adds into the first entries of the
    layer's [head, n_keys] sums. The counts come from the rows' visibility, so a
    sliding-window layer counts only the queries inside each key's window.
    """

    def __init__(self, n_layers: int) -> None:
        self.sums: list[Tensor | None] = [None] * n_layers
        self.seen_by: list[Tensor | None] = [None] * n_layers
        self.first_row: list[Tensor | None] = [None] * n_layers  # [head] A_00

    def wants(self, layer: int, n_queries: int) -> bool:
        return True

    def __call__(self, rows: AttentionRows) -> None:
        if self.sums[rows.layer] is None:
            self.sums[rows.layer] = rows.probs.new_zeros(rows.probs.shape[1], rows.n_keys)
            self.seen_by[rows.layer] = rows.probs.new_zeros(rows.n_keys)
        block = rows.probs[0].sum(dim=1)  # [head, block key]: a prefix of the key axis
        self.sums[rows.layer][:, : block.shape[-1]] += block  # type: ignore[index]
        seen = rows.visible[0].sum(dim=0)  # [block key]
        self.seen_by[rows.layer][: seen.shape[-1]] += seen  # type: ignore[index]
        if int(rows.query_positions[0]) == 0:
            self.first_row[rows.layer] = rows.probs[
                0, :, 0, 0
            ].clone()  # a view keeps the block alive


def sink_statistics(
    column_sums: Float[Tensor, "layer head key"],
    config: SinkConfig,
    seen_by: Float[Tensor, "layer key"] | None = None,
    first_row: Float[Tensor, "layer head"] | None = None,
) -> dict[str, np.ndarray]:
    """Per-head sink statistics of one prompt from its attention column sums.

    `seen_by[l, j]` counts the queries of layer l that can see key j: N - j under a plain
    causal mask (the default), fewer on a sliding-window layer once the prompt is longer
    than the window, where dividing by N - j would underestimate m_j. `first_row[l, h]` is
    A_00, what row 0 gives key 0: 1 (the default) unless a learned sink (gpt-oss) takes
    part of the row.
    Pure and vectorized over layers and heads, so it is unit-tested on hand-made sums.
    Returns [layer, head] arrays and the boolean sink mask [layer, head, key] with m_j.
    """
    n_keys = column_sums.shape[-1]
    if seen_by is None:
        seen_by = torch.arange(n_keys, 0, -1, dtype=column_sums.dtype).expand(
            column_sums.shape[0], -1
        )
    sinks, mean_received = sink_mask(column_sums, seen_by[:, None], config)
    # Rows 1..N-1 only: row 0 puts all its mass on key 0.
    received = column_sums.clone()
    received[..., 0] -= 1.0 if first_row is None else first_row
    n_rows = max(n_keys - 1, 1)
    hidden = sinks.clone()
    hidden[..., 0] = False
    return {
        "score": ((received * sinks).sum(-1) / n_rows).numpy(),
        "first_token_share": (received[..., 0] / n_rows).numpy(),
        "hidden_sink_share": ((received * hidden).sum(-1) / n_rows).numpy(),
        "n_sinks": sinks.sum(-1).numpy(),
        "first_token_dominant": (mean_received.argmax(-1) == 0).numpy(),
        "sinks": sinks.numpy(),
        "mean_received": mean_received.numpy(),
    }


def massive_share(
    column_sums: Float[Tensor, "layer head key"],
    first_row: Float[Tensor, "layer head"],
    massive: dict[int, tuple[np.ndarray, ...]],
) -> np.ndarray:
    """[layer, head] attention share of query rows 1..N-1 on the keys that hold a massive
    activation entering the layer (`massive_activations`' positions; 0 where none does)."""
    received = column_sums.clone()
    received[..., 0] -= first_row  # row 0 only sees key 0, as in `sink_statistics`
    share = np.zeros(received.shape[:2])
    n_rows = max(received.shape[-1] - 1, 1)
    for layer, (positions, *_) in massive.items():
        keys = torch.as_tensor(np.unique(positions), dtype=torch.long)
        share[layer] = (received[layer][:, keys].sum(-1) / n_rows).numpy()
    return share


def massive_activations(
    residual: Float[Tensor, "pos d_model"], threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positions, dims, phi) of every entry with |x_d| / RMS(x) >= threshold."""
    x = residual.float()
    phi = x.abs() / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    positions, dims = torch.nonzero(phi >= threshold, as_tuple=True)
    return positions.numpy(), dims.numpy(), phi[positions, dims].numpy()


def run(
    model: Model,
    prompts: str | Sequence[str],
    config: SinkConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SinkResult:
    """Score every head's attention sinks over `prompts`.

    Args:
        model: a loaded model.
        prompts: one text or a sequence of texts (a bare string is one prompt); each must
            fit the model's context (no truncation).
        config: thresholds; defaults are the reference code's.
        progress: called as progress(done, total) after each prompt.

    Example:
        >>> from interp.tiny_models import tiny_llama
        >>> result = run(tiny_llama(), ["The cat sat on the mat."])
        >>> result.heads.per_head()["label"].tolist()[:2]
        ['L0H0', 'L0H1']
    """
    config = config or SinkConfig()
    prompts = as_texts(prompts)
    if not prompts:
        raise InputError("No prompts given: the sink analyzer needs at least one.")
    # One prompt per forward (the hooks read batch row 0); lengths are checked up front.
    encoded = [model.encode(p) for p in prompts]
    longest = max(batch.input_ids.shape[-1] for batch in encoded)
    if config.min_queries > longest:
        raise InputError(
            f"min_queries={config.min_queries}: no key is seen by that many queries, as the"
            f" longest prompt has {longest} tokens; every score would be zero."
        )
    geometry = model.geometry
    head_frames, sink_frames, massive_frames = [], [], []
    for example, batch in enumerate(encoded):
        column_sums = _ColumnSums(geometry.n_layers)
        massive: dict[int, tuple[np.ndarray, ...]] = {}

        def find_massive(layer: int, x: Tensor, found: dict = massive) -> None:
            found[layer] = massive_activations(x[0].detach().cpu(), config.massive_threshold)

        with (
            torch.no_grad(),
            attention_hooks(model.hf, column_sums),
            residual_hooks(model.hf, find_massive),
        ):
            # The base model skips the LM head: sink scores need no [pos, vocab] logits,
            # and use_cache=False no KV cache (2 x layers x pos x d_kv values, unread).
            model.hf.base_model(**batch, use_cache=False)
        sums = torch.stack([s.float().cpu() for s in column_sums.sums])  # type: ignore[union-attr]
        seen_by = torch.stack([s.float().cpu() for s in column_sums.seen_by])  # type: ignore[union-attr]
        first_row = torch.stack([f.float().cpu() for f in column_sums.first_row])  # type: ignore[union-attr]
        stats = sink_statistics(sums, config, seen_by, first_row)
        stats["massive_share"] = massive_share(sums, first_row, massive)
        tokens = model.tokenizer.convert_ids_to_tokens(batch.ids().tolist())
        head_frames.append(_head_frame(stats, example, len(tokens)))
        sink_frames.append(_sink_frame(stats, example, tokens))
        massive_frames.append(_massive_frame(massive, example, tokens))
        if progress:
            progress(example + 1, len(encoded))
    provenance = Provenance(
        **model.provenance_fields(),
        analyzer=ANALYZER,
        config=config.to_dict(),
        inputs_hash=hash_inputs(prompts),
        n_inputs=len(prompts),
    )
    return SinkResult(
        heads=HeadScores(pd.concat(head_frames, ignore_index=True), provenance),
        sink_tokens=TokenScores(pd.concat(sink_frames, ignore_index=True), provenance),
        massive=TokenScores(pd.concat(massive_frames, ignore_index=True), provenance),
    )


def _head_frame(stats: dict[str, np.ndarray], example: int, n_tokens: int) -> pd.DataFrame:
    columns = [
        "score",
        "first_token_share",
        "hidden_sink_share",
        "n_sinks",
        "first_token_dominant",
        "massive_share",
    ]
    frame = head_frame({c: stats[c] for c in columns})
    frame.insert(3, "example", example)
    frame.insert(4, "n_tokens", n_tokens)
    return frame


def _sink_frame(stats: dict[str, np.ndarray], example: int, tokens: list[str]) -> pd.DataFrame:
    layer, head, position = np.nonzero(stats["sinks"])
    return pd.DataFrame(
        {
            "example": example,
            "position": position,
            "token": [tokens[p] for p in position],
            "layer": layer,
            "head": head,
            "mean_received": stats["mean_received"][layer, head, position],
        }
    )


def _massive_frame(
    found: dict[int, tuple[np.ndarray, ...]], example: int, tokens: list[str]
) -> pd.DataFrame:
    frames = []
    for layer in sorted(found):
        positions, dims, phi = found[layer]
        frames.append(
            pd.DataFrame(
                {
                    "example": example,
                    "position": positions,
                    "token": [tokens[p] for p in positions],
                    "layer": layer,
                    "dim": dims,
                    "phi": phi,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def massive_dimensions(massive: TokenScores) -> pd.DataFrame:
    """Candidate sink dimensions D_sink: per dim, how many layers and tokens it fires on.

    No published procedure finds D_sink for a new model; this ranks dims by the number of
    (example, layer, position) hits, with the positions and tokens where they fire, for the
    user to inspect.
    """
    table = massive.data
    if table.empty:
        return pd.DataFrame(columns=["dim", "hits", "layers", "positions", "tokens", "max_phi"])
    grouped = table.groupby("dim")
    return (
        pd.DataFrame(
            {
                "hits": grouped.size(),
                "layers": grouped["layer"].nunique(),
                "positions": grouped["position"].agg(lambda s: sorted(set(s))[:10]),
                "tokens": grouped["token"].agg(lambda s: sorted(set(s))[:10]),
                "max_phi": grouped["phi"].max(),
            }
        )
        .sort_values("hits", ascending=False)
        .reset_index()
    )
