"""`interp effect vhr` and `interp effect var`: VHR and VAR on image tasks, via interp.effects.

Both score multiple-choice tasks whose items have images (`interp.tasks`; e.g. POPE-style
yes/no questions) without and with the intervention, and write what `interp effect act`
writes: the effects table with 95% intervals, the per-item table, a figure, a manifest.
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
    load_model_or_fail,
    parse_ints,
    placement,
    progress_bar,
    result_folder,
    start_record,
    user_errors,
)
from interp.cli.effect import report_effects

if TYPE_CHECKING:
    from interp.interventions.base import Intervention
    from interp.runs import RunRecord

TaskOption = typer.Option(
    "--task",
    "-t",
    help="Task folder (its test split) or .jsonl file of items with an 'image'; repeatable.",
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
    task: Annotated[list[str], TaskOption],
    model: Annotated[str | None, ModelOption] = None,
    alpha: Annotated[
        float, typer.Option(help="Factor on the chosen heads' outputs (VHR: 2).")
    ] = 2.0,
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

        config = VhrConfig(alpha=alpha, last_layers=last_layers, first_layer=first_layer)
        _run(record, "vhr", f"VHR (alpha {alpha:g})", VHR(config), locals())


def effect_var(
    task: Annotated[list[str], TaskOption],
    model: Annotated[str | None, ModelOption] = None,
    p: Annotated[
        float, typer.Option("--p", help="Share of sink attention moved (paper: 0.4).")
    ] = 0.4,
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

        config = VarConfig(
            p=p,
            rho=rho,
            convention=convention,  # type: ignore[arg-type]
            tau=tau,
            sink_dims=parse_ints(sink_dims, minimum=0),
            min_image_share=min_image_share,
            include_last_layer=include_last_layer,
        )
        _run(record, "var", f"VAR (p {p:g}, {convention})", VAR(config), locals())


def _run(
    record: RunRecord, job: str, title: str, intervention: Intervention, params: dict[str, Any]
) -> None:
    """Load the image tasks (checking every image), the model; measure; write and report."""
    from interp.effects import EffectsConfig, measure
    from interp.errors import InputError
    from interp.figures import effects_bars
    from interp.inputs import load_image
    from interp.tasks import choice_accuracy, choice_logprob, image_paths, load_task

    metrics = {"accuracy": choice_accuracy, "log_prob": choice_logprob}
    if params["metric"] not in metrics:
        raise InputError(f"Unknown metric {params['metric']!r}: use 'accuracy' or 'log_prob'.")
    config = EffectsConfig(
        n_boot=params["n_boot"], seed=params["seed"], batch_size=params["batch_size"]
    )
    if params["items"] < 0:
        raise InputError(f"--items must be 0 (all) or more, got {params['items']}.")
    tasks = [
        load_task(t, "test").subsample(params["items"] or None, config.seed) for t in params["task"]
    ]
    images = sorted({path for t in tasks for path in image_paths(t)})
    for t in tasks:
        if not image_paths(t):
            raise InputError(f"Task {t.name!r} has no images: {job.upper()} acts on image tasks.")
    for path in images:  # a bad file fails here, before the model loads
        load_image(path)
    record.inputs([*params["task"], *images])
    folder = result_folder(params["out"], job, params["model"], record)
    loaded = load_model_or_fail(params["model"], params["device"], **placement(params))
    update, bar = progress_bar(len(tasks), "effects", unit="task")
    with bar:
        effects = measure(loaded, tasks, intervention, config, update, metrics[params["metric"]])
    figure = effects_bars(effects.table, f"{title}: {params['metric']}")
    if params["metric"] != "accuracy":
        figure.update_yaxes(title=params["metric"], range=None, autorange=True)
    report_effects(
        effects,
        folder,
        record,
        {"effects": figure},
        params["static"],
        tasks=params["task"],
        intervention=intervention.to_dict(),
    )
