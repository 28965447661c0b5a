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

`measure(model, tasks, intervention)` does this for multiple-choice tasks, with or without
images (items with an `image` go through the model's processor, `interp.tasks`), and returns
`Effects`: the table and `per_item`, every item's answer, predictions and both scores. Like
with like: the baseline arm runs `intervention.identity()`, the same hooks and attention
kernels changing nothing, so float rounding between a fused and an explicit kernel never
shows as an effect, and an identity intervention gives exactly zero on every item.
Cost: two task evaluations (forward passes) per task, plus n_boot resamples per interval.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar, Literal, Protocol, TypeVar

import numpy as np
import pandas as pd
from scipy import stats

from interp.config import Config, check_range
from interp.errors import InputError
from interp.interventions.base import Intervention
from interp.models import Model
from interp.results import Bundle, EffectTable, ItemTable, Provenance, hash_inputs, sha256_file
from interp.tasks import Task, choice_accuracy, evaluate, image_paths

ANALYZER = "effects"
MIN_ITEMS = 10  # fewer paired items: the bootstrap interval is too rough to trust
RunT_contra = TypeVar("RunT_contra", contravariant=True)


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


def measure(
    model: Model,
    tasks: Sequence[Task],
    intervention: Intervention,
    config: EffectsConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    metric: Metric = choice_accuracy,
) -> Effects:
    """Score `tasks` without and with `intervention` by `metric`; see the module docstring.

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
    rows, items = [], []
    for done, task in enumerate(tasks, start=1):
        with intervention.identity().applied(model):  # same kernels as the intervened arm
            base = evaluate(model, task, config.batch_size)
        with intervention.applied(model):
            edited = evaluate(model, task, config.batch_size)
        before, after = metric(base), metric(edited)
        chance = task.chance if metric is choice_accuracy else None
        row = compare(before, after, metric.__name__, config, chance=chance)
        rows.append({"task": task.name, **row})
        items.append(
            pd.DataFrame(
                {
                    "task": task.name,
                    "item": np.arange(len(task.items)),
                    "answer": base.answers,
                    "baseline_prediction": base.predictions,
                    "intervened_prediction": edited.predictions,
                    "baseline_score": before,
                    "intervened_score": after,
                }
            )
        )
        if progress:
            progress(done, len(tasks))
    provenance = Provenance(
        **model.provenance_fields(),
        analyzer=ANALYZER,
        config={
            **config.to_dict(),
            "metric": metric.__name__,
            "intervention": intervention.to_dict(),
        },
        inputs_hash=hash_inputs(
            [[t.name, t.prefix, t.items, image_digests(image_paths(t))] for t in tasks]
        ),
        n_inputs=sum(len(t.items) for t in tasks),
    )
    return Effects(
        EffectTable(pd.DataFrame(rows), provenance),
        ItemTable(pd.concat(items, ignore_index=True), provenance),
    )


def combine_effects(parts: Sequence[Effects], values: Sequence[object]) -> Effects:
    """Several measurements (multiple-choice and caption tasks, sweep settings) as one result.

    Rows keep their columns, plus `parameter` (each part's value) when the values differ. The
    provenance is the first part's, with every part's config in `config["runs"]`, their
    inputs hashed together and `n_inputs` the items scored over all parts.
    """
    if len(parts) == 1:
        return parts[0]
    tagged = len({repr(v) for v in values}) > 1

    def rows(tables: list[pd.DataFrame]) -> pd.DataFrame:
        if tagged:
            tables = [t.assign(parameter=v) for t, v in zip(tables, values, strict=True)]
        return pd.concat(tables, ignore_index=True)

    provenances = [part.table.provenance for part in parts]
    provenance = replace(
        provenances[0],
        config={"runs": [p.config for p in provenances]},
        inputs_hash=hash_inputs([p.inputs_hash for p in provenances]),
        n_inputs=sum(p.n_inputs for p in provenances),
    )
    return Effects(
        EffectTable(rows([part.table.data for part in parts]), provenance),
        ItemTable(rows([part.per_item.data for part in parts]), provenance),
    )


def image_digests(paths: Iterable[str]) -> dict[str, str]:
    """SHA-256 of each image file a task's items name, so provenance follows the pixels."""
    return {path: sha256_file(Path(path)) for path in sorted(set(paths))}
