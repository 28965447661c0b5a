"""`interp effect vhr` and `interp effect var`: VHR and VAR on image tasks, via interp.effects.

Both score multiple-choice tasks whose items have images (`--task`, `interp.tasks`; e.g.
POPE-style yes/no questions) and caption tasks (`--captions`, `interp.captions`: CHAIR on
greedy captions) without and with the intervention, and write what `interp effect act`
writes: the effects table with 95% intervals, the per-item table, figures, a manifest.
Several `--alpha` (VHR) or `--p` (VAR) values run a sweep: every effect per value, in a
`parameter` column, and a sweep figure of the differences with their intervals.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from interp.cli.common import (
    DeviceMapOption,
    DeviceOption,
    DtypeOption,
    MaxMemoryOption,
    ModelOption,
    OffloadFolderOption,
    StaticOption,
    distinct_sweep,
    load_model_or_fail,
    parse_ints,
    placement,
    progress_bar,
    require_vision_model,
    result_folder,
    start_record,
    user_errors,
)
from interp.cli.effect import report_effects

if TYPE_CHECKING:
    from interp.interventions.base import Intervention
    from interp.runs import RunRecord

# The parameter each command sweeps, as the intervention's record names it.
_PARAMETER = {"vhr": "alpha", "var": "p"}

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
BootOption = typer.Option(help="Bootstrap resamples for the intervals.")
SeedOption = typer.Option(help="Seed of subsampling and bootstrap.")
OutOption = typer.Option(
    "--out", "-o", help="Output folder. Default: results/<vhr|var>-<model>-<time>."
)


def effect_vhr(
    task: Annotated[list[str] | None, TaskOption] = None,
    captions: Annotated[list[str] | None, CaptionsOption] = None,
    model: Annotated[str | None, ModelOption] = None,
    alpha: Annotated[
        list[float] | None,
        typer.Option(help="Factor on the chosen heads' outputs (VHR: 2); repeat for a sweep."),
    ] = None,
    last_layers: Annotated[
        int, typer.Option(help="Reinforce the last this many layers (VHR: 14).")
    ] = 14,
    first_layer: Annotated[
        bool, typer.Option("--first-layer/--no-first-layer", help="Also reinforce layer 1 (VHR).")
    ] = True,
    items: Annotated[int, ItemsOption] = 0,
    metric: Annotated[str, MetricOption] = "accuracy",
    batch_size: Annotated[int, BatchOption] = 8,
    n_boot: Annotated[int, BootOption] = 2000,
    seed: Annotated[int, SeedOption] = 0,
    out: Annotated[Path | None, OutOption] = None,
    device: Annotated[str, DeviceOption] = "cpu",
    device_map: Annotated[str | None, DeviceMapOption] = None,
    max_memory: Annotated[str | None, MaxMemoryOption] = None,
    offload_folder: Annotated[Path | None, OffloadFolderOption] = None,
    dtype: Annotated[str | None, DtypeOption] = None,
    static: Annotated[bool, StaticOption] = True,
) -> None:
    """Vision-aware head reinforcement (He et al. 2025): its effect on image tasks.

    Heads are chosen per prompt by VHD at the last position of each scored sequence
    (docs/methods.md §10).
    """
    record = start_record("effect vhr", locals())
    with user_errors():
        from interp.interventions.vhr import VHR, VhrConfig

        def make(value: float) -> VHR:
            config = VhrConfig(alpha=value, last_layers=last_layers, first_layer=first_layer)
            return VHR(config)

        values = distinct_sweep(alpha, "--alpha", 2.0)
        _run(record, "vhr", "VHR alpha", [make(a) for a in values], locals())


def effect_var(
    task: Annotated[list[str] | None, TaskOption] = None,
    captions: Annotated[list[str] | None, CaptionsOption] = None,
    model: Annotated[str | None, ModelOption] = None,
    p: Annotated[
        list[float] | None,
        typer.Option("--p", help="Share of sink attention moved (paper: 0.4); repeat for a sweep."),
    ] = None,
    rho: Annotated[
        float, typer.Option("--rho", help="Least non-sink image share r_i of a row (0.5).")
    ] = 0.5,
    convention: Annotated[
        str, typer.Option(help="'paper', or 'code': p is the share kept, rho the sink share.")
    ] = "paper",
    tau: Annotated[float, typer.Option(help="Sink threshold on |x_d|/RMS(x) (VAR: 20).")] = 20.0,
    sink_dims: Annotated[
        str | None,
        typer.Option(help="Sink dimensions D_sink, comma-separated (default: every dimension)."),
    ] = None,
    min_image_share: Annotated[
        float, typer.Option(help="Rows with less attention on the image are left (0.2).")
    ] = 0.2,
    include_last_layer: Annotated[
        bool,
        typer.Option(
            "--include-last-layer/--no-include-last-layer",
            help="Also edit layer L-1, as the reference code does.",
        ),
    ] = False,
    items: Annotated[int, ItemsOption] = 0,
    metric: Annotated[str, MetricOption] = "accuracy",
    batch_size: Annotated[int, BatchOption] = 8,
    n_boot: Annotated[int, BootOption] = 2000,
    seed: Annotated[int, SeedOption] = 0,
    out: Annotated[Path | None, OutOption] = None,
    device: Annotated[str, DeviceOption] = "cpu",
    device_map: Annotated[str | None, DeviceMapOption] = None,
    max_memory: Annotated[str | None, MaxMemoryOption] = None,
    offload_folder: Annotated[Path | None, OffloadFolderOption] = None,
    dtype: Annotated[str | None, DtypeOption] = None,
    static: Annotated[bool, StaticOption] = True,
) -> None:
    """Visual attention redistribution (Kang et al. 2025): its effect on image tasks."""
    record = start_record("effect var", locals())
    with user_errors():
        from interp.interventions.var import VAR, VarConfig

        dims = parse_ints(sink_dims, minimum=0)

        def make(value: float) -> VAR:
            config = VarConfig(
                p=value,
                rho=rho,
                convention=convention,  # type: ignore[arg-type]
                tau=tau,
                sink_dims=dims,
                min_image_share=min_image_share,
                include_last_layer=include_last_layer,
            )
            return VAR(config)

        values = distinct_sweep(p, "--p", 0.4)
        _run(record, "var", f"VAR p ({convention})", [make(v) for v in values], locals())


def _run(
    record: RunRecord,
    job: str,
    parameter: str,
    interventions: list[Intervention],
    params: dict[str, Any],
) -> None:
    """Load and check the tasks, then the model; measure every setting; write and report."""
    from interp.effects import EffectsConfig
    from interp.image_effects import choice_metric, effect_figures, image_effects, load_image_tasks

    metric = choice_metric(params["metric"])
    config = EffectsConfig(
        n_boot=params["n_boot"], seed=params["seed"], batch_size=params["batch_size"]
    )
    task_args, caption_args = params["task"] or [], params["captions"] or []
    inputs = load_image_tasks(task_args, caption_args, params["items"], config.seed, job.upper())
    require_vision_model(params["model"], f"effect {job}")
    record.inputs([*task_args, *caption_args, *inputs.images])
    folder = result_folder(params["out"], job, params["model"], record)
    loaded = load_model_or_fail(params["model"], params["device"], **placement(params))
    values = [intervention.to_dict()[_PARAMETER[job]] for intervention in interventions]
    update, bar = progress_bar(len(inputs.tasks) + len(inputs.captions), "effects", unit="task")
    with bar:
        effects = image_effects(
            loaded, inputs, interventions, values, config, metric, update, folder
        )
    settings = [i.to_dict() for i in interventions]
    report_effects(
        effects,
        folder,
        record,
        effect_figures(effects, parameter, values, params["metric"]),
        params["static"],
        tasks=task_args,
        captions=caption_args,
        intervention=settings[0] if len(settings) == 1 else settings,
    )
