"""`interp effect act`: search ACT heads on calibration splits, report effects on test splits."""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from interp.cli.common import work_progress
from interp.cli.options import Fields, Run, command
from interp.effects import EffectsConfig
from interp.interventions.act import ActConfig
from interp.interventions.act_search import SearchConfig

if TYPE_CHECKING:
    from interp.effects import Effects

TaskOption = typer.Option(
    "--task",
    "-t",
    help="Shipped task name, task folder, or .jsonl file (test only); repeatable."
    " Default: the shipped tasks with headroom on the default model (see data/README.md).",
)
HeadsOption = typer.Option(
    help="Head file from an earlier run (head_scores.parquet): skip the search."
)
# The search's batch is its own option; the search's max_heads is "0 means all" here.
Search = Annotated[
    SearchConfig, Fields(rename={"batch_size": "search_batch_size"}, skip=("max_heads",))
]


@command("effect act", folder="act", resumable=True)
def effect_act(
    run: Run,
    act: ActConfig,
    search: Search,
    effects: EffectsConfig,
    task: Annotated[list[str] | None, TaskOption] = None,
    heads: Annotated[Path | None, HeadsOption] = None,
    calibration_items: Annotated[
        int, typer.Option(help="Calibration items per task for the search (all: 0).")
    ] = 0,
    test_items: Annotated[int, typer.Option(help="Test items per task (all: 0).")] = 0,
    max_heads: Annotated[
        int, typer.Option(help="Search a seeded random subset of heads (all: 0).")
    ] = 0,
) -> None:
    """Run ACT: find heads on calibration splits (or load them), measure test accuracy."""
    from interp.act_effects import load_act_tasks, run_act
    from interp.interventions.act_search import HeadSearch
    from interp.runs import log_files

    search = dataclasses.replace(search, max_heads=max_heads or None)
    searching = heads is None
    tasks = load_act_tasks(
        task, calibration_items or None, test_items or None, effects.seed, search=searching
    )
    run.record.inputs([*tasks.sources, *([] if heads is None else [heads])])
    folder = run.folder()
    model = run.load_model()
    found, bar = work_progress("head search", "sequence") if searching else (None, nullcontext())
    with bar, run.progress(len(tasks.tests), "effects", unit="task") as done:
        saved = None if heads is None else HeadSearch.load(heads)
        result = run_act(model, tasks, act, search, effects, saved, search_progress=found,
                         progress=done, folder=folder)  # fmt: skip
    if searching:
        run.record.wrote(log_files(folder))
    if run.writes:  # a separately launched shard leaves the results to the merge
        typer.echo("\n".join(result.summary_lines(searched=searching)))
    scores = result.search.scores
    report_effects(
        run,
        result.effects,
        result.figures(search.metric),
        tables={"head_scores": scores},
        tasks=tasks.names,
        heads=result.search.selected.labels,
        head_search=scores.provenance.to_dict(),
    )


def report_effects(run: Run, effects: Effects, figures: dict[str, Any], **outputs: Any) -> None:
    """Write the effects tables, figures and `outputs` (more tables, manifest fields);
    print a line per effect (not in a separately launched shard: the merge does)."""
    if not run.writes:
        return
    written = run.write(
        bundles=[effects], figures=figures, **outputs, effects=effects.table.provenance.to_dict()
    )
    folder = f"results and {len(written)} figure files in {run.folder()}"
    typer.echo("\n".join([*effects.table.summary_lines(), folder]))
