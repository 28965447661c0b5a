"""`interp effect act`: search ACT heads on calibration splits, report effects on test splits."""

from __future__ import annotations

from contextlib import nullcontext
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
    placement,
    progress_bar,
    result_folder,
    start_record,
    user_errors,
    work_progress,
    write_outputs,
)

if TYPE_CHECKING:
    from interp.effects import Effects
    from interp.runs import RunRecord


def effect_act(
    task: Annotated[
        list[str] | None,
        typer.Option(
            "--task",
            "-t",
            help="Shipped task name, task folder, or .jsonl file (test only); repeatable."
            " Default: the shipped tasks with headroom on the default model (see data/README.md).",
        ),
    ] = None,
    model: Annotated[str | None, ModelOption] = None,
    heads: Annotated[
        Path | None,
        typer.Option(help="Head file from an earlier run (head_scores.parquet): skip the search."),
    ] = None,
    calibration_items: Annotated[
        int | None, typer.Option(help="Calibration items per task for the search (all: 0).")
    ] = 0,
    test_items: Annotated[int | None, typer.Option(help="Test items per task (all: 0).")] = 0,
    max_heads: Annotated[
        int | None, typer.Option(help="Search a seeded random subset of heads (all: 0).")
    ] = 0,
    metric: Annotated[
        str, typer.Option(help="Search metric: 'accuracy' (paper) or 'log_prob'.")
    ] = "accuracy",
    min_gain: Annotated[
        float, typer.Option(help="Keep heads whose metric gain exceeds this.")
    ] = 0.0,
    beta: Annotated[
        float, typer.Option(help="Scale on attention to hidden sinks (ACT: 0.4).")
    ] = 0.4,
    threshold: Annotated[float, typer.Option(help="Sink threshold tau on m_j (ACT: 0.1).")] = 0.1,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of subsampling and bootstrap.")] = 0,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output folder. Default: results/act-<model>-<time>."),
    ] = None,
    device: Annotated[str, DeviceOption] = "cpu",
    device_map: Annotated[str | None, DeviceMapOption] = None,
    max_memory: Annotated[str | None, MaxMemoryOption] = None,
    offload_folder: Annotated[Path | None, OffloadFolderOption] = None,
    dtype: Annotated[str | None, DtypeOption] = None,
    static: Annotated[bool, StaticOption] = True,
) -> None:
    """Run ACT: find heads on calibration splits (or load them), measure test accuracy."""
    record = start_record("effect act", locals())
    with user_errors():
        from interp.act_effects import load_act_tasks, run_act
        from interp.effects import EffectsConfig
        from interp.interventions.act import ActConfig
        from interp.interventions.act_search import HeadSearch, SearchConfig
        from interp.runs import LOG_FILE

        act = ActConfig(beta=beta, threshold=threshold)
        search = SearchConfig(
            metric=metric,  # type: ignore[arg-type]
            min_gain=min_gain,
            max_heads=max_heads or None,
            seed=seed,
        )
        effects_config = EffectsConfig(n_boot=n_boot, seed=seed)  # checked before any work
        searching = heads is None
        tasks = load_act_tasks(
            task, calibration_items or None, test_items or None, seed, search=searching
        )
        record.inputs([*tasks.sources, *([] if heads is None else [heads])])
        folder = result_folder(out, "act", model, record)
        loaded = load_model_or_fail(model, device, **placement(locals()))
        update, bar = (
            work_progress("head search", "sequence") if searching else (None, nullcontext())
        )
        effects_update, effects_bar = progress_bar(len(tasks.tests), "effects", unit="task")
        with bar, effects_bar:
            result = run_act(
                loaded,
                tasks,
                act,
                search,
                effects_config,
                None if heads is None else HeadSearch.load(heads),
                search_progress=update,
                progress=effects_update,
                folder=folder,
            )
        if searching:
            record.wrote([folder / LOG_FILE])
        for line in result.summary_lines(searched=searching):
            typer.echo(line)
        found = result.search
        report_effects(
            result.effects,
            folder,
            record,
            result.figures(metric),
            static,
            tables={"head_scores": found.scores},
            tasks=tasks.names,
            heads=found.selected.labels,
            head_search=found.scores.provenance.to_dict(),
        )


def report_effects(
    effects: Effects,
    folder: Path,
    record: RunRecord,
    figures: dict[str, Any],
    static: bool,
    tables: dict[str, Any] | None = None,
    **manifest: Any,
) -> None:
    """Write the effects tables, `tables`, figures and manifest; print a line per task."""
    written = write_outputs(
        folder,
        record,
        bundles=[effects],
        tables=tables,
        figures=figures,
        static=static,
        **manifest,
        effects=effects.table.provenance.to_dict(),
    )
    table = effects.table.data
    several_metrics = table.metric.nunique() > 1
    for row in table.itertuples():
        label = f"{row.task} {row.metric}" if several_metrics else row.task
        if "parameter" in table:
            label = f"[{row.parameter:g}] {label}"
        typer.echo(
            f"{label}: {row.baseline:.3f} -> {row.intervened:.3f}"
            f" ({row.difference:+.3f}, 95% CI [{row.ci_low:+.3f}, {row.ci_high:+.3f}],"
            f" +{row.improved}/-{row.worsened} of {row.n})"
        )
        if row.warnings:
            typer.echo(f"  warning: {row.warnings}")
    typer.echo(f"results and {len(written)} figure files in {folder}")
