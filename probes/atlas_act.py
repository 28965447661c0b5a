"""The head atlas's ACT column: each head's calibration gain from the ACT head search.

`act` runs `interp.interventions.act_search.search_heads` (the search `interp effect act`
runs first) on the calibration splits of the default ACT tasks, with ACT's and the search's
default settings, and gives each head of the model:

- `gain`: the pooled calibration metric with ACT on that head alone, minus its identity arm
  (the search's `score`); NaN for a head the search did not run: one without a hidden sink
  on any calibration prompt (marked by `no_hidden_sink`), or one outside the candidates
  (layers 0, 1 and L-1: `interp.interventions.act.act_layers`);
- `no_hidden_sink`: the search skipped the head, having found no hidden sink for it;
- `selected`: its gain beats the search's noise floor (the heads ACT would act on).

The search records each calibration sequence in `folder` (`interp.work`), so a stopped
atlas resumes it there. Quick mode takes `QUICK_ITEMS` calibration items per task (seeded
by the atlas's seed) instead of all of them, and scores them by the log-probability of the
right choice, the search's continuous metric for small calibration sets: accuracy on a few
items moves in steps of 1/items and leaves most gains at exactly 0. Cost and memory: the
search's (`interp.interventions.act_search`), which grows with the calibration items and
the candidate heads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from interp.atlas_part import AtlasPart, AtlasSettings, method_heads, require_midway_start
from interp.heads import HeadGeometry
from interp.interventions.act import ActConfig
from interp.interventions.act_search import (
    DEFAULT_TASKS,
    NO_SINK,
    HeadSearch,
    SearchConfig,
    search_heads,
)
from interp.models import Model
from interp.tasks import Task, load_task
from interp.work import StageProgress, for_stage

METHOD = "act"
QUICK_ITEMS = 4


def act(
    model: Model, settings: AtlasSettings, folder: Path | None, progress: StageProgress | None
) -> AtlasPart:
    """Every head's ACT calibration gain, or NaN and `no_hidden_sink` where it has none.

    Example:
        >>> from interp.atlas_part import AtlasSettings
        >>> from interp.models import load_model
        >>> part = act(load_model(), AtlasSettings(quick=True), None, None)  # doctest: +SKIP
        >>> part.heads.columns.tolist()  # doctest: +SKIP
        ['layer', 'head', 'act_gain', 'act_no_hidden_sink', 'act_selected']
    """
    require_midway_start(model)
    tasks = calibration_tasks(settings)
    config, search = ActConfig(), search_config(settings)
    report = for_stage(progress, "act head search")
    found = search_heads(model, tasks, config, search, progress=report, folder=folder)
    return AtlasPart(
        act_columns(found, model.geometry),
        {"head_scores": found.scores.data},
        {
            "tasks": {task.name: len(task.items) for task in tasks},
            "act": config.to_dict(),
            "search": search.to_dict(),
            "baseline": found.baseline,
            "noise_floor": found.noise_floor,
        },
    )


def calibration_tasks(settings: AtlasSettings) -> list[Task]:
    """The calibration splits of the default ACT tasks; in quick mode a seeded subset."""
    items = QUICK_ITEMS if settings.quick else None
    return [
        load_task(name, "calibration").subsample(items, settings.seed) for name in DEFAULT_TASKS
    ]


def search_config(settings: AtlasSettings) -> SearchConfig:
    """The search's defaults, seeded; the log-probability metric in quick mode."""
    return SearchConfig(metric="log_prob" if settings.quick else "accuracy", seed=settings.seed)


def act_columns(found: HeadSearch, geometry: HeadGeometry) -> pd.DataFrame:
    """`AtlasPart.heads` of a search: gain (NaN where not run), no_hidden_sink, selected."""
    scores = found.scores.data
    skipped = scores["skipped"] == NO_SINK
    columns = scores[["layer", "head"]].assign(
        gain=np.where(skipped, np.nan, scores["score"]),
        no_hidden_sink=skipped,
        selected=scores["selected"],
    )
    heads = method_heads(geometry, METHOD, columns)
    flags = [f"{METHOD}_no_hidden_sink", f"{METHOD}_selected"]
    heads[flags] = heads[flags].eq(True)  # False for the heads the search did not try
    return heads
