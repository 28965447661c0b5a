"""ACT head search: calibrate one head at a time and keep the heads that help.

Yu et al. 2024 search, on a calibration set, which (layer, head) to calibrate; their code
ships the resulting lists but not the selection rule (docs/methods.md §5). The toolkit's rule:
for each candidate head (default: every head in layers 2..L-2), apply ACT to that head
alone, score the calibration tasks, and keep the heads whose pooled calibration metric beats
the head's *identity arm* by more than max(`min_gain`, noise floor). The metric is accuracy
(the paper's); `metric="log_prob"` (mean log-probability of the right choice, normalised
over the choices) is a continuous option for small calibration sets.

Like with like. ACT computes its layer with explicit float32 attention, the plain model with
SDPA; the two differ by float rounding (~1e-7 in log-prob), enough to "select" heads on
noise. So each candidate is compared with an identity arm that runs the same kernel in the
same forward: the candidate's layer through explicit attention, unedited. ACT with beta = 1
is bit-for-bit that identity (`calibrate_rows`), so its gain is exactly 0 for every head.
The noise floor is measured in the run: the largest change of the pooled metric between the
plain (SDPA) baseline and an identity arm, i.e. what changing the kernel alone does. A head
is kept only if gain > max(min_gain, floor); the floor is a column of the result.

Heads without hidden sinks. Where a head's S' is empty on a prompt, ACT leaves its rows
unchanged, so its result on that prompt *is* the identity arm's. Such (prompt, head) pairs
are not run; a head with no hidden sink on any calibration prompt is not run at all and is
reported with `skipped` = "no hidden sink" (score 0, exactly its gain).

Cost. Per batch of calibration sequences: one plain forward that caches every searched
layer's resid_pre; per searched layer, one forward of that layer alone to find which
(sequence, head) pairs have hidden sinks, then one forward *from that layer on* (cached
resid_pre as input, `interp.midway.decoder_from`) whose batch rows are the identity arm and
every candidate pair, each row editing only its own head. So a candidate in layer l costs
(L - l) / L of a forward on the prompts where it has sinks. Memory: the cached resid_pre,
[searched layers, batch, pos, d_model] float32, plus one batch of (1 + heads) replicas.
`max_heads` and `Task.subsample` cut it further; `calibration_metric` under
`ACT(head).applied` is the slow reference path (one head at a time, full forwards).

Resuming. Each calibration sequence is one item of the work driver (`interp.work`), in
the same length-sorted batches: with `folder`, a finished batch records every arm's reads
of its sequences, and a search run again with the same folder skips those batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interp.config import Config, check_range
from interp.errors import InputError
from interp.heads import Head, HeadSet, RowHeads
from interp.hooks import AttentionRows, attention_hooks, residual_hooks
from interp.interventions.act import ACT, ActConfig, Calibrator, act_candidates
from interp.interventions.attention_edit import AttentionEdit, unchanged_rows
from interp.interventions.base import applied_all
from interp.midway import decoder_from
from interp.models import Model
from interp.results import HeadScores, Provenance, csv_path, hash_inputs
from interp.runs import WorkLog, run_identity
from interp.tasks import (
    ChoicePlan,
    Task,
    TaskRun,
    choice_accuracy,
    choice_logprob,
    evaluate,
    left_pad,
    plan_choices,
    read_choice,
)
from interp.work import Item, Row, Work, WorkFolder, open_log

ANALYZER = "act_search"
NO_SINK = "no hidden sink"
# Shipped tasks on which the default model sits between 55% and 85% (data/README.md), so
# an effect of either sign can show; the others are at ceiling or chance.
DEFAULT_TASKS = ("contrast", "antonyms")


@dataclass(frozen=True, kw_only=True)
class SearchConfig(Config):
    """Head-search parameters.

    Attributes:
        metric: "accuracy" (paper) or "log_prob" (mean normalised log-prob of the answer).
        min_gain: keep heads whose gain is strictly above this and above the noise floor.
        max_heads: search a seeded random subset of this many candidates (None: all).
        seed: seed of that subset.
        batch_size: calibration sequences per batch; a layer's forward holds up to
            batch_size x (1 + heads in the layer) rows.
    """

    metric: Literal["accuracy", "log_prob"] = "accuracy"
    min_gain: float = 0.0
    max_heads: int | None = None
    seed: int = 0
    batch_size: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_heads is not None:
            check_range(self, "max_heads", 1)
        check_range(self, "seed", 0)
        check_range(self, "batch_size", 1)


@dataclass(frozen=True)
class HeadSearch:
    """What `search_heads` returns.

    Attributes:
        scores: one row per searched head: score (gain over its identity arm),
            metric_value, identity (the identity arm's metric), baseline, noise_floor,
            skipped ("" or why it was not run), selected.
        selected: heads with score > max(min_gain, noise_floor), for `ACT(selected)`.
        baseline: pooled calibration metric of the plain model (SDPA).
        noise_floor: the largest |identity arm - baseline| over the searched layers.
    """

    scores: HeadScores
    selected: HeadSet
    baseline: float
    noise_floor: float

    def save(self, path: str | Path, *, csv: bool = True) -> list[Path]:
        """Write the scores (every other field is a column of them); returns the files."""
        written = [self.scores.save(path, csv=csv)]
        return [*written, csv_path(path)] if csv else written

    @classmethod
    def load(cls, path: str | Path) -> HeadSearch:
        """Read a saved search back: equal to the one saved."""
        scores = HeadScores.load(path)
        first = scores.data.iloc[0]
        return cls(
            scores, selected_heads(scores), float(first["baseline"]), float(first["noise_floor"])
        )


def calibration_metric(model: Model, tasks: Sequence[Task], config: SearchConfig) -> float:
    """The search metric pooled over every item of `tasks`, by full forwards."""
    runs = [evaluate(model, task, config.batch_size) for task in tasks]
    return _pooled(runs, config)


def _pooled(runs: Sequence[TaskRun], config: SearchConfig) -> float:
    """The search metric's mean over every item of `runs` (the effects' per-item metrics)."""
    metric = choice_accuracy if config.metric == "accuracy" else choice_logprob
    return float(np.concatenate([metric(run) for run in runs]).mean())


def search_heads(
    model: Model,
    tasks: Sequence[Task],
    act: ActConfig | None = None,
    config: SearchConfig | None = None,
    candidates: HeadSet | None = None,
    progress: Callable[[int, int], None] | None = None,
    folder: WorkFolder | None = None,
) -> HeadSearch:
    """Score each candidate head by the calibration-metric gain ACT on it alone gives.

    Args:
        model: a loaded model (an architecture `interp.midway.decoder_from` supports).
        tasks: calibration tasks (e.g. `load_task(name, "calibration")`).
        act: beta and the sink rule used for every candidate.
        config: selection threshold, subsampling, batch size.
        candidates: heads to try; default every head in layers 2..L-2.
        progress: called as progress(done, total) over the calibration sequences, before
            the work and after each batch.
        folder: record each calibration sequence's finished arms there (`interp.work`);
            run again with the same folder to resume a stopped search. A folder of
            another search (model, configs, tasks or candidates) is refused.

    Example:
        >>> from interp.tasks import load_task
        >>> from interp.tiny_models import tiny_llama
        >>> task = load_task("sentiment", "calibration").subsample(4)
        >>> found = search_heads(tiny_llama(), [task], candidates=HeadSet(["L1H0", "L2H3"]))
        >>> found.scores.data["label"].tolist()
        ['L1H0', 'L2H3']
    """
    act = act or ActConfig()
    config = config or SearchConfig()
    pool = list(candidates if candidates is not None else act_candidates(model.geometry))
    if not tasks or not pool:
        raise InputError("The ACT head search needs at least one task and one candidate head.")
    for head in pool:
        model.geometry.check(head)
    if config.max_heads is not None and config.max_heads < len(pool):
        keep = np.random.default_rng(config.seed).choice(len(pool), config.max_heads, False)
        pool = [pool[i] for i in sorted(keep)]
    plans = [plan_choices(model, task) for task in tasks]
    provenance = Provenance(
        **model.provenance_fields(),
        analyzer=ANALYZER,
        config={**config.to_dict(), "act": act.to_dict()},
        inputs_hash=hash_inputs([[t.name, t.prefix, t.items] for t in tasks]),
        n_inputs=sum(len(t.items) for t in tasks),
    )
    log = open_log(folder, {**run_identity(provenance), "candidates": HeadSet(pool).labels})
    arms = _run_arms(model, _Sequences(plans), HeadSet(pool), act, config, log, progress)

    baseline = _pooled(_task_runs(tasks, plans, arms.plain), config)
    identity = {
        layer: _pooled(_task_runs(tasks, plans, scores), config)
        for layer, scores in arms.identity.items()
    }
    floor = max(abs(value - baseline) for value in identity.values())
    values = []
    for head in pool:
        scores = {**arms.identity[head.layer], **arms.edited.get(head, {})}
        values.append(_pooled(_task_runs(tasks, plans, scores), config))
    base = np.array([identity[h.layer] for h in pool])
    gain = np.array(values) - base
    selected = gain > max(config.min_gain, floor)
    frame = pd.DataFrame(
        {
            "layer": [h.layer for h in pool],
            "head": [h.head for h in pool],
            "label": [h.label for h in pool],
            "score": gain,
            "metric_value": values,
            "identity": base,
            "baseline": baseline,
            "noise_floor": floor,
            "skipped": ["" if h in arms.edited else NO_SINK for h in pool],
            "selected": selected,
        }
    )
    chosen = HeadSet(h for h, keep in zip(pool, selected, strict=True) if keep)
    return HeadSearch(HeadScores(frame, provenance), chosen, baseline, floor)


def selected_heads(scores: HeadScores) -> HeadSet:
    """The heads a saved search selected (its `selected` column)."""
    if "selected" not in scores.data.columns:
        raise InputError(
            "This head file has no 'selected' column: save a search_heads result, or pick"
            " heads yourself with HeadScores.top / .above."
        )
    return scores.above(0.5, column="selected")


# ----------------------------------------------------------------------------------------
# The batched forwards

# Per arm, the scores of the sequences it ran: {(task, sequence): log-probs of its reads}.
ArmScores = dict[tuple[int, int], list[float]]


class _Sequences:
    """Every task's distinct sequences, keyed (task, sequence), in plan order."""

    def __init__(self, plans: Sequence[ChoicePlan]) -> None:
        self.plans = plans
        self.keys = [(t, s) for t, plan in enumerate(plans) for s in range(len(plan.sequences))]
        # Per sequence, the choice token ids read from it, in plan order (see _task_runs).
        self.reads: dict[tuple[int, int], list[tuple[int, ...]]] = {key: [] for key in self.keys}
        for t, plan in enumerate(plans):
            for item in plan.reads:
                for sequence, ids in item:
                    self.reads[(t, sequence)].append(ids)

    def ids(self, key: tuple[int, int]) -> tuple[int, ...]:
        return self.plans[key[0]].sequences[key[1]]

    def tail(self, key: tuple[int, int]) -> int:
        return self.plans[key[0]].tails[key[1]]


@dataclass
class _Arms:
    plain: ArmScores  # the model without hooks (SDPA)
    identity: dict[int, ArmScores]  # per layer: explicit attention there, unedited
    edited: dict[Head, ArmScores]  # per candidate: ACT on it, only where it has sinks


def _run_arms(
    model: Model,
    sequences: _Sequences,
    pool: HeadSet,
    act: ActConfig,
    config: SearchConfig,
    log: WorkLog | None,
    progress: Callable[[int, int], None] | None,
) -> _Arms:
    """Every arm on every sequence, through the work driver: one item per sequence, in
    batches of similar length (tight padding)."""
    items = [Item(f"{t}/{s}", (t, s), len(sequences.ids((t, s)))) for t, s in sequences.keys]
    per_sequence = Work(items, log, config.batch_size).run(
        lambda keys: _batch_arms(model, sequences, keys, pool, act), progress
    )
    arms = _Arms({}, {layer: {} for layer in pool.layers}, {})
    for key, rows in zip(sequences.keys, per_sequence, strict=True):
        for row in rows:
            if row["arm"] == "plain":
                arms.plain[key] = row["reads"]
            elif row["arm"] == "identity":
                arms.identity[row["layer"]][key] = row["reads"]
            else:
                arms.edited.setdefault(Head(row["layer"], row["head"]), {})[key] = row["reads"]
    return arms


@torch.no_grad()
def _batch_arms(
    model: Model,
    sequences: _Sequences,
    keys: list[tuple[int, int]],
    pool: HeadSet,
    act: ActConfig,
) -> list[list[Row]]:
    """One batch of sequences under every arm: per sequence, a row per arm it ran.

    A row is {"arm": "plain" | "identity" | "edited", "layer", "head", "reads"}, `reads`
    the log-probs of the choices read from that sequence (see `_Sequences.reads`).
    """
    out: list[list[Row]] = [[] for _ in keys]
    cache: dict[int, Tensor] = {}  # layer -> resid_pre [batch, pos, d_model] of the batch

    def record(layer: int, x: Tensor) -> None:
        cache[layer] = x.detach()

    ids, mask, positions = left_pad([sequences.ids(k) for k in keys], _pad_id(model))
    keep = max(sequences.tail(k) for k in keys)
    with residual_hooks(model.hf, record, pool.layers):
        logits = _forward(model, mask, positions, keep, input_ids=ids)
    for row, key in enumerate(keys):
        out[row].append({"arm": "plain", "reads": _reads(sequences, key, logits[row])})
    for layer in pool.layers:
        heads = torch.tensor(pool.heads_in(layer))
        probe = _SinkProbe(layer, heads, act)
        with attention_hooks(model.hf, probe), decoder_from(model.hf, layer, layer + 1):
            _forward(model, mask, positions, 1, inputs_embeds=cache[layer])
        pairs = probe.found.nonzero().tolist()  # (batch row, position in `heads`)
        rows = torch.tensor(list(range(len(keys))) + [row for row, _ in pairs])
        # Every row through the explicit kernel (the identity arm: rows as computed), and
        # each replica row calibrates its own head: ACT of that head alone, per row.
        layer_heads = HeadSet(Head(layer, int(h)) for h in heads)
        explicit = AttentionEdit(layer_heads, unchanged_rows, renormalize=False)
        owners = [HeadSet()] * len(keys) + [HeadSet(Head(layer, int(heads[s]))) for _, s in pairs]
        with (
            applied_all(model, explicit, ACT(RowHeads(owners), act)),
            decoder_from(model.hf, layer),
        ):
            logits = _forward(
                model, mask[rows], positions[rows], keep, inputs_embeds=cache[layer][rows]
            )
        for row, key in enumerate(keys):
            reads = _reads(sequences, key, logits[row])
            out[row].append({"arm": "identity", "layer": layer, "reads": reads})
        for index, (row, slot) in enumerate(pairs, start=len(keys)):
            reads = _reads(sequences, keys[row], logits[index])
            head = int(heads[slot])
            out[row].append({"arm": "edited", "layer": layer, "head": head, "reads": reads})
    return out


def _pad_id(model: Model) -> int:
    pad = model.tokenizer.pad_token_id
    return pad if pad is not None else 0


def _forward(model: Model, mask: Tensor, positions: Tensor, keep: int, **inputs: Tensor) -> Tensor:
    """Log-softmax of the last `keep` positions, [batch, keep, vocab], float32 on the CPU."""
    device = model.device
    logits = model.hf(
        **{name: value.to(device) for name, value in inputs.items()},
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        logits_to_keep=keep,
        use_cache=False,
    ).logits
    return torch.log_softmax(logits.float(), dim=-1).cpu()


def _reads(sequences: _Sequences, key: tuple[int, int], logprobs: Tensor) -> list[float]:
    """The scores of the choices read from sequence `key`, from its log-softmax rows."""
    return [read_choice(logprobs, ids) for ids in sequences.reads[key]]


def _task_runs(tasks: Sequence[Task], plans: Sequence[ChoicePlan], arm: ArmScores) -> list[TaskRun]:
    """Each task's run from an arm's per-sequence scores (read back in plan order)."""
    runs = []
    for t, (task, plan) in enumerate(zip(tasks, plans, strict=True)):
        taken = {s: iter(arm[(t, s)]) for s in range(len(plan.sequences))}
        scores = [np.array([next(taken[seq]) for seq, _ in item]) for item in plan.reads]
        answers = np.array([item.answer for item in task.items])
        predictions = np.array([int(np.argmax(s)) for s in scores])
        runs.append(TaskRun(task.name, scores, answers, predictions))
    return runs


class _SinkProbe:
    """Attention hook: which (batch row, head) of one layer have hidden sinks (S' != {}).

    It reads the layer's rows through ACT's own two-pass sink detection (`Calibrator`), so
    prompts longer than one block of explicit attention are probed exactly, and edits nothing.
    """

    def __init__(self, layer: int, heads: Tensor, config: ActConfig) -> None:
        self.layer, self.heads = layer, heads
        self.calibrator = Calibrator(config)

    def wants(self, layer: int, n_queries: int) -> bool:
        return layer == self.layer

    def needs_prepass(self, layer: int, n_queries: int, n_keys: int) -> bool:
        return self.calibrator.needs_prepass(layer, n_queries, n_keys)

    def prepare(self, rows: AttentionRows) -> None:
        self.calibrator.prepare(rows, self.heads.to(rows.probs.device))

    def __call__(self, rows: AttentionRows) -> None:
        return None

    @property
    def found(self) -> Tensor:
        """[batch, head] True where the head has a hidden sink in that row's prompt."""
        return self.calibrator.carried[self.layer].any(-1).cpu()
