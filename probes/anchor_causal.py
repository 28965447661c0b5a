"""Causal check of anchors: block later tokens' attention to them in the global heads.

Li et al. (arXiv 2510.13554, §4) perturb high-FAI tokens and find the greedy continuation
changes more (token Jaccard 0.534) than when low-FAI tokens are perturbed (0.631). Here the
perturbation is an `AttentionEdit` on the global heads that zeroes every later query's
attention to the blocked keys (rows renormalised over the rest): once for the trace's
anchor tokens, and, as the control, for as many response tokens drawn at random from the
same pool (tokens with a defined FAI), over `n_seeds` draws. Per trace it measures

* `logprob_change`: the mean change in log p(token) over the response tokens after the
  first blocked key, on the full trace (teacher-forced);
* `jaccard`: the Jaccard similarity of the sets of token ids in the greedy continuation
  (`continuation` tokens) of the trace cut at `cut` of its response, with and without
  the block (keys before the cut only; the random arm draws as many from before the cut).

The unedited arm runs in the same batch through the same edit with nothing blocked (what
the edit's `identity()` computes: same heads, kernels and renormalisation), so only the block
shows. `summarize` pairs the per-trace values through `interp.effects.compare`: each arm
against no block, and anchors against random (random = the mean over seeds). Cost per trace:
one forward and one greedy continuation of a batch of 2 + n_seeds identical rows, explicit
attention in the band's layers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interp.config import Config, check_range
from interp.effects import EffectsConfig, compare
from interp.errors import InputError
from interp.generation import GenerationConfig, generate
from interp.heads import Heads, HeadSet
from interp.hooks import AttentionRows
from interp.interventions import AttentionEdit
from interp.models import Model
from interp.results import Bundle, EffectTable, ItemTable, Provenance, TokenScores
from interp.runs import run_identity
from interp.work import WorkFolder, open_log
from probes.anchor_traces import Trace, trace_work


@dataclass(frozen=True)
class BlockKeys:
    """Edit function: zero each query's attention to its row's listed keys before it.

    `keys[b]` are positions on the key axis of batch row b (a row with none is unedited).
    """

    keys: tuple[tuple[int, ...], ...]

    def __call__(self, rows: AttentionRows, index: Tensor) -> Tensor:
        probs = rows.probs[:, index]
        batch, n_keys = probs.shape[0], probs.shape[-1]
        if batch != len(self.keys):
            raise InputError(
                f"BlockKeys lists keys for {len(self.keys)} rows; the batch has {batch}."
            )
        blocked = torch.zeros(batch, n_keys, dtype=torch.bool)
        for row, keys in enumerate(self.keys):
            blocked[row, [k for k in keys if k < n_keys]] = True
        later = rows.query_positions[:, None] > torch.arange(n_keys, device=probs.device)
        hidden = later[None] & blocked.to(probs.device)[:, None]  # [batch, query, key]
        return probs.masked_fill(hidden[:, None], 0.0)

    def select(self, rows: Sequence[int]) -> BlockKeys:
        """The keys of batch rows `rows` (`AttentionEdit.select` cuts a per-row edit)."""
        return BlockKeys(tuple(self.keys[row] for row in rows))


def block_keys(heads: Heads, keys: Sequence[Sequence[int]]) -> AttentionEdit:
    """The AttentionEdit that blocks later tokens' attention to `keys[b]` in batch row b."""
    return AttentionEdit(
        heads, BlockKeys(tuple(tuple(sorted(int(k) for k in row)) for row in keys))
    )


@dataclass(frozen=True, kw_only=True)
class CausalConfig(Config):
    """Attributes:
    n_seeds: random draws of control tokens per trace.
    continuation: greedy tokens compared by Jaccard.
    cut: share of the response kept as context for the continuation.
    seed: seed of the first draw.
    """

    n_seeds: int = 5
    continuation: int = 32
    cut: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "n_seeds", 1)
        check_range(self, "continuation", 1)
        check_range(self, "cut", 0.0, 1.0, strict_low=True)
        check_range(self, "seed", 0)


@dataclass(frozen=True)
class CausalResult(Bundle):
    FILES: ClassVar[dict[str, str]] = {"effects": "causal_effects", "per_item": "causal_items"}

    effects: EffectTable
    per_item: ItemTable


def _logprobs(model: Model, ids: Tensor, edit: AttentionEdit) -> np.ndarray:
    """[row, pos - 1] log p(token i + 1) of each row of the batch `ids` under `edit`."""
    with torch.no_grad(), edit.applied(model):
        logits = model.hf(ids, use_cache=False).logits[:, :-1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
    return logp.double().cpu().numpy()


def _continuations(model: Model, context: Tensor, edit: AttentionEdit, n: int) -> list[set[int]]:
    rows = len(edit.fn.keys)  # type: ignore[attr-defined]
    with torch.no_grad(), edit.applied(model):
        out = generate(model, [context] * rows, GenerationConfig(max_new_tokens=n), batch_size=rows)
    return [set(g.response_ids.tolist()) for g in out]


def _jaccard(a: set[int], b: set[int]) -> float:
    return 1.0 if not a | b else len(a & b) / len(a | b)


def trace_effects(
    model: Model, trace: Trace, tokens: pd.DataFrame, heads: HeadSet, config: CausalConfig
) -> list[dict[str, object]]:
    """Per arm (anchors, and random per seed) of one trace: logprob_change and jaccard.

    All arms and the unedited row run as one batch of identical sequences, the unedited
    row through the same edit with nothing blocked (what `identity()` computes).

    Args:
        tokens: the trace's rows of the per-token table (`probes.anchors`).
        heads: the global heads.
    """
    anchors = tokens.position[tokens.is_anchor].to_numpy()
    if not len(anchors):
        return []
    cut = trace.n_prompt + max(1, int(config.cut * trace.n_response))
    pool = tokens.position[np.isfinite(tokens.fai)].to_numpy()
    early = pool[pool < cut]
    n_early = min(len(early), int((anchors < cut).sum()))
    arms = [("anchors", -1, anchors, anchors[anchors < cut])]
    for seed in range(config.seed, config.seed + config.n_seeds):
        rng = np.random.default_rng([seed, len(trace.ids)])
        keys = rng.choice(pool, len(anchors), replace=False)
        arms.append(("random", seed, keys, rng.choice(early, n_early, replace=False)))
    batch = len(arms) + 1
    ids = torch.tensor([trace.ids] * batch, device=model.device)
    logprob = _logprobs(model, ids, block_keys(heads, [(), *(a[2] for a in arms)]))
    texts = _continuations(
        model, ids[0, :cut], block_keys(heads, [(), *(a[3] for a in arms)]), config.continuation
    )
    rows = []
    for row, (arm, seed, keys, _) in enumerate(arms, start=1):
        later = np.arange(1, len(trace.ids)) > keys.min()  # logprob index i is token i + 1
        rows.append(
            {
                "trace": trace.name,
                "arm": arm,
                "seed": seed,
                "n_blocked": len(keys),
                "n_later": int(later.sum()),
                "baseline_logprob": float(logprob[0, later].mean()),
                "blocked_logprob": float(logprob[row, later].mean()),
                "logprob_change": float((logprob[row] - logprob[0])[later].mean()),
                "jaccard": _jaccard(texts[0], texts[row]),
            }
        )
    return rows


def run(
    model: Model,
    traces: Sequence[Trace],
    tokens: TokenScores,
    heads: HeadSet,
    config: CausalConfig | None = None,
    effects: EffectsConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    folder: WorkFolder | None = None,
) -> CausalResult:
    """The causal check on every trace (`trace_effects`), one work item per trace, summarized.

    Args:
        tokens: the per-token table of the traces (`probes.anchors.run(...).tokens`); the
            result carries its provenance.
        heads: the global heads (`probes.anchors.heads_with_role(heads, "global")`).
        progress: called as progress(done, total) before the work and after each trace.
        folder: record each finished trace there (`interp.work`); run again with the same
            folder to resume a stopped run. A folder of another run is refused.
    """
    config = config or CausalConfig()
    identity = {
        **run_identity(tokens.provenance),
        "causal": config.to_dict(),
        "heads": heads.labels,
    }
    by_trace = dict(tuple(tokens.data.groupby("trace", sort=False)))
    per_trace = trace_work("causal check", traces, open_log(folder, identity)).run(
        lambda batch: [trace_effects(model, t, by_trace[t.name], heads, config) for t in batch],
        progress,
    )
    rows = [row for trace_rows in per_trace for row in trace_rows]
    return summarize(pd.DataFrame(rows), tokens.provenance, effects)


def summarize(
    rows: pd.DataFrame, provenance: Provenance, effects: EffectsConfig | None = None
) -> CausalResult:
    """Effects with intervals: each arm vs no block, and anchors vs random (per trace)."""
    effects = effects or EffectsConfig()
    per_trace = rows.groupby(["trace", "arm"], sort=False)[
        ["baseline_logprob", "blocked_logprob", "jaccard"]
    ].mean()
    anchors = per_trace.xs("anchors", level="arm")
    random = per_trace.xs("random", level="arm").loc[anchors.index]
    seeds = int(rows[rows.arm == "random"].groupby("trace").size().min())  # draws per trace
    table = []
    for arm, values, draws in (("anchors", anchors, None), ("random", random, seeds)):
        table.append(
            {
                "comparison": f"{arm} blocked vs none",
                **compare(
                    values.baseline_logprob,
                    values.blocked_logprob,
                    "later_logprob",
                    effects,
                    seeds=draws,
                ),
            }
        )
        ones = np.ones(len(values))
        table.append(
            {
                "comparison": f"{arm} blocked vs none",
                **compare(ones, values.jaccard, "jaccard", effects, seeds=draws),
            }
        )
    change = per_trace.blocked_logprob - per_trace.baseline_logprob
    table.append(
        {
            "comparison": "anchors vs random",
            **compare(
                change.xs("random", level="arm").loc[anchors.index],
                change.xs("anchors", level="arm"),
                "logprob_change",
                effects,
                seeds=seeds,
            ),
        }
    )
    table.append(
        {
            "comparison": "anchors vs random",
            **compare(random.jaccard, anchors.jaccard, "jaccard", effects, seeds=seeds),
        }
    )
    return CausalResult(
        EffectTable(pd.DataFrame(table), provenance),
        ItemTable(rows.reset_index(drop=True), provenance),
    )
