"""Preplan and anchor tokens in reasoning traces: local/global heads, WAAD and FAI.

Li et al., "Attention Illuminates LLM Reasoning: The Preplan-and-Anchor Rhythm Enables
Fine-Grained Policy Optimization" (arXiv 2510.13554, v2). For a trace of N tokens whose
response positions are R, with A^{l,h} the post-softmax attention of head (l, h):

* back-distance d(l, h) = (1/|R|) Σ_{t∈R} Σ_{s≤t} A_{t,s} (t − s), over the heads of a
  layer band (default `layer_band="all"`: every layer, the paper's §4 analysis; `"middle"`: 5
  evenly spaced layers in [⌊L/3⌋, ⌊2L/3⌋], its RL experiments). The bottom 30% of the
  band's heads by d are *local*, the top 30% *global* (`head_split`, pass 1).
* WAAD_t = Σ_{s≤t} Ā_loc[t, s] · min(t − s, W), W = 10, with Ā_loc the plain mean over
  local heads; ΔWAAD_t = |WAAD_t − WAAD_{t+1}|; preplan tokens = top-q of Δ per response.
* FAI_s = mean over t ∈ T(s) of Ā_glob[t, s], T(s) = {t ∈ R : s + H_lo ≤ t ≤ s + H_hi}
  (default H_lo = 1, H_hi = 0 meaning the response end: every later response token, the
  paper's §4 analysis; its RL experiments use 10 and 100, v2); anchor tokens = top-q of FAI
  per response; q = 0.4. `RL_SETTINGS` names the RL experiments' band and window.

Index convention: row t is computed at input token t; by default its WAAD is attached to
token t (the paper's reading). `shift=1` attaches row t − 1, the row whose output produced
token t. FAI is a column (key) quantity and needs no shift.

Two passes, both reduced inside `interp.hooks` attention hooks, one block of query rows at a
time: pass 1 keeps per-head sums of distances ([batch, head] per layer), pass 2 keeps
per-position sums ([batch, N] WAAD and FAI accumulators) and the logits of the forward (for
entropy and log-probs, as a plain forward has them). Neither holds a [layer, head, N, N]
pattern, so memory grows linearly with trace length (benchmarks/anchors.py). Explicit
attention runs only in the band's layers; the others keep SDPA.

Choices the paper leaves open, labelled [I] in docs/methods.md §9: d(l, h) pooled over all
traces' response positions; head counts and top-q counts round half up (at least 1); FAI
is undefined (NaN) for tokens with an empty T(s) and ΔWAAD for the last response token,
and undefined values are never top-q; ties go to the earlier token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interp.config import Config, check_range
from interp.encoding import Encoding
from interp.errors import ConfigError
from interp.heads import HeadSet
from interp.hooks import AttentionRows, attention_hooks
from interp.models import Model
from interp.results import Bundle, HeadScores, Provenance, TokenScores, hash_inputs, head_frame
from interp.work import WorkFolder, open_log
from probes.anchor_traces import Trace, trace_work

ANALYZER = "anchors"
_ENTROPY_ROWS = 256  # positions per chunk of the entropy computation


@dataclass(frozen=True, kw_only=True)
class AnchorConfig(Config):
    """Parameters of the preplan/anchor analysis; defaults from the paper's §4 analysis (v2).

    Attributes:
        window: W of WAAD (paper: 10).
        h_lo: FAI's nearest query offset (analysis: 1, every later token; RL: 10).
        h_hi: FAI's farthest query offset; 0 reads queries up to the response end, as the
            paper's §4 analysis does (RL experiments: v2 100, v1 50).
        q: share of each response's tokens marked preplan, and anchor (paper: 0.4).
        local_fraction: share of the band's heads, lowest d(l, h), that are local (0.3).
        global_fraction: share of the band's heads, highest d(l, h), that are global (0.3).
        layer_band: "all" layers (the paper's analysis: all heads) or "middle": `band_size`
            layers evenly spaced in [⌊L/3⌋, ⌊2L/3⌋] (its RL experiments).
        band_size: layers of the "middle" band (paper: 5).
        layers: explicit band layers instead (empty: `layer_band`).
        shift: 0 attaches row t to token t (paper); 1 attaches row t − 1 (see module doc).
        batch_size: traces per forward (left-padded).
    """

    window: int = 10
    h_lo: int = 1
    h_hi: int = 0
    q: float = 0.4
    local_fraction: float = 0.3
    global_fraction: float = 0.3
    layer_band: Literal["all", "middle"] = "all"
    band_size: int = 5
    layers: tuple[int, ...] = ()
    shift: Literal[0, 1] = 0
    batch_size: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "window", 1)
        check_range(self, "h_lo", 0)
        check_range(self, "h_hi", 0)
        if self.h_hi and self.h_hi < self.h_lo:
            raise ConfigError(f"AnchorConfig.h_hi ({self.h_hi}) is below h_lo ({self.h_lo}).")
        check_range(self, "q", 0.0, 1.0, strict_low=True)
        check_range(self, "local_fraction", 0.0, 1.0, strict_low=True)
        check_range(self, "global_fraction", 0.0, 1.0, strict_low=True)
        check_range(self, "band_size", 1)
        check_range(self, "batch_size", 1)
        if any(layer < 0 for layer in self.layers):
            raise ConfigError(f"AnchorConfig.layers must be >= 0, got {list(self.layers)}.")

    def band(self, n_layers: int) -> list[int]:
        """The band's layers for an `n_layers`-layer model."""
        if self.layers:
            if max(self.layers) >= n_layers:
                raise ConfigError(
                    f"AnchorConfig.layers {list(self.layers)} exceed the model's"
                    f" {n_layers} layers (0..{n_layers - 1})."
                )
            return sorted(set(self.layers))
        if self.layer_band == "all":
            return list(range(n_layers))
        low, high = n_layers // 3, (2 * n_layers) // 3
        return sorted({int(np.floor(x + 0.5)) for x in np.linspace(low, high, self.band_size)})


# The paper's RL experiments: the middle band and FAI over 10..100 tokens later (v2).
RL_SETTINGS: dict[str, object] = {"layer_band": "middle", "h_lo": 10, "h_hi": 100}


@dataclass(frozen=True)
class AnchorResult(Bundle):
    """What `run` returns: the head split and the per-token table."""

    FILES: ClassVar[dict[str, str]] = {"heads": "heads", "tokens": "tokens"}

    heads: HeadScores
    tokens: TokenScores


def top_count(n: int, fraction: float) -> int:
    """How many of n items a top-`fraction` rule takes: round half up, at least 1 (0 if n=0)."""
    return 0 if n == 0 else max(1, int(np.floor(fraction * n + 0.5)))


def top_q(values: np.ndarray, q: float) -> np.ndarray:
    """Boolean mask of the top-q share of the finite values (ties: earlier first)."""
    values = np.asarray(values, dtype=float)
    finite = np.flatnonzero(np.isfinite(values))
    chosen = finite[np.argsort(-values[finite], kind="stable")][: top_count(len(finite), q)]
    mask = np.zeros(len(values), dtype=bool)
    mask[chosen] = True
    return mask


# ----------------------------------------------------------------------------------------
# Batches of traces


@dataclass(frozen=True)
class _Batch:
    encoding: Encoding
    response: Tensor  # [batch, pos] bool: response positions, padded coordinates
    starts: list[int]  # per row: padded position of the trace's first token


def _batch(model: Model, traces: Sequence[Trace]) -> _Batch:
    pad = model.tokenizer.pad_token_id
    encoding = Encoding.left_padded([t.ids for t in traces], 0 if pad is None else pad)
    encoding = Encoding(
        encoding.input_ids.to(model.device), encoding.attention_mask.to(model.device)
    )
    width = encoding.input_ids.shape[1]
    starts = [width - len(t.ids) for t in traces]
    positions = torch.arange(width, device=model.device)
    first = torch.tensor([s + t.n_prompt for s, t in zip(starts, traces, strict=True)])
    response = positions[None, :] >= first.to(model.device)[:, None]
    return _Batch(encoding, response, starts)


def _distance(rows: AttentionRows) -> Tensor:
    """[query, key] t − s for the block, clamped at 0 (keys after t carry no mass)."""
    keys = torch.arange(rows.probs.shape[-1], device=rows.probs.device)
    return (rows.query_positions[:, None] - keys[None, :]).clamp_min(0).float()


# ----------------------------------------------------------------------------------------
# Pass 1: back-distance per head


class _BackDistance:
    """Sums Σ_{t∈R} Σ_s A_{t,s}(t − s) per batch row and head, for the band's layers."""

    def __init__(self, layers: list[int], response: Tensor) -> None:
        self.layers = set(layers)
        self.response = response.float()
        self.sums: dict[int, Tensor] = {}

    def wants(self, layer: int, n_queries: int) -> bool:
        return layer in self.layers

    def __call__(self, rows: AttentionRows) -> None:
        per_row = torch.einsum("bhqk,qk->bhq", rows.probs, _distance(rows))
        weight = self.response[:, rows.query_positions]  # [batch, query]
        total = torch.einsum("bhq,bq->bh", per_row, weight)
        if rows.layer in self.sums:
            self.sums[rows.layer] += total
        else:
            self.sums[rows.layer] = total


def distance_sums(model: Model, traces: Sequence[Trace], config: AnchorConfig) -> np.ndarray:
    """Pass 1 for one batch: [trace, band layer, head] sums of d's numerator (float64).

    Divide the sum over traces by the total number of response tokens to get d(l, h).
    """
    band = config.band(model.geometry.n_layers)
    batch = _batch(model, traces)
    hook = _BackDistance(band, batch.response)
    with torch.no_grad(), attention_hooks(model.hf, hook):
        model.hf(**batch.encoding, use_cache=False, logits_to_keep=1)
    return torch.stack([hook.sums[layer] for layer in band], dim=1).double().cpu().numpy()


def head_split(
    sums: np.ndarray, n_response: int, model: Model, config: AnchorConfig, provenance: Provenance
) -> HeadScores:
    """The band's heads with d(l, h) as `score` and their `role`: local, global or middle.

    Args:
        sums: [band layer, head] distance sums over all traces (`distance_sums`, summed).
        n_response: response tokens over all traces.
    """
    geometry = model.geometry
    band = config.band(geometry.n_layers)
    distance = np.full((geometry.n_layers, geometry.n_heads), np.nan)
    distance[band] = sums / n_response
    table = head_frame({"score": distance})
    table = table[table.layer.isin(band)].reset_index(drop=True)
    order = np.argsort(table.score.to_numpy(), kind="stable")
    role = np.full(len(table), "middle", dtype=object)
    role[order[: top_count(len(table), config.local_fraction)]] = "local"
    role[order[::-1][: top_count(len(table), config.global_fraction)]] = "global"
    table["role"] = role.astype(str)
    return HeadScores(table, provenance)


def heads_with_role(heads: HeadScores, role: str) -> HeadSet:
    table = heads.data
    chosen = table[table.role == role]
    return HeadSet(
        zip(chosen.layer.astype(int).tolist(), chosen["head"].astype(int).tolist(), strict=True)
    )


# ----------------------------------------------------------------------------------------
# Pass 2: WAAD and FAI per token


class _TokenSums:
    """Accumulates Σ_{h∈loc} Σ_s A[t,s]·min(t−s, W) per row and the FAI band's column sums."""

    def __init__(self, local: HeadSet, glob: HeadSet, response: Tensor, config: AnchorConfig):
        self.local = local.index_by_layer()
        self.glob = glob.index_by_layer()
        self.config = config
        batch, width = response.shape
        self.waad = response.new_zeros((batch, width), dtype=torch.float32)
        self.fai = response.new_zeros((batch, width), dtype=torch.float32)

    def wants(self, layer: int, n_queries: int) -> bool:
        return layer in self.local or layer in self.glob

    def __call__(self, rows: AttentionRows) -> None:
        distance = _distance(rows)  # [query, key]
        device = rows.probs.device
        if rows.layer in self.local:
            mean = rows.probs[:, self.local[rows.layer].to(device)].sum(1)  # [batch, q, k]
            weight = distance.clamp_max(self.config.window)
            self.waad[:, rows.query_positions] += torch.einsum("bqk,qk->bq", mean, weight)
        if rows.layer in self.glob:
            summed = rows.probs[:, self.glob[rows.layer].to(device)].sum(1)
            in_band = distance >= self.config.h_lo
            if self.config.h_hi:
                in_band &= distance <= self.config.h_hi
            # Every t in the band of a response token s is a response position, and padded
            # query rows are zero, so no query mask is needed for the response's columns.
            column = torch.einsum("bqk,qk->bk", summed, in_band.float())
            self.fai[:, : column.shape[-1]] += column


def _fai_counts(n: int, n_prompt: int, config: AnchorConfig) -> np.ndarray:
    """|T(s)| for every position s of one trace (unpadded coordinates)."""
    s = np.arange(n)
    low = np.maximum(s + config.h_lo, n_prompt)
    high = np.minimum(s + config.h_hi, n - 1) if config.h_hi else np.full(n, n - 1)
    return np.clip(high - low + 1, 0, None)


def token_rows(
    model: Model, traces: Sequence[Trace], heads: HeadScores, config: AnchorConfig
) -> list[list[dict[str, object]]]:
    """Pass 2 for one batch: per trace, one row per response token (see `token_table`)."""
    local, glob = heads_with_role(heads, "local"), heads_with_role(heads, "global")
    batch = _batch(model, traces)
    hook = _TokenSums(local, glob, batch.response, config)
    with torch.no_grad(), attention_hooks(model.hf, hook):
        logits = model.hf(**batch.encoding, use_cache=False).logits
    out = []
    for row, trace in enumerate(traces):
        start, n = batch.starts[row], len(trace.ids)
        ids = torch.tensor(trace.ids, device=logits.device)
        entropy, logprob = _entropy_logprob(logits[row, start : start + n], ids)
        waad_rows = (hook.waad[row, start : start + n] / len(local)).double().cpu().numpy()
        counts = _fai_counts(n, trace.n_prompt, config)
        fai_sums = hook.fai[row, start : start + n].double().cpu().numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            fai = np.where(counts > 0, fai_sums / (len(glob) * counts), np.nan)
        out.append(_trace_rows(model, trace, waad_rows, fai, entropy, logprob, config))
    return out


def _entropy_logprob(logits: Tensor, ids: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per position p: entropy of the distribution token p was drawn from (row p − 1) and
    log p(token p); NaN at p = 0. In chunks of rows, so the temporaries stay small next to
    the logits the forward already holds."""
    entropy, chosen = [torch.full((1,), float("nan"))], [torch.full((1,), float("nan"))]
    for start in range(0, len(ids) - 1, _ENTROPY_ROWS):
        stop = min(start + _ENTROPY_ROWS, len(ids) - 1)
        logp = torch.log_softmax(logits[start:stop].float(), dim=-1)
        entropy.append(-(logp.exp() * logp).sum(-1).cpu())
        chosen.append(logp.gather(-1, ids[start + 1 : stop + 1, None])[:, 0].cpu())
    return torch.cat(entropy).double().numpy(), torch.cat(chosen).double().numpy()


def _trace_rows(
    model: Model,
    trace: Trace,
    waad_rows: np.ndarray,
    fai: np.ndarray,
    entropy: np.ndarray,
    logprob: np.ndarray,
    config: AnchorConfig,
) -> list[dict[str, object]]:
    p0, n = trace.n_prompt, len(trace.ids)
    response = np.arange(p0, n)
    waad = waad_rows[response - config.shift]
    delta = np.append(np.abs(waad[:-1] - waad[1:]), np.nan)
    fai_r = fai[response]
    preplan, anchor = top_q(delta, config.q), top_q(fai_r, config.q)
    texts = [model.tokenizer.decode([i]) for i in trace.ids[p0:]]
    return [
        {
            "trace": trace.name,
            "position": int(p),
            "response_position": int(i),
            "token_id": int(trace.ids[p]),
            "token": texts[i],
            "waad": float(waad[i]),
            "fai": float(fai_r[i]),
            "delta_waad": float(delta[i]),
            "is_preplan": bool(preplan[i]),
            "is_anchor": bool(anchor[i]),
            "entropy": float(entropy[p]),
            "logprob": float(logprob[p]),
        }
        for i, p in enumerate(response)
    ]


def token_table(rows: list[dict[str, object]], provenance: Provenance) -> TokenScores:
    """The tidy per-token table: `example` numbers traces in order of appearance."""
    frame = pd.DataFrame(rows)
    frame.insert(0, "example", pd.factorize(frame.trace)[0].astype(np.int64))
    return TokenScores(frame, provenance)


# ----------------------------------------------------------------------------------------
# Both passes


def anchors_provenance(model: Model, traces: Sequence[Trace], config: AnchorConfig) -> Provenance:
    return Provenance(
        **model.provenance_fields(),
        analyzer=ANALYZER,
        config=config.to_dict(),
        inputs_hash=hash_inputs([t.to_dict() for t in traces]),
        n_inputs=len(traces),
    )


def run(
    model: Model,
    traces: Sequence[Trace],
    config: AnchorConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    folder: WorkFolder | None = None,
) -> AnchorResult:
    """Split the band's heads (pass 1), then score every response token (pass 2).

    Both passes run the traces in batches of `config.batch_size`, in their order, through
    the work driver (`interp.work`), one work item per trace and pass.

    Args:
        model: the model whose attention is read.
        traces: prompt + response ids (`probes.anchor_traces`).
        config: parameters (paper defaults).
        progress: called as progress(done, total) over both passes (total: 2 x traces),
            before the work and after each batch of each pass.
        folder: record each trace's finished passes there; run again with the same
            folder to resume a stopped run. A folder of another run is refused.

    Example:
        >>> from interp.tiny_models import tiny_llama
        >>> model = tiny_llama()
        >>> trace = Trace("t", tuple(range(3, 40)), n_prompt=7)
        >>> result = run(model, [trace], AnchorConfig(h_lo=2, h_hi=8))
        >>> sorted(set(result.heads.data.role)), len(result.tokens)
        (['global', 'local', 'middle'], 30)
    """
    config = config or AnchorConfig()
    provenance = anchors_provenance(model, traces, config)
    log = open_log(folder, provenance)

    def shifted(offset: int) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        return lambda done, _: progress(offset + done, 2 * len(traces))

    sums = trace_work("pass 1", traces, log, config.batch_size).run(
        lambda batch: [[{"sums": s.tolist()}] for s in distance_sums(model, batch, config)],
        shifted(0),
    )
    summed = np.sum([np.array(rows[0]["sums"]) for rows in sums], axis=0)
    n_response = sum(t.n_response for t in traces)
    heads = head_split(summed, n_response, model, config, provenance)
    per_trace = trace_work("pass 2", traces, log, config.batch_size).run(
        lambda batch: token_rows(model, batch, heads, config), shifted(len(traces))
    )
    rows = [row for trace_rows in per_trace for row in trace_rows]
    return AnchorResult(heads, token_table(rows, provenance))
