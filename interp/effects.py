"""Measured effects of an intervention: paired per-item scores, differences, intervals.

Every effect the toolkit reports comes from here. A *metric* scores each item of one run
(a `Metric`: `metric(run) -> [item]` floats, higher is better, named by its `__name__`):
`interp.tasks.choice_accuracy` and `choice_logprob` for multiple-choice tasks,
`probes.niah.answer_match_scores` and `rouge1_recall_scores` for generated answers. The
same items are scored without and with the intervention, and `compare` pairs the two
arrays into one `EffectTable` row: `n`, the means `baseline` and `intervened`,
`difference`, its interval (`ci_low`, `ci_high`), intervals of each arm, and the items that
moved: `improved` (intervened > baseline) and `worsened`, and `warnings`: why the row
should be read with care ('; '-joined, empty when none): an interval from fewer than
`MIN_ITEMS` items or from one seed, a baseline accuracy at or below chance (the model does
not do the task, so its change says little), or an intervention that moved no item's score.

Intervals: `scipy.stats.bootstrap` over items, seeded, BCa by default (`method`
"percentile" is the option). The difference's interval is the paired bootstrap: items are
resampled, and both arms' scores move with their item (a one-sample bootstrap of the
per-item differences). Each arm's interval uses the same seed, hence the same resamples.
Degenerate case: when every value is equal (e.g. an identity intervention: all differences
0), every resample has the same mean, BCa is undefined (scipy returns NaN with a warning),
and the interval reported is the point [value, value]; the `constant` flag names it.

`measure_arms` is the one measurement every paired effect goes through: items (through the
work driver `interp.work`, resumable), the identity arm and one or more intervention arms
(a sweep; an arm may be built per batch, `interp.interventions.base.PerItem`), one
evaluation callable per batch; one per-item and one summary layout. Like with like: the
baseline arm runs `intervention.identity()`, the same hooks and kernels changing nothing,
so an identity intervention gives exactly zero on every item. `measure(model, tasks,
intervention)` is it for multiple-choice tasks, with or without images: `Effects`, the
table and `per_item` (every item's answer, predictions and both scores).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal, Protocol, TypeVar

import numpy as np
import pandas as pd
from scipy import stats

from interp.config import Config, check_range
from interp.effect_provenance import arms_provenance, image_digests
from interp.errors import InputError
from interp.interventions.base import Arm, Intervention, for_items
from interp.models import Model
from interp.results import Bundle, EffectTable, ItemTable, hash_inputs
from interp.tasks import Item as TaskItem
from interp.tasks import Task, choice_accuracy, evaluate, image_paths
from interp.work import Item, Row, Work, WorkFolder, open_log

ANALYZER = "effects"
MIN_ITEMS = 10  # fewer paired items: the bootstrap interval is too rough to trust
RunT_contra = TypeVar("RunT_contra", contravariant=True)
T = TypeVar("T")


class Metric(Protocol[RunT_contra]):
    """Scores every item of one run: [item] floats, higher is better, named by `__name__`."""

    __name__: str

    def __call__(self, run: RunT_contra, /) -> np.ndarray: ...


@dataclass(frozen=True, kw_only=True)
class EffectsConfig(Config):
    """Bootstrap and batching parameters.

    Attributes:
        n_boot: bootstrap resamples (2000 keeps the 95% bounds within about 0.5 points).
        confidence: two-sided interval level.
        method: "BCa" (bias-corrected and accelerated; scipy's default) or "percentile".
        seed: seed of the resampling, so reports are reproducible.
        batch_size: sequences per forward.
    """

    n_boot: int = 2000
    confidence: float = 0.95
    method: Literal["BCa", "percentile"] = "BCa"
    seed: int = 0
    batch_size: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "n_boot", 1)
        check_range(self, "seed", 0)
        check_range(self, "confidence", 0.0, 1.0, strict_low=True)
        check_range(self, "batch_size", 1)


@dataclass(frozen=True)
class Effects(Bundle):
    """What `measure` returns: the per-task table and the per-item scores."""

    FILES: ClassVar[dict[str, str]] = {"table": "effects", "per_item": "per_item"}

    table: EffectTable
    per_item: ItemTable


def interval(values: np.ndarray, config: EffectsConfig) -> tuple[float, float]:
    """Bootstrap interval of mean(values); [v, v] when every value is v (see module doc)."""
    if values.ndim != 1 or len(values) == 0:
        raise InputError("A bootstrap interval needs a non-empty 1-D array of scores.")
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    result = stats.bootstrap(
        (values,),
        np.mean,
        n_resamples=config.n_boot,
        confidence_level=config.confidence,
        method=config.method,
        random_state=np.random.default_rng(config.seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def paired_bootstrap(
    baseline: np.ndarray, intervened: np.ndarray, config: EffectsConfig
) -> dict[str, float | bool]:
    """Intervals of mean(intervened - baseline) (paired) and of each arm's mean.

    Args:
        baseline: [item] scores without the intervention.
        intervened: [item] the same items' scores with it.

    Returns:
        ci_low/ci_high (difference), baseline_low/high, intervened_low/high, and
        `constant`: True when every paired difference is equal (a point interval).
    """
    if baseline.shape != intervened.shape or baseline.ndim != 1 or len(baseline) == 0:
        raise InputError("paired_bootstrap needs two non-empty 1-D arrays of the same length.")
    difference = intervened - baseline
    out: dict[str, float | bool] = {}
    for name, values in (("ci", difference), ("baseline", baseline), ("intervened", intervened)):
        out[f"{name}_low"], out[f"{name}_high"] = interval(values.astype(float), config)
    out["constant"] = bool(np.all(difference == difference[0]))
    return out


def caveats(
    *,
    n: int | None = None,
    seeds: int | None = None,
    baseline: float | None = None,
    chance: float | None = None,
    changed: bool = True,
) -> str:
    """Why a reported number should be read with care, '; '-joined ('' when nothing).

    Args:
        n: items the interval rests on.
        seeds: seeds a mean or interval rests on.
        baseline, chance: the unedited model's accuracy and the task's chance level.
        changed: whether the intervention moved anything.
    """
    notes = []
    if n is not None and n < MIN_ITEMS:
        notes.append(f"interval from {n} items (fewer than {MIN_ITEMS})")
    if seeds is not None and seeds < 2:
        notes.append("one seed: no spread over seeds")
    if baseline is not None and chance is not None and baseline <= chance:
        notes.append(f"baseline accuracy {baseline:.3f} is at or below chance ({chance:.3f})")
    if not changed:
        notes.append("the intervention changed no item's score")
    return "; ".join(notes)


def compare(
    baseline: np.ndarray,
    intervened: np.ndarray,
    metric: str,
    config: EffectsConfig,
    *,
    lower_is_better: bool = False,
    chance: float | None = None,
    seeds: int | None = None,
) -> dict[str, object]:
    """One effect row from paired per-item scores (any metric, any task).

    `lower_is_better` (e.g. CHAIR's hallucination counts) turns which items count as
    `improved` (the score went down) and `worsened`; it is kept in the row. `chance` (the
    metric's chance level, for accuracies) and `seeds` (draws averaged into `intervened`)
    feed the row's `warnings` (see `caveats`).
    """
    before, after = np.asarray(baseline, float), np.asarray(intervened, float)
    intervals = paired_bootstrap(before, after, config)
    better, worse = (
        (after < before, after > before) if lower_is_better else (after > before, after < before)
    )
    warnings = caveats(
        n=len(before),
        seeds=seeds,
        baseline=before.mean(),
        chance=chance,
        changed=bool((after != before).any()),
    )
    return {
        "metric": metric,
        "n": len(before),
        "baseline": before.mean(),
        "intervened": after.mean(),
        "difference": after.mean() - before.mean(),
        **intervals,
        "improved": int(better.sum()),
        "worsened": int(worse.sum()),
        "lower_is_better": lower_is_better,
        "warnings": warnings,
    }


Evaluate = Callable[[list[T], Intervention], Sequence[Mapping[str, Any]]]


@dataclass(frozen=True)
class Score:
    """A per-item metric `evaluate` returns, and how `compare` reads it.

    Attributes:
        name: the metric, as the summary names it.
        field: the per-item field holding it (default: `name`).
        lower_is_better: e.g. hallucination counts (see `interp.effects.compare`).
        chance: the metric's chance level (accuracies), for the baseline caveat.
    """

    name: str
    field: str | None = None
    lower_is_better: bool = False
    chance: float | None = None


@dataclass(frozen=True)
class Arms:
    """What `measure_arms` returns: the per-item and the summary table (see measure_arms)."""

    per_item: pd.DataFrame
    summary: pd.DataFrame


def measure_arms(
    items: Sequence[Item[T]],
    interventions: Sequence[Arm],
    evaluate: Evaluate[T],
    scores: Sequence[Score],
    config: EffectsConfig,
    *,
    values: Sequence[object] | None = None,
    batch_size: int | None = None,
    similar: float | None = None,
    prepare: Callable[[list[T]], None] | None = None,
    folder: WorkFolder | None = None,
    identity: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    stack: Callable[[list[Intervention]], Intervention] | None = None,
) -> Arms:
    """Run every arm over `items` in work batches and pair each intervention with its identity.

    Args:
        items: work items (`interp.work.Item`: stable key, value for `evaluate`, length).
        interventions: the intervened arms (one, or one per swept value); an arm built per
            batch (`interp.interventions.base.PerItem`) is evaluated as `for_items(batch)`.
        evaluate: (batch values, the arm's intervention) -> one field mapping per value.
        scores: the fields compared between arms (none: the caller pairs the arms itself).
        config: bootstrap settings.
        values: each intervention's swept value (the `parameter` column).
        batch_size: items per `evaluate` call (default `config.batch_size`); `similar`: the
            length ratio a batch may span (`interp.work.batches`).
        prepare: called once with the values of the batches still to run, before them.
        folder: record finished batches there, to resume; `identity` names the run.
        progress: progress(done, total) items, before the work and after each batch.
        stack: arms' interventions -> one whose rows are theirs in turn (per-row edits): all
            arms, identities first, then run as one `evaluate` of the batch repeated per arm.

    Raises:
        InputError: no items or no interventions, or `values` of another length.
    """
    if not items or not interventions:
        raise InputError("measure_arms needs at least one item and one intervention.")
    if values is not None and len(values) != len(interventions):
        raise InputError(f"{len(values)} swept values for {len(interventions)} interventions.")
    identities: list[Arm] = [intervention.identity() for intervention in interventions]
    baselines = [arm for n, arm in enumerate(identities) if arm not in identities[:n]]

    def process(batch: list[T]) -> list[list[dict[str, Any]]]:
        edits = [for_items(arm, batch) for arm in [*baselines, *interventions]]
        if stack is None:
            outs = [list(evaluate(batch, edit)) for edit in edits]
        else:
            flat = list(evaluate(batch * len(edits), stack(edits)))
            outs = [flat[i * len(batch) : (i + 1) * len(batch)] for i in range(len(edits))]
        base = outs[: len(baselines)]
        rows: list[list[dict[str, Any]]] = [[] for _ in batch]
        for intervention, after in zip(interventions, outs[len(baselines) :], strict=True):
            before = base[baselines.index(intervention.identity())]
            for out, b, a in zip(rows, before, after, strict=True):
                out.append({"baseline": dict(b), "intervened": dict(a)})
        return rows

    log = open_log(folder, dict(identity or {}))
    work = Work(list(items), log, batch_size or config.batch_size, similar)
    if prepare is not None:
        prepare(work.todo)
    per_item = work.run(process, progress)
    return _tables(per_item, scores, config, values)


def _tables(
    per_item: list[list[dict[str, Any]]],
    scores: Sequence[Score],
    config: EffectsConfig,
    values: Sequence[object] | None,
) -> Arms:
    """The per-item and summary layouts, setting-major, from each item's per-setting rows."""
    tagged = values is not None and len({repr(v) for v in values}) > 1
    items, rows = [], []
    for setting in range(len(per_item[0])):
        arms = [item[setting] for item in per_item]
        table = pd.DataFrame(
            {"item": range(len(arms))}
            | {
                f"{arm}_{field}": [a[arm][field] for a in arms]
                for field in arms[0]["baseline"]
                for arm in ("baseline", "intervened")
            }
        )
        summary = pd.DataFrame(
            [
                compare(
                    table[f"baseline_{score.field or score.name}"].to_numpy(float),
                    table[f"intervened_{score.field or score.name}"].to_numpy(float),
                    score.name,
                    config,
                    lower_is_better=score.lower_is_better,
                    chance=score.chance,
                )
                for score in scores
            ]
        )
        if tagged:
            assert values is not None
            table = table.assign(parameter=values[setting])
            summary = summary.assign(parameter=values[setting])
        items.append(table)
        rows.append(summary)
    return Arms(pd.concat(items, ignore_index=True), pd.concat(rows, ignore_index=True))


def measure(
    model: Model,
    tasks: Sequence[Task],
    intervention: Intervention | Sequence[Intervention],
    config: EffectsConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    metric: Metric = choice_accuracy,
    *,
    values: Sequence[object] | None = None,
    folder: WorkFolder | None = None,
) -> Effects:
    """Score `tasks` without and with `intervention` by `metric`; see the module docstring.

    A list of interventions with their `values` is a sweep (a `parameter` column). A task is
    one work batch (its floats never depend on a resume); `folder` records finished tasks.

    Example:
        >>> from interp.interventions import HeadScale
        >>> from interp.tasks import load_task
        >>> from interp.tiny_models import tiny_llama
        >>> task = load_task("sentiment").subsample(4)
        >>> effects = measure(tiny_llama(), [task], HeadScale("L1H0", alpha=0.0))
        >>> effects.table.data[["task", "n"]].values.tolist()
        [['sentiment', 4]]
    """
    config = config or EffectsConfig()
    if not tasks:
        raise InputError("measure needs at least one task.")
    arms, provenance = arms_provenance(
        model,
        ANALYZER,
        intervention,
        {**config.to_dict(), "metric": metric.__name__},
        [[t.name, t.prefix, t.items, image_digests(image_paths(t))] for t in tasks],
        sum(len(t.items) for t in tasks),
    )
    log = open_log(folder, provenance)
    parts = []
    for t, task in enumerate(tasks):

        def scored(items: list[TaskItem], arm: Intervention, task: Task = task) -> list[Row]:
            with arm.applied(model):
                run = evaluate(model, replace(task, items=tuple(items)), config.batch_size)
            return [
                {"prediction": int(p), "score": float(s)}
                for p, s in zip(run.predictions, metric(run), strict=True)
            ]

        chance = task.chance if metric is choice_accuracy else None
        measured = measure_arms(
            [Item(f"choice/{t}/{task.name}/{i}", item) for i, item in enumerate(task.items)],
            arms,
            scored,
            [Score(metric.__name__, "score", chance=chance)],
            config,
            values=values,
            batch_size=len(task.items),
            folder=log,
        )
        answers = [item.answer for item in task.items]
        per_item = measured.per_item
        per_item.insert(0, "task", task.name)
        per_item.insert(2, "answer", np.tile(answers, len(per_item) // len(answers)))
        measured.summary.insert(0, "task", task.name)
        parts.append(measured)
        if progress:
            progress(t + 1, len(tasks))
    return Effects(
        EffectTable(setting_major([p.summary for p in parts]), provenance),
        ItemTable(setting_major([p.per_item for p in parts]), provenance),
    )


def setting_major(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Parts' tables as one; a sweep's rows (tagged `parameter`) ordered by setting, stably."""
    table = pd.concat(tables, ignore_index=True)
    if "parameter" not in table:
        return table
    setting = pd.factorize(table.parameter.map(repr))[0]
    return table.iloc[np.argsort(setting, kind="stable")].reset_index(drop=True)


def combine_effects(parts: Sequence[Effects]) -> Effects:
    """Several measurements (multiple-choice and caption tasks) as one result, setting-major.

    The provenance is the first part's, with every part's config in `config["runs"]`, their
    inputs hashed together and `n_inputs` the items scored over all parts.
    """
    if len(parts) == 1:
        return parts[0]
    provenances = [part.table.provenance for part in parts]
    provenance = replace(
        provenances[0],
        config={"runs": [p.config for p in provenances]},
        inputs_hash=hash_inputs([p.inputs_hash for p in provenances]),
        n_inputs=sum(p.n_inputs for p in provenances),
    )
    return Effects(
        EffectTable(setting_major([part.table.data for part in parts]), provenance),
        ItemTable(setting_major([part.per_item.data for part in parts]), provenance),
    )
