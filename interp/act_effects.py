"""ACT end to end: heads from a calibration search (or a saved one), effects on test splits.

`load_act_tasks` reads each task's test split and, for shipped tasks and task folders, its
calibration split (a `.jsonl` file has test items only). `run_act` searches the heads
(`interp.interventions.act_search.search_heads`, resumable in `folder`) unless a saved
search is given, and measures ACT on the chosen heads over the test splits through
`interp.effects.measure` (the identity arm against ACT, paired intervals).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interp.effects import Effects, EffectsConfig, measure
from interp.errors import InputError
from interp.interventions.act import ACT, ActConfig
from interp.interventions.act_search import DEFAULT_TASKS, HeadSearch, SearchConfig, search_heads
from interp.models import Model
from interp.tasks import TASKS_DIR, Task, choice_accuracy, load_task
from interp.work import WorkFolder

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ActTasks:
    """The task names, test splits, calibration splits (tasks that have one), their files."""

    names: list[str]
    tests: list[Task]
    calibration: list[Task]
    sources: list[Path]


def load_act_tasks(
    names: Sequence[str] | None,
    calibration_items: int | None = None,
    test_items: int | None = None,
    seed: int = 0,
    *,
    search: bool = True,
) -> ActTasks:
    """The named tasks (default: `DEFAULT_TASKS`), each split a seeded subset (None: all).

    Raises:
        InputError: `search` is asked for and no task has a calibration split.
    """
    names = list(names or DEFAULT_TASKS)
    tests = [load_task(n, "test").subsample(test_items, seed) for n in names]
    calibration = [
        load_task(n, "calibration").subsample(calibration_items, seed)
        for n in names
        if not n.endswith(".jsonl")
    ]
    if search and not calibration:
        raise InputError("The head search needs a task with a calibration split, or --heads.")
    sources = [
        Path(n) if Path(n).suffix == ".jsonl" or Path(n).is_dir() else TASKS_DIR / n for n in names
    ]
    return ActTasks(names, tests, calibration, sources)


@dataclass(frozen=True)
class ActResult:
    """The head search (run or loaded) and ACT's effects on the test splits."""

    search: HeadSearch
    effects: Effects

    def summary_lines(self, *, searched: bool) -> list[str]:
        """What the search found (when it ran) and the heads ACT acts on, for a console."""
        scores, chosen = self.search.scores.data, self.search.selected
        lines = [f"ACT on {len(chosen)} heads: {', '.join(chosen.labels) or 'none selected'}"]
        if searched:
            skipped = int((scores["skipped"] != "").sum())
            lines.insert(
                0,
                f"searched {len(scores) - skipped} heads, skipped {skipped} without hidden"
                f" sinks; noise floor {self.search.noise_floor:.2e}",
            )
        return lines

    def figures(self, metric: str) -> dict[str, Any]:
        """Test-accuracy bars, and the search's per-head `metric` change."""
        from interp.figures import effects_bars, head_heatmap

        chosen = self.search.selected
        return {
            "effects": effects_bars(
                self.effects.table, f"ACT on {len(chosen)} heads: test accuracy"
            ),
            "head_search": head_heatmap(
                self.search.scores, "score", f"ACT head search: {metric} change"
            ),
        }


def run_act(
    model: Model,
    tasks: ActTasks,
    act: ActConfig,
    search: SearchConfig,
    effects: EffectsConfig,
    heads: HeadSearch | None = None,
    *,
    search_progress: Progress | None = None,
    progress: Progress | None = None,
    folder: WorkFolder | None = None,
) -> ActResult:
    """Search the heads on the calibration splits (unless `heads` is given), measure ACT.

    Args:
        search_progress: progress(done, total) calibration sequences of the search.
        progress: progress(done, total) test tasks measured.
        folder: where the search records its work, to resume (`interp.work`).
    """
    found = heads or search_heads(
        model, tasks.calibration, act, search, progress=search_progress, folder=folder
    )
    intervention = ACT(found.selected, act)
    measured = measure(model, tasks.tests, intervention, effects, progress, choice_accuracy)
    return ActResult(found, measured)
