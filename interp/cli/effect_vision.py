"""`interp effect vhr` and `interp effect var`: VHR and VAR on image tasks, via interp.effects.

Both score multiple-choice tasks whose items have images (`--task`, `interp.tasks`; e.g.
POPE-style yes/no questions) and caption tasks (`--captions`, `interp.captions`: CHAIR on
greedy captions) without and with the intervention, and write what `interp effect act`
writes: the effects table with 95% intervals, the per-item table, figures, a manifest.
Several `--alpha` (VHR) or `--p` (VAR) values run a sweep: every effect per value, in a
`parameter` column, and a sweep figure of the differences with their intervals.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from interp.cli.common import distinct_sweep, require_vision_model
from interp.cli.effect import report_effects
from interp.cli.options import Fields, Run, command
from interp.effects import EffectsConfig
from interp.interventions.var import VarConfig
from interp.interventions.vhr import VhrConfig

if TYPE_CHECKING:
    from interp.interventions.base import Intervention

TaskOption = typer.Option(
    "--task",
    "-t",
    help="Task folder (its test split) or .jsonl file of items with an 'image'; repeatable.",
)
CaptionsOption = typer.Option(
    "--captions",
    "-c",
    help="Caption task folder (task.json with the object vocabulary, test.jsonl of prompt,"
    " image, objects): CHAIR of greedy captions; repeatable.",
)
ItemsOption = typer.Option(help="Items per task, a seeded random subset (all: 0).")
MetricOption = typer.Option(
    help="Per-item metric: 'accuracy' (the answer is the top choice) or 'log_prob' (the"
    " answer's log-probability over the choices)."
)
BatchOption = typer.Option(help="Prompts per forward.")
# The batch is the command's (default 8, for images); the swept value is the command's.
Intervals = Annotated[EffectsConfig, Fields(skip=("batch_size",))]
Tasks = Annotated[list[str] | None, TaskOption]
Captions = Annotated[list[str] | None, CaptionsOption]
Metric = Annotated[Literal["accuracy", "log_prob"], MetricOption]


@command("effect vhr", folder="vhr", resumable=True)
def effect_vhr(
    run: Run,
    config: Annotated[VhrConfig, Fields(skip=("alpha",))],
    effects: Intervals,
    task: Tasks = None,
    captions: Captions = None,
    alpha: Annotated[
        list[float] | None,
        typer.Option(help="Factor on the chosen heads' outputs (VHR: 2); repeat for a sweep."),
    ] = None,
    items: Annotated[int, ItemsOption] = 0,
    metric: Metric = "accuracy",
    batch_size: Annotated[int, BatchOption] = 8,
) -> None:
    """Vision-aware head reinforcement (He et al. 2025): its effect on image tasks.

    Heads are chosen per prompt by VHD at the last position of each scored sequence
    (docs/methods.md §10).
    """
    from interp.interventions.vhr import VHR

    values = distinct_sweep(alpha, "--alpha", 2.0)
    arms = [VHR(dataclasses.replace(config, alpha=value)) for value in values]
    effects = dataclasses.replace(effects, batch_size=batch_size)
    _measure(run, "VHR alpha", "alpha", arms, (task or [], captions or []), items, metric, effects)


@command("effect var", folder="var", resumable=True)
def effect_var(
    run: Run,
    config: Annotated[VarConfig, Fields(skip=("p",))],
    effects: Intervals,
    task: Tasks = None,
    captions: Captions = None,
    p: Annotated[
        list[float] | None,
        typer.Option("--p", help="Share of sink attention moved (paper: 0.4); repeat for a sweep."),
    ] = None,
    items: Annotated[int, ItemsOption] = 0,
    metric: Metric = "accuracy",
    batch_size: Annotated[int, BatchOption] = 8,
) -> None:
    """Visual attention redistribution (Kang et al. 2025): its effect on image tasks."""
    from interp.interventions.var import VAR

    values = distinct_sweep(p, "--p", 0.4)
    arms = [VAR(dataclasses.replace(config, p=value)) for value in values]
    effects = dataclasses.replace(effects, batch_size=batch_size)
    label = f"VAR p ({config.convention})"
    _measure(run, label, "p", arms, (task or [], captions or []), items, metric, effects)


def _measure(
    run: Run,
    label: str,
    parameter: str,
    arms: list[Intervention],
    sources: tuple[list[str], list[str]],
    items: int,
    metric: str,
    config: EffectsConfig,
) -> None:
    """Load and check the tasks and captions (`sources`), then the model; measure every
    arm, whose swept value its record names `parameter`; write and report."""
    from interp.image_effects import choice_metric, effect_figures, image_effects, load_image_tasks

    tasks, captions = sources
    inputs = load_image_tasks(tasks, captions, items, config.seed, run.name.upper())
    require_vision_model(run.model_spec, f"effect {run.name}")
    run.record.inputs([*tasks, *captions, *inputs.images])
    folder = run.folder()
    model = run.load_model()
    values = [arm.to_dict()[parameter] for arm in arms]
    with run.progress(len(inputs.tasks) + len(inputs.captions), "effects", unit="task") as update:
        effects = image_effects(
            model, inputs, arms, values, config, choice_metric(metric), update, folder
        )
    settings = [arm.to_dict() for arm in arms]
    report_effects(
        run,
        effects,
        effect_figures(effects, label, values, metric),
        tasks=tasks,
        captions=captions,
        intervention=settings[0] if len(settings) == 1 else settings,
    )
