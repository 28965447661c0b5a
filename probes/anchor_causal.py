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

Both go through `interp.effects.measure_arms`, each trace a work item: every arm (an
`AttentionEdit` per trace, `Blocked`) is measured against the arm that blocks nothing, the
same edit with no key listed (its `identity()`: same heads, kernels and renormalisation), so
only the block shows. All arms of a trace run as rows of one batch (`stack`).
`summarize` pairs the per-trace values through `interp.effects.compare`: each arm against
no block, and anchors against random (random = the mean over seeds). Cost per trace: one
forward and one greedy continuation of 2 + n_seeds rows, explicit attention in the band's
layers.
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
from interp.effects import EffectsConfig, compare, measure_arms
from interp.errors import InputError
from interp.generation import GenerationConfig, generate
from interp.heads import Heads, HeadSet
from interp.hooks import AttentionRows
from interp.interventions import AttentionEdit
from interp.interventions.base import Intervention
from interp.models import Model
from interp.results import Bundle, EffectTable, ItemTable, Provenance, TokenScores
from interp.runs import run_identity
from interp.work import Item, Row, WorkFolder, open_log
from probes.anchor_traces import Trace


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
    """A causal check's tables: its effects with intervals and its per-item rows (the
    blocking check's; `probes.anchor_perturb.PerturbResult` names the same two its own way)."""

    FILES: ClassVar[dict[str, str]] = {"effects": "causal_effects", "per_item": "causal_items"}

    effects: EffectTable
    per_item: ItemTable


@dataclass(frozen=True)
class Blocked:
    """One arm of the check as an effects arm built per batch of traces
    (`interp.interventions.base.PerItem`): the keys it blocks in each trace, by name.

    Its identity blocks nothing (`block_keys` with no keys: same heads, kernel and
    renormalisation), the baseline every arm is measured against.
    """

    heads: HeadSet
    name: str
    keys: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def for_items(self, traces: Sequence[Trace]) -> AttentionEdit:
        by_trace = dict(self.keys)
        return block_keys(self.heads, [by_trace.get(t.name, ()) for t in traces])

    def identity(self) -> Blocked:
        return Blocked(self.heads, "none")


@dataclass(frozen=True)
class Draw:
    """One arm's keys in one trace: all of them, and those before the cut."""

    arm: str
    seed: int
    keys: np.ndarray
    early: np.ndarray

    @property
    def label(self) -> str:
        return self.arm if self.seed < 0 else f"{self.arm}:{self.seed}"


def draws(trace: Trace, tokens: pd.DataFrame, config: CausalConfig) -> list[Draw]:
    """The arms' keys in one trace: its anchors, then as many random tokens per seed.

    Random keys come from the tokens with a defined FAI; each arm's `early` keys (those the
    continuation blocks) are its keys before the cut, drawn as many for the random arms.
    """
    anchors = tokens.position[tokens.is_anchor].to_numpy()
    cut = _cut(trace, config)
    pool = tokens.position[np.isfinite(tokens.fai)].to_numpy()
    early = pool[pool < cut]
    n_early = min(len(early), int((anchors < cut).sum()))
    arms = [Draw("anchors", -1, anchors, anchors[anchors < cut])]
    for seed in range(config.seed, config.seed + config.n_seeds):
        rng = np.random.default_rng([seed, len(trace.ids)])
        keys = rng.choice(pool, len(anchors), replace=False)
        arms.append(Draw("random", seed, keys, rng.choice(early, n_early, replace=False)))
    return arms


def _stacked(heads: HeadSet, edits: Sequence[Intervention]) -> AttentionEdit:
    """The arms' edits of one batch as one: their rows in turn, so all arms of a trace (and
    the row that blocks nothing) run as one batch of identical sequences."""
    keys = []
    for edit in edits:
        if not (isinstance(edit, AttentionEdit) and isinstance(edit.fn, BlockKeys)):
            raise TypeError(f"Only the causal check's own edits stack, not {edit!r}.")
        keys += edit.fn.keys
    return block_keys(heads, keys)


def _ints(keys: np.ndarray) -> tuple[int, ...]:
    return tuple(int(k) for k in keys)


def _cut(trace: Trace, config: CausalConfig) -> int:
    """Where the continuation's context ends: `cut` of the response, at least one token."""
    return trace.n_prompt + max(1, int(config.cut * trace.n_response))


def _logprobs(model: Model, traces: list[Trace], edit: Intervention) -> list[Row]:
    """Each trace's log p(token i + 1) for every i, teacher-forced under `edit`."""
    ids = torch.tensor([t.ids for t in traces], device=model.device)
    with torch.no_grad(), edit.applied(model):
        logits = model.hf(ids, use_cache=False).logits[:, :-1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
    return [{"logprob": row.tolist()} for row in logp.double().cpu()]


def _continuations(
    model: Model, traces: list[Trace], edit: Intervention, config: CausalConfig
) -> list[Row]:
    """Each trace's greedy continuation from its cut under `edit`: the set of its token ids."""
    contexts = [list(t.ids[: _cut(t, config)]) for t in traces]
    with torch.no_grad(), edit.applied(model):
        out = generate(
            model,
            contexts,
            GenerationConfig(max_new_tokens=config.continuation),
            batch_size=len(contexts),  # one batch: the edit blocks keys per row
        )
    return [{"tokens": sorted(set(g.response_ids.tolist()))} for g in out]


def _jaccard(a: set[int], b: set[int]) -> float:
    return 1.0 if not a | b else len(a & b) / len(a | b)


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
    """The causal check on every trace with anchors, through `interp.effects.measure_arms`.

    Two measurements, each trace a work item: the teacher-forced log-probs with each arm's
    keys blocked, and the continuation from the cut with its early keys blocked; both
    against the arm that blocks nothing. A trace without anchors has nothing to block and
    is left out.

    Args:
        tokens: the per-token table of the traces (`probes.anchors.run(...).tokens`); the
            result carries its provenance.
        heads: the global heads (`probes.anchors.heads_with_role(heads, "global")`).
        progress: called as progress(done, total) over both measurements' traces.
        folder: record each finished trace there (`interp.work`); run again with the same
            folder to resume a stopped run. A folder of another run is refused.

    Raises:
        InputError: no trace has an anchor.
    """
    config = config or CausalConfig()
    effects = effects or EffectsConfig()
    identity = {
        **run_identity(tokens.provenance),
        "causal": config.to_dict(),
        "heads": heads.labels,
    }
    by_trace = dict(tuple(tokens.data.groupby("trace", sort=False)))
    chosen = [t for t in traces if by_trace[t.name].is_anchor.any()]
    if not chosen:
        raise InputError("No trace has an anchor token: the causal check has nothing to block.")
    drawn = {t.name: draws(t, by_trace[t.name], config) for t in chosen}
    labels = [d.label for d in drawn[chosen[0].name]]
    log = open_log(folder, identity)
    measured = []
    for stage, (part, evaluate) in enumerate(
        (
            ("keys", lambda batch, edit: _logprobs(model, batch, edit)),
            ("early", lambda batch, edit: _continuations(model, batch, edit, config)),
        )
    ):
        arms = [
            Blocked(heads, label, tuple((n, _ints(getattr(d[i], part))) for n, d in drawn.items()))
            for i, label in enumerate(labels)
        ]
        measured.append(
            measure_arms(
                [Item(f"causal {part}/{t.name}", t) for t in chosen],
                arms,
                evaluate,
                [],
                effects,
                values=labels,
                batch_size=1,
                folder=log,
                stack=lambda edits: _stacked(heads, edits),
                progress=_offset(progress, stage * len(chosen), 2 * len(chosen)),
            ).per_item
        )
    return summarize(_rows(chosen, drawn, *measured), tokens.provenance, effects)


def _offset(
    progress: Callable[[int, int], None] | None, before: int, total: int
) -> Callable[[int, int], None] | None:
    """progress(done, _) of one measurement reported as a share of `total` after `before`."""
    if progress is None:
        return None
    return lambda done, _: progress(before + done, total)


def _rows(
    traces: list[Trace], drawn: dict[str, list[Draw]], logprobs: pd.DataFrame, texts: pd.DataFrame
) -> pd.DataFrame:
    """The per-arm rows of every trace (trace-major) from the two measurements' items."""
    rows = []
    for item, trace in enumerate(traces):
        for draw in drawn[trace.name]:
            lp = logprobs[(logprobs.item == item) & (logprobs.parameter == draw.label)].iloc[0]
            tx = texts[(texts.item == item) & (texts.parameter == draw.label)].iloc[0]
            before, after = np.array(lp.baseline_logprob), np.array(lp.intervened_logprob)
            later = np.arange(1, len(trace.ids)) > draw.keys.min()  # index i is token i + 1
            rows.append(
                {
                    "trace": trace.name,
                    "arm": draw.arm,
                    "seed": draw.seed,
                    "n_blocked": len(draw.keys),
                    "n_later": int(later.sum()),
                    "baseline_logprob": float(before[later].mean()),
                    "blocked_logprob": float(after[later].mean()),
                    "logprob_change": float((after - before)[later].mean()),
                    "jaccard": _jaccard(set(tx.baseline_tokens), set(tx.intervened_tokens)),
                }
            )
    return pd.DataFrame(rows)


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
