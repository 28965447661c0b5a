"""`interp effect act`: search ACT heads on calibration splits, report effects on test splits."""

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
    export_figures,
    load_model_or_fail,
    placement,
    progress_bar,
    result_folder,
    start_record,
    user_errors,
    work_progress,
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
        from interp.effects import EffectsConfig, measure
        from interp.errors import InputError
        from interp.figures import effects_bars, head_heatmap
        from interp.interventions.act import ACT, ActConfig
        from interp.interventions.act_search import (
            DEFAULT_TASKS,
            HeadSearch,
            SearchConfig,
            search_heads,
        )
        from interp.runs import LOG_FILE
        from interp.tasks import TASKS_DIR, load_task

        names = task or list(DEFAULT_TASKS)
        act = ActConfig(beta=beta, threshold=threshold)
        search = SearchConfig(
            metric=metric,  # type: ignore[arg-type]
            min_gain=min_gain,
            max_heads=max_heads or None,
            seed=seed,
        )
        effects_config = EffectsConfig(n_boot=n_boot, seed=seed)  # checked before any work
        tests = [load_task(n, "test").subsample(test_items or None, seed) for n in names]
        calibration = [
            load_task(n, "calibration").subsample(calibration_items or None, seed)
            for n in names
            if not n.endswith(".jsonl")
        ]
        if heads is None and not calibration:
            raise InputError("The head search needs a task with a calibration split, or --heads.")
        record.inputs(
            Path(n) if Path(n).suffix == ".jsonl" or Path(n).is_dir() else TASKS_DIR / n
            for n in names
        )
        if heads is not None:
            record.inputs([heads])
        folder = result_folder(out, "act", model, record)
        loaded = load_model_or_fail(model, device, **placement(locals()))
        if heads is None:
            update, bar = work_progress("head search", unit="sequence")
            with bar:
                found = search_heads(
                    loaded, calibration, act, search, progress=update, folder=folder
                )
            record.wrote([folder / LOG_FILE])
            skipped = int((found.scores.data["skipped"] != "").sum())
            typer.echo(
                f"searched {len(found.scores) - skipped} heads, skipped {skipped} without"
                f" hidden sinks; noise floor {found.noise_floor:.2e}"
            )
        else:
            found = HeadSearch.load(heads)
        scores, chosen = found.scores, found.selected
        record.wrote(found.save(folder / "head_scores.parquet"))
        update, bar = progress_bar(len(tests), "effects", unit="task")
        with bar:
            effects = measure(loaded, tests, ACT(chosen, act), effects_config, update)
        figures = {
            "effects": effects_bars(effects.table, f"ACT on {len(chosen)} heads: test accuracy"),
            "head_search": head_heatmap(scores, "score", f"ACT head search: {metric} change"),
        }
        typer.echo(f"ACT on {len(chosen)} heads: {', '.join(chosen.labels) or 'none selected'}")
        report_effects(
            effects,
            folder,
            record,
            figures,
            static,
            tasks=names,
            heads=chosen.labels,
            head_search=scores.provenance.to_dict(),
        )


def report_effects(
    effects: Effects,
    folder: Path,
    record: RunRecord,
    figures: dict[str, Any],
    static: bool,
    **manifest: Any,
) -> None:
    """Save the effects tables and figures, write the manifest, print a line per task."""
    record.wrote(effects.save(folder))
    written = export_figures(figures, folder, static)
    record.wrote(written)
    record.write(folder, **manifest, effects=effects.table.provenance.to_dict())
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
