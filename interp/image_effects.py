"""An intervention's effects on image tasks, over a sweep of one parameter (VHR, VAR).

Multiple-choice tasks whose items have images (`interp.tasks`, e.g. POPE-style yes/no
questions) and caption tasks (`interp.captions`: CHAIR of greedy captions) are scored
under the identity arm and each swept setting through `interp.effects.measure_arms`
(`measure` and `caption_effects`); `image_effects` puts both in one `Effects`, a
`parameter` column naming the setting when several are swept. `load_image_tasks` reads and
checks the tasks (every image opened) before a model loads; `effect_figures` draws bars
per task for one setting, or the sweep of differences with their intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from interp.captions import METRICS, CaptionTask, caption_effects, load_caption_task
from interp.effects import Effects, EffectsConfig, Metric, combine_effects, measure
from interp.errors import InputError
from interp.inputs import load_image
from interp.interventions.base import Intervention
from interp.models import Model
from interp.results import EffectTable, hash_inputs
from interp.tasks import Task, TaskRun, choice_accuracy, choice_logprob, image_paths, load_task
from interp.work import WorkFolder, open_log

CHOICE_METRICS: dict[str, Metric[TaskRun]] = {
    "accuracy": choice_accuracy,
    "log_prob": choice_logprob,
}


def choice_metric(name: str) -> Metric[TaskRun]:
    """The multiple-choice metric an option names ("accuracy" or "log_prob").

    Raises:
        InputError: another name.
    """
    if name not in CHOICE_METRICS:
        raise InputError(f"Unknown metric {name!r}: use 'accuracy' or 'log_prob'.")
    return CHOICE_METRICS[name]


@dataclass(frozen=True)
class ImageTasks:
    """Multiple-choice tasks with images, caption tasks, and every image file they name."""

    tasks: list[Task]
    captions: list[CaptionTask]
    images: list[str]


def load_image_tasks(
    tasks: Sequence[str], captions: Sequence[str], items: int, seed: int, method: str
) -> ImageTasks:
    """Load the tasks' test splits (`items` > 0: a seeded subset) and caption tasks, and open
    every image, so a bad file fails before the model loads.

    Raises:
        InputError: neither kind of task, a task without images, a bad image or count.
    """
    if items < 0:
        raise InputError(f"--items must be 0 (all) or more, got {items}.")
    if not tasks and not captions:
        raise InputError("Give a --task (multiple choice) or --captions (CHAIR) folder, or both.")
    loaded = [load_task(t, "test").subsample(items or None, seed) for t in tasks]
    caption_tasks = [load_caption_task(c) for c in captions]
    for task in loaded:
        if not image_paths(task):
            raise InputError(f"Task {task.name!r} has no images: {method} acts on image tasks.")
    images = sorted(
        {path for t in loaded for path in image_paths(t)}
        | {item.image for t in caption_tasks for item in t.items}
    )
    for path in images:
        load_image(path)
    return ImageTasks(loaded, caption_tasks, images)


def image_effects(
    model: Model,
    inputs: ImageTasks,
    interventions: Sequence[Intervention],
    values: Sequence[float],
    config: EffectsConfig,
    metric: Metric[TaskRun] = choice_accuracy,
    progress: Callable[[int, int], None] | None = None,
    folder: WorkFolder | None = None,
) -> Effects:
    """Every task's effects under each intervention (its swept value in `values`).

    Args:
        metric: the multiple-choice tasks' per-item metric (`choice_metric`).
        progress: progress(done, total) tasks.
        folder: record finished tasks there (`interp.work`); run again to resume.
    """
    identity = {
        **model.provenance_fields(),
        "analyzer": "image_effects",
        "config": {**config.to_dict(), "metric": metric.__name__},
        "interventions": [i.to_dict() for i in interventions],
        "inputs_hash": hash_inputs([inputs.tasks, inputs.captions, inputs.images]),
    }
    log = open_log(folder, identity)
    total = len(inputs.tasks) + len(inputs.captions)

    def tasks_done(done: int, _: int) -> None:
        if progress:
            progress(done, total)

    arms, parts = list(interventions), []
    if inputs.tasks:
        parts.append(
            measure(
                model, inputs.tasks, arms, config, tasks_done, metric, values=values, folder=log
            )
        )
    if inputs.captions:
        parts.append(
            caption_effects(model, inputs.captions, arms, config, values=values, folder=log)
        )
        tasks_done(total, total)
    return combine_effects(parts)


def effect_figures(
    effects: Effects, parameter: str, values: Sequence[float], metric: str
) -> dict[str, Any]:
    """Bars per task (and CHAIR metric) for one setting; the sweep figure for several."""
    from interp.figures import effect_sweep, effects_bars

    table, provenance = effects.table.data, effects.table.provenance
    if len(values) > 1:
        rows = table.assign(series=table.task + ": " + table.metric)
        return {"sweep": effect_sweep(rows, parameter, f"{parameter} sweep: difference (95% CI)")}
    title = f"{parameter} {values[0]:g}"
    captioned = table.metric.isin([name for name, _ in METRICS])
    figures = {}
    if (~captioned).any():
        figures["effects"] = effects_bars(
            EffectTable(table[~captioned], provenance), f"{title}: {metric}"
        )
        if metric != "accuracy":
            figures["effects"].update_yaxes(title=metric, range=None, autorange=True)
    if captioned.any():
        rows = table[captioned].assign(task=table.task + ": " + table.metric)
        figures["chair"] = effects_bars(
            EffectTable(rows, provenance), f"{title}: CHAIR per caption"
        )
        figures["chair"].update_yaxes(
            title="per caption (chair_s, hallucinated: lower is better)", range=None, autorange=True
        )
    return figures
