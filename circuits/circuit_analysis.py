"""One task's circuit, end to end: score the task, discover its circuit, check it, map heads.

What `interp circuit ioi|colored-objects` runs, as one call (`analyse_circuit`): the task's
per-prompt accuracy and logit difference (`circuits.metrics.prompt_metrics`), the circuit
by staged path patching (`circuits.discovery.discover_ioi`), its faithfulness under mean
ablation, optionally again on a second task discovery did not see (other templates), and
optionally per-head maps by attribution and/or activation patching (with their rank
correlation when both run). The result holds every table under the name the command saves
it as, the summary and the figures; nothing is written here. Method notes: docs/methods.md §8.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from circuits.attribution import attribution_patching, rank_correlation
from circuits.circuit_task import CircuitTask
from circuits.discovery import Discovery, DiscoveryConfig, discover_ioi, faithfulness
from circuits.metrics import prompt_metrics
from circuits.patching import activation_patching
from circuits.path_patching import IOI_STAGES
from interp.config import Config
from interp.effects import caveats
from interp.models import Model
from interp.results import HeadScores, ItemTable
from interp.runs import WorkLog
from interp.work import WorkFolder, open_log

__all__ = [
    "END_STAGES",
    "PATCHING",
    "CircuitAnalysis",
    "CircuitConfig",
    "analyse_circuit",
    "by_stage",
    "staged_discovery",
    "task_warnings",
]

# Stages every task can run: both read the last position ("END"). IOI adds the deeper
# stages (S-inhibition values at S2, induction keys at S1+1).
END_STAGES = ("logits", "name_mover_queries")
PATCHING = ("none", "attribution", "activation", "both")
# progress(what, done, total): what is the step running ("ioi path patching", ...)
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, kw_only=True)
class CircuitConfig(Config):
    """Discovery's choices and the per-head maps to add.

    Attributes:
        stages: the path-patching stages to run, in order (`DiscoveryConfig`).
        per_stage: heads chosen per path-patching stage (0: Merullo's 2% of all heads).
        max_heads: cap on the circuit's size (the union over stages).
        rank_by: "score" (heads whose corruption lowers the logit difference) or "abs"
            (|score|).
        patching: per-head maps besides path patching: "attribution" (one forward and
            backward), "activation" (every head patched), "both" (with their rank
            correlation) or "none".
        batch_size: rows per patched forward (path patching, prompt metrics, activation
            patching).
    """

    stages: tuple[str, ...] = tuple(IOI_STAGES)
    per_stage: int = 0
    max_heads: int = 27
    rank_by: Literal["score", "abs"] = "abs"
    patching: Literal["none", "attribution", "activation", "both"] = "attribution"
    batch_size: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        self.discovery()  # its checks, before any model runs

    def discovery(self) -> DiscoveryConfig:
        return DiscoveryConfig(
            stages=self.stages,
            per_stage=self.per_stage,
            max_heads=self.max_heads,
            rank_by=self.rank_by,
            batch_size=self.batch_size,
        )


@dataclass(frozen=True)
class CircuitAnalysis:
    """What `analyse_circuit` returns.

    Attributes:
        task: the task's name, the prefix of every table's name.
        items: per-prompt accuracy and logit differences.
        discovery: the staged path-patching scores and the chosen circuit.
        faithfulness: F of the full model, the circuit, its complement and no head.
        maps: per-head patching maps by method ("attribution", "activation").
        summary: the numbers `summary.json` holds.
        check: the circuit's faithfulness on the unseen task, when one was given.
    """

    task: str
    items: ItemTable
    discovery: Discovery
    faithfulness: ItemTable
    maps: dict[str, HeadScores]
    summary: dict[str, Any]
    check: ItemTable | None = None

    def tables(self) -> dict[str, HeadScores | ItemTable]:
        """Every table under the name the command saves it as."""
        tables: dict[str, HeadScores | ItemTable] = {
            f"{self.task}_items": self.items,
            f"{self.task}_path_patching": self.discovery.scores,
            f"{self.task}_circuit": self.discovery.circuit,
            f"{self.task}_faithfulness": self.faithfulness,
        }
        tables |= {f"{self.task}_{name}_patching": scores for name, scores in self.maps.items()}
        if self.check is not None:
            tables[f"{self.task}_check_faithfulness"] = self.check
        return tables

    def summary_lines(self) -> list[str]:
        """The task's accuracy, the circuit's faithfulness (also on the unseen templates),
        and its warnings, for a console."""
        s = self.summary
        lines = [
            f"{s['task']}: accuracy {s['accuracy']:.1%}, logit difference"
            f" {s['logit_difference']:+.2f} over {s['n']} prompts",
            f"circuit of {len(s['circuit'])} heads keeps {s['faithfulness']:.0%} of the logit"
            f" difference; ablating it leaves {s['faithfulness_complement']:.0%}:"
            f" {', '.join(s['circuit'])}",
        ]
        if s["warnings"]:
            lines.append(f"  warning: {s['warnings']}")
        if "check" in s:
            check = s["check"]
            lines.append(
                f"on {check['n']} prompts of {check['templates']} templates discovery did not"
                f" see, it keeps {check['faithfulness']:.0%}; ablating it leaves"
                f" {check['faithfulness_complement']:.0%}"
            )
        return lines

    def figures(self) -> dict[str, Any]:
        """A layer x head map per path-patching stage and per patching map."""
        from interp.figures import head_heatmap

        figures = {
            f"{self.task}_{stage}": head_heatmap(
                scores, "score", f"{self.task}: path patching, stage {stage}"
            )
            for stage, scores in by_stage(self.discovery.scores).items()
        }
        for name, scores in self.maps.items():
            figures[f"{self.task}_{name}_patching"] = head_heatmap(
                scores, "score", f"{self.task}: {name} patching"
            )
        return figures


def analyse_circuit(
    model: Model,
    task: CircuitTask,
    config: CircuitConfig | None = None,
    *,
    check: CircuitTask | None = None,
    progress: Progress | None = None,
    folder: WorkFolder | None = None,
) -> CircuitAnalysis:
    """Score `task`, discover its circuit, measure its faithfulness, patch every head.

    `check`, when given, is a second task (other templates, same kind) the circuit's
    faithfulness is measured on again, unseen by discovery. `folder` records each finished
    path-patching stage (`interp.work`): run again with the same folder to resume after
    it; a folder of another run is refused.
    """
    config = config or CircuitConfig()
    items = prompt_metrics(model, task, batch_size=config.batch_size)
    identity = {
        "analyzer": "circuit_analysis",
        **model.provenance_fields(),
        "config": config.to_dict(),
        "task": task.inputs_hash(),
    }
    found = staged_discovery(model, task, config, progress, open_log(folder, identity))
    faithful = faithfulness(model, task, found.heads)
    share = faithful.data.set_index("condition")["share"]
    summary: dict[str, Any] = {
        "task": task.name,
        "n": len(task),
        "accuracy": float(items.data["correct"].mean()),
        "accuracy_vocab": float(items.data["correct_vocab"].mean()),
        "logit_difference": float(items.data["logit_difference"].mean()),
        "corrupted_logit_difference": float(items.data["corrupted_logit_difference"].mean()),
        "circuit": found.heads.labels,
        "faithfulness": float(share["circuit"]),
        "faithfulness_complement": float(share["complement"]),
        "stages": list(config.stages),
        "warnings": task_warnings(items, faithful, task),
    }
    maps = _maps(model, task, config, progress)
    if len(maps) == 2:
        summary["attribution_rank_correlation"] = rank_correlation(
            maps["attribution"], maps["activation"]
        )
    checked = None
    if check is not None:
        checked = faithfulness(model, check, found.heads)
        share = checked.data.set_index("condition")["share"]
        summary["check"] = {
            "n": len(check),
            "templates": len(set(check.templates)),
            "faithfulness": float(share["circuit"]),
            "faithfulness_complement": float(share["complement"]),
        }
    return CircuitAnalysis(task.name, items, found, faithful, maps, summary, checked)


def task_warnings(items: ItemTable, faithful: ItemTable, task: CircuitTask) -> str:
    """Caveats of a task's numbers: a model at chance, or no logit difference to share."""
    notes = [caveats(baseline=items.data["correct"].mean(), chance=1 / task.choice_ids.shape[1])]
    full = faithful.data.set_index("condition").loc["full", "logit_difference"]
    if full <= 0:
        notes.append(
            f"the full model's logit difference is {full:+.2f}: shares of it (faithfulness)"
            " are not meaningful"
        )
    return "; ".join(note for note in notes if note)


def by_stage(scores: HeadScores) -> dict[str, HeadScores]:
    """Stacked staged path-patching scores split into one table per stage, in stage order."""
    return {
        str(stage): HeadScores(group.reset_index(drop=True), scores.provenance)
        for stage, group in scores.data.groupby("stage", sort=False)
    }


def staged_discovery(
    model: Model,
    task: CircuitTask,
    config: CircuitConfig,
    progress: Progress | None,
    log: WorkLog | None = None,
) -> Discovery:
    """Staged path patching, reporting the stages finished (logged in `log`, if given)."""
    what, total = f"{task.name} path patching", len(config.stages)
    finished: set[str] = set()

    def step(stage: str, done: int, of: int) -> None:
        if done == of:
            finished.add(stage)
        if progress is not None:
            progress(what, len(finished), total)

    found = discover_ioi(model, task, config.discovery(), progress=step, log=log)
    if progress is not None:
        progress(what, total, total)  # a chain that ends early skips its last stages
    return found


def _maps(
    model: Model, task: CircuitTask, config: CircuitConfig, progress: Progress | None
) -> dict[str, HeadScores]:
    maps: dict[str, HeadScores] = {}
    if config.patching in ("attribution", "both"):
        maps["attribution"] = attribution_patching(model, task).heads
    if config.patching in ("activation", "both"):
        maps["activation"] = activation_patching(
            model,
            task,
            batch_size=config.batch_size,
            progress=(lambda d, t: progress("activation patching", d, t)) if progress else None,
        )
    return maps
