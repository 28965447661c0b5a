"""Measured effects of an intervention on tasks: baseline vs intervened accuracy, per task.

`measure(model, tasks, intervention)` scores every task twice on the same items, without and
with the intervention (see `interp.tasks` for the scoring rule), and returns an `Effects`:

* `table` (an `EffectTable`), one row per task: `n`, accuracy `baseline` and `intervened`,
  `difference`, a paired-bootstrap interval of the difference (`ci_low`, `ci_high`: items
  resampled with replacement, the same resample for both arms; percentile interval; seeded),
  intervals of each arm from the same resamples, and the items that changed: `improved`
  (wrong -> right) and `worsened` (right -> wrong);
* `per_item`: every item's answer, both predictions and both correctness flags.

Cost: two task evaluations (forward passes) plus n_boot x n integer draws per task.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from interp.config import Config, check_range
from interp.errors import InputError
from interp.interventions.base import Intervention
from interp.models import Model
from interp.results import EffectTable, Provenance, hash_inputs
from interp.tasks import Task, TaskRun, evaluate

ANALYZER = "effects"


@dataclass(frozen=True, kw_only=True)
class EffectsConfig(Config):
    """Bootstrap and batching parameters.

    Attributes:
        n_boot: bootstrap resamples (2000 keeps the 95% bounds within about 0.5 points).
        confidence: two-sided interval level.
        seed: seed of the resampling, so reports are reproducible.
        batch_size: sequences per forward.
    """

    n_boot: int = 2000
    confidence: float = 0.95
    seed: int = 0
    batch_size: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "n_boot", 1)
        check_range(self, "confidence", 0.0, 1.0, strict_low=True)
        check_range(self, "batch_size", 1)


@dataclass(frozen=True)
class Effects:
    """What `measure` returns: the per-task table and the per-item predictions."""

    table: EffectTable
    per_item: pd.DataFrame


def paired_bootstrap(
    baseline: np.ndarray, intervened: np.ndarray, config: EffectsConfig
) -> dict[str, float]:
    """Percentile intervals of mean(intervened - baseline) and of each arm's mean.

    Args:
        baseline: [item] 0/1 (or any score) per item without the intervention.
        intervened: [item] the same items with it.
    """
    if baseline.shape != intervened.shape or baseline.ndim != 1 or len(baseline) == 0:
        raise InputError("paired_bootstrap needs two non-empty 1-D arrays of the same length.")
    rng = np.random.default_rng(config.seed)
    draws = rng.integers(0, len(baseline), size=(config.n_boot, len(baseline)))
    tail = 100 * (1 - config.confidence) / 2
    out = {}
    for name, values in (
        ("ci", intervened - baseline),
        ("baseline", baseline),
        ("intervened", intervened),
    ):
        low, high = np.percentile(values[draws].mean(axis=1), [tail, 100 - tail])
        out[f"{name}_low"], out[f"{name}_high"] = float(low), float(high)
    return out


def effect_row(base: TaskRun, edited: TaskRun, config: EffectsConfig) -> dict[str, object]:
    """One table row from two runs of the same task."""
    before, after = base.correct.astype(float), edited.correct.astype(float)
    return {
        "task": base.task,
        "n": len(before),
        "baseline": before.mean(),
        "intervened": after.mean(),
        "difference": after.mean() - before.mean(),
        **paired_bootstrap(before, after, config),
        "improved": int(((after == 1) & (before == 0)).sum()),
        "worsened": int(((after == 0) & (before == 1)).sum()),
    }


def measure(
    model: Model,
    tasks: Sequence[Task],
    intervention: Intervention,
    config: EffectsConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Effects:
    """Score `tasks` without and with `intervention`; see the module docstring.

    Example:
        >>> from interp.heads import HeadSet
        >>> from interp.interventions import HeadScale
        >>> from interp.tasks import load_task
        >>> from tests.tiny import tiny_llama
        >>> task = load_task("sentiment").subsample(4)
        >>> effects = measure(tiny_llama(), [task], HeadScale(HeadSet(["L1H0"]), alpha=0.0))
        >>> effects.table.data[["task", "n"]].values.tolist()
        [['sentiment', 4]]
    """
    config = config or EffectsConfig()
    if not tasks:
        raise InputError("measure needs at least one task.")
    rows, items = [], []
    for done, task in enumerate(tasks, start=1):
        base = evaluate(model, task, config.batch_size)
        with intervention.applied(model):
            edited = evaluate(model, task, config.batch_size)
        rows.append(effect_row(base, edited, config))
        items.append(
            pd.DataFrame(
                {
                    "task": task.name,
                    "item": np.arange(len(task.items)),
                    "answer": base.answers,
                    "baseline_prediction": base.predictions,
                    "intervened_prediction": edited.predictions,
                    "baseline_correct": base.correct,
                    "intervened_correct": edited.correct,
                }
            )
        )
        if progress:
            progress(done, len(tasks))
    provenance = Provenance(
        model=model.spec,
        weights_hash=model.weights_hash,
        analyzer=ANALYZER,
        config={**config.to_dict(), "intervention": repr(intervention)},
        inputs_hash=hash_inputs([[t.name, t.prefix, t.items] for t in tasks]),
        n_inputs=sum(len(t.items) for t in tasks),
    )
    return Effects(EffectTable(pd.DataFrame(rows), provenance), pd.concat(items, ignore_index=True))
