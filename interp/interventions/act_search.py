"""ACT head search: calibrate one head at a time and keep the heads that help.

Yu et al. 2024 search, on a calibration set, which (layer, head) to calibrate; their code
ships the resulting lists but not the selection rule (docs/methods.md §5). The toolkit's rule:
for each candidate head (default: every head in layers 2..L-2), apply ACT to that head
alone, score the calibration tasks, and keep the heads whose pooled calibration metric beats
the baseline by more than `min_gain`. The metric is accuracy (the paper's); on the small
calibration sets a CPU allows, one head rarely flips an item, so `metric="log_prob"` (mean
log-probability of the right choice, normalised over the choices) is a continuous option.
The result is a `HeadScores` (score = metric change, plus `metric_value` and `selected`
columns) and the selected `HeadSet`.

Cost: (1 + candidates) evaluations of the calibration items, each one forward per item (see
`interp.tasks`); only the candidate's layer computes explicit attention. `max_heads` and
`Task.subsample` cut it down for CPU runs, as the paper's ≈ 7.45K prompts x L·H heads do not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from interp.config import Config, check_range
from interp.errors import InputError
from interp.heads import HeadSet
from interp.interventions.act import ACT, ActConfig, act_candidates
from interp.models import Model
from interp.results import HeadScores, Provenance, csv_path, hash_inputs
from interp.tasks import Task, evaluate

ANALYZER = "act_search"


@dataclass(frozen=True, kw_only=True)
class SearchConfig(Config):
    """Head-search parameters.

    Attributes:
        metric: "accuracy" (paper) or "log_prob" (mean normalised log-prob of the answer).
        min_gain: keep heads whose metric change is strictly above this (0: any gain).
        max_heads: search a seeded random subset of this many candidates (None: all).
        seed: seed of that subset.
        batch_size: sequences per forward.
    """

    metric: Literal["accuracy", "log_prob"] = "accuracy"
    min_gain: float = 0.0
    max_heads: int | None = None
    seed: int = 0
    batch_size: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_heads is not None:
            check_range(self, "max_heads", 1)
        check_range(self, "batch_size", 1)


@dataclass(frozen=True)
class HeadSearch:
    """What `search_heads` returns.

    Attributes:
        scores: one row per searched head: score (metric change), metric_value, selected.
        selected: heads with score > min_gain, for `ACT(selected)`.
        baseline: pooled calibration metric without ACT.
    """

    scores: HeadScores
    selected: HeadSet
    baseline: float

    def save(self, path: str | Path, *, csv: bool = True) -> list[Path]:
        """Write the scores (every other field is a column of them); returns the files."""
        written = [self.scores.save(path, csv=csv)]
        return [*written, csv_path(path)] if csv else written

    @classmethod
    def load(cls, path: str | Path) -> HeadSearch:
        """Read a saved search back: equal to the one saved."""
        scores = HeadScores.load(path)
        return cls(scores, selected_heads(scores), float(scores.data["baseline"].iloc[0]))


def calibration_metric(model: Model, tasks: Sequence[Task], config: SearchConfig) -> float:
    """The search metric pooled over every item of `tasks`."""
    runs = [evaluate(model, task, config.batch_size) for task in tasks]
    if config.metric == "accuracy":
        return float(np.concatenate([run.correct for run in runs]).mean())
    return float(np.concatenate([run.answer_logprob for run in runs]).mean())


def search_heads(
    model: Model,
    tasks: Sequence[Task],
    act: ActConfig | None = None,
    config: SearchConfig | None = None,
    candidates: HeadSet | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> HeadSearch:
    """Score each candidate head by the calibration-metric change ACT on it alone gives.

    Args:
        model: a loaded model.
        tasks: calibration tasks (e.g. `load_task(name, "calibration").subsample(16)`).
        act: beta and the sink rule used for every candidate.
        config: selection threshold, subsampling, batch size.
        candidates: heads to try; default every head in layers 2..L-2.
        progress: called as progress(done, total) after the baseline and each head.
    """
    act = act or ActConfig()
    config = config or SearchConfig()
    pool = list(candidates if candidates is not None else act_candidates(model.geometry))
    if not tasks or not pool:
        raise InputError("The ACT head search needs at least one task and one candidate head.")
    if config.max_heads is not None and config.max_heads < len(pool):
        keep = np.random.default_rng(config.seed).choice(len(pool), config.max_heads, False)
        pool = [pool[i] for i in sorted(keep)]
    total = len(pool) + 1
    baseline = calibration_metric(model, tasks, config)
    if progress:
        progress(1, total)
    values = []
    for done, head in enumerate(pool, start=2):
        with ACT(HeadSet([head]), act).applied(model):
            values.append(calibration_metric(model, tasks, config))
        if progress:
            progress(done, total)
    gain = np.array(values) - baseline
    selected = gain > config.min_gain
    frame = pd.DataFrame(
        {
            "layer": [h.layer for h in pool],
            "head": [h.head for h in pool],
            "label": [h.label for h in pool],
            "score": gain,
            "metric_value": values,
            "baseline": baseline,
            "selected": selected,
        }
    )
    provenance = Provenance(
        model=model.spec,
        weights_hash=model.weights_hash,
        analyzer=ANALYZER,
        config={**config.to_dict(), "act": act.to_dict()},
        inputs_hash=hash_inputs([[t.name, t.prefix, t.items] for t in tasks]),
        n_inputs=sum(len(t.items) for t in tasks),
    )
    chosen = HeadSet(h for h, keep in zip(pool, selected, strict=True) if keep)
    return HeadSearch(HeadScores(frame, provenance), chosen, baseline)


def selected_heads(scores: HeadScores) -> HeadSet:
    """The heads a saved search selected (its `selected` column)."""
    if "selected" not in scores.data.columns:
        raise InputError(
            "This head file has no 'selected' column: save a search_heads result, or pick"
            " heads yourself with HeadScores.top / .above."
        )
    return scores.above(0.5, column="selected")
