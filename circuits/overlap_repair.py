"""Circuit reuse and repair in one call: IOI vs name recall (control: Colored Objects).

What `interp circuit overlap` runs (`overlap_and_repair`): each task's circuit analysis on
the stages read at the last token (`circuits.circuit_analysis`, each stage's top
`top_fraction` of heads), the per-stage reuse table of IOI against the other tasks
(`circuits.reuse.overlap`; Colored Objects is the control, as the default model is at chance
on it), then Merullo's repair on Colored Objects (`circuits.repair`): IOI's inhibition heads
and a negative mover (or the heads given) attend from the last token to the two wrong
colours, against as many random heads of the same layers, with paired bootstrap 95%
intervals. The tasks are built from the config unless given. Method notes: docs/methods.md §8.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from circuits.circuit_analysis import (
    END_STAGES,
    CircuitAnalysis,
    CircuitConfig,
    Progress,
    analyse_circuit,
    by_stage,
)
from circuits.circuit_task import CircuitTask
from circuits.repair import (
    Repair,
    ov_copy_scores,
    random_heads_like,
    repair_effects,
    repair_heads,
    wrong_color_positions,
)
from circuits.reuse import ReuseConfig, overlap, stage_circuits
from circuits.tasks import colored_objects, ioi, name_recall
from interp.config import Config, check_range
from interp.effects import Effects, EffectsConfig
from interp.heads import HeadSet
from interp.models import Model
from interp.results import EffectTable, HeadScores, ItemTable
from interp.work import WorkFolder, open_log

__all__ = ["OverlapConfig", "OverlapResult", "build_tasks", "overlap_and_repair"]

REFERENCE, CONTROL = "ioi", "colored_objects"


@dataclass(frozen=True, kw_only=True)
class OverlapConfig(Config):
    """The tasks' sizes, the top-set rule and the repair.

    Attributes:
        n: prompts per task (when the tasks are built here).
        repair_n: Colored Objects prompts the repair is measured on (when built here).
        seed: seed of the tasks' prompts (Colored Objects: 42 + seed), the bootstrap and
            the random heads (draw i: seed + i).
        top_fraction: share of all heads in each stage's top set (Merullo: 0.02).
        rank_by: "abs" (|score|) or "score", for discovery and the top sets.
        repair: head labels to repair with; empty: IOI's top 3 heads of the S-inhibition
            stage and a negative mover by `negative_rule` (Merullo's roles).
        negative_rule: as `circuits.repair.repair_heads`.
        random_controls: repairs with as many random heads of the same layers.
        n_boot: bootstrap resamples of each interval.
        batch_size: rows per patched forward.
    """

    n: int = 16
    repair_n: int = 40
    seed: int = 0
    top_fraction: float = 0.02
    rank_by: Literal["score", "abs"] = "abs"
    repair: tuple[str, ...] = ()
    negative_rule: Literal["demoting", "most_negative"] = "demoting"
    random_controls: int = 2
    n_boot: int = 2000
    batch_size: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "random_controls", 0)
        self.reuse()
        self.effects()
        CircuitConfig(rank_by=self.rank_by, batch_size=self.batch_size)

    def reuse(self) -> ReuseConfig:
        return ReuseConfig(top_fraction=self.top_fraction, rank_by=self.rank_by)

    def effects(self) -> EffectsConfig:
        return EffectsConfig(n_boot=self.n_boot, seed=self.seed)


@dataclass(frozen=True)
class OverlapResult:
    """What `overlap_and_repair` returns.

    Attributes:
        tasks: each task's circuit analysis ("ioi", "name_recall", "colored_objects").
        stages: the stages compared (those every task's chain of stages reached).
        reuse: the per-stage overlap of IOI's circuit with the others' (`reuse.overlap`).
        circuits: each task's circuit, the union of its per-stage top sets.
        arms: the repair's head sets: "chosen", then "random_0", ...
        repairs: each arm's repair effects on the Colored Objects prompts.
        summary: the numbers `summary.json` holds.
    """

    tasks: dict[str, CircuitAnalysis]
    stages: list[str]
    reuse: ItemTable
    circuits: dict[str, list[str]]
    arms: dict[str, HeadSet]
    repairs: dict[str, Effects]
    summary: dict[str, Any]

    def tables(self) -> dict[str, Any]:
        """Every table under the name the command saves it as (repairs in subfolders)."""
        tables = {name: t for a in self.tasks.values() for name, t in a.tables().items()}
        tables["reuse"] = self.reuse
        for arm, effects in self.repairs.items():
            folder = "repair" if arm == "chosen" else f"repair_{arm}"
            tables |= {f"{folder}/effects": effects.table, f"{folder}/per_item": effects.per_item}
        return tables

    def summary_lines(self) -> list[str]:
        """The reuse shares, each repair arm's effects and the tasks' warnings, for a console."""
        lines = []
        if len(self.stages) < len(END_STAGES):
            lines.append(f"note: comparing stages {self.stages}; a task's chain ended early")
        for row in self.reuse.data[self.reuse.data.stage == "all"].itertuples():
            lines.append(
                f"ioi vs {row.task}{' (control)' if row.control else ''}: shared"
                f" {row.n_shared}/{row.n_reference} = {row.shared_share:.0%},"
                f" Jaccard {row.jaccard:.2f}"
            )
        for arm, effects in self.repairs.items():
            lines.append(f"repair, {arm} heads ({', '.join(self.arms[arm].labels)}):")
            lines += ["  " + line for line in effects.table.summary_lines()]
        for name, task in self.tasks.items():
            if task.summary["warnings"]:
                lines.append(f"{name}: warning: {task.summary['warnings']}")
        return lines

    def figures(self) -> dict[str, Any]:
        """Each task's maps, the logits stage of IOI and name recall side by side with their
        circuits, and the repair's accuracy per arm."""
        from interp.figures import circuit_heatmaps, effects_bars

        figures = {name: f for a in self.tasks.values() for name, f in a.figures().items()}
        pair = (REFERENCE, "name_recall")  # the control's map is in its own figures
        figures["overlap"] = circuit_heatmaps(
            {name: by_stage(self.tasks[name].discovery.scores)["logits"] for name in pair},
            {name: self.circuits[name] for name in pair},
            "Direct effect on the logits (path patching); squares: each task's circuit,"
            " dots: in both",
            label="path patching score",
        )
        rows = pd.concat(
            [
                e.table.data[e.table.data.metric == "accuracy"].assign(
                    task=f"{arm}: {','.join(self.arms[arm].labels)}"
                )
                for arm, e in self.repairs.items()
            ],
            ignore_index=True,
        )
        figures["repair"] = effects_bars(
            EffectTable(rows, self.repairs["chosen"].table.provenance),
            "Repair of Colored Objects: accuracy among the listed colours",
        )
        return figures


def build_tasks(model: Model, config: OverlapConfig) -> tuple[dict[str, CircuitTask], CircuitTask]:
    """The three compared tasks of `config.n` prompts and the repair's Colored Objects task."""
    tasks = {
        REFERENCE: ioi(model, config.n, seed=config.seed),
        "name_recall": name_recall(model, config.n, seed=config.seed),
        CONTROL: colored_objects(model, config.n, seed=42 + config.seed),
    }
    return tasks, colored_objects(model, config.repair_n, seed=42 + config.seed)


def overlap_and_repair(
    model: Model,
    config: OverlapConfig | None = None,
    *,
    tasks: Mapping[str, CircuitTask] | None = None,
    repair_task: CircuitTask | None = None,
    progress: Progress | None = None,
    folder: WorkFolder | None = None,
) -> OverlapResult:
    """Discover each task's circuit, compare them with IOI's, and repair Colored Objects.

    Args:
        model: the model.
        config: sizes, top-set rule and repair.
        tasks: "ioi", "name_recall" and "colored_objects" tasks (default: `build_tasks`).
        repair_task: the Colored Objects task the repair runs on (default: `build_tasks`).
        progress: called as progress(step, done, total).
        folder: record each task's finished path-patching stages and the repair arms'
            finished batches there (`interp.work`); run again with the same folder to
            resume them. A folder of another run is refused.
    """
    config = config or OverlapConfig()
    chosen = HeadSet(config.repair) if config.repair else None
    if chosen is not None:
        chosen.mask(model.geometry)  # a head the model lacks fails before the work
    if tasks is None or repair_task is None:
        built, colours = build_tasks(model, config)
        tasks, repair_task = tasks or built, repair_task or colours
    n_heads = model.geometry.n_layers * model.geometry.n_heads
    circuit_config = CircuitConfig(
        stages=END_STAGES,
        per_stage=max(1, round(config.top_fraction * n_heads)),
        rank_by=config.rank_by,
        patching="none",
        batch_size=config.batch_size,
    )
    log = open_log(
        folder,
        {
            "analyzer": "circuit_overlap_repair",
            **model.provenance_fields(),
            "config": config.to_dict(),
            "tasks": {name: task.inputs_hash() for name, task in tasks.items()},
            "repair_task": repair_task.inputs_hash(),
        },
    )
    analyses = {
        name: analyse_circuit(model, task, circuit_config, progress=progress, folder=log)
        for name, task in tasks.items()
    }
    per_task = {name: by_stage(a.discovery.scores) for name, a in analyses.items()}
    # A chain of stages ends early when a stage's top heads sit in layer 0 (nothing lies
    # below them); compare the stages every task reached.
    compared = [s for s in END_STAGES if all(s in stages for stages in per_task.values())]
    scores = {t: {s: stages[s] for s in compared} for t, stages in per_task.items()}
    reuse = overlap(REFERENCE, scores, config.reuse(), controls=(CONTROL,))
    circuits = {
        name: HeadSet(h for s in stage_circuits(st, config.reuse(), n_heads).values() for h in s)
        for name, st in scores.items()
    }
    reference = analyses[REFERENCE].discovery.scores
    heads = chosen or _repair_heads(model, reference, repair_task, config)
    arms = {"chosen": heads}
    for draw in range(config.random_controls):
        arms[f"random_{draw}"] = random_heads_like(heads, model.geometry, config.seed + draw)
    positions = wrong_color_positions(repair_task)
    repairs = {}
    for done, (arm, arm_heads) in enumerate(arms.items(), start=1):
        repair = Repair(arm_heads, positions)
        repairs[arm] = repair_effects(model, repair_task, repair, config.effects(), log)
        if progress is not None:
            progress("repair", done, len(arms))
    summaries = {name: a.summary for name, a in analyses.items()}
    summary = {
        "tasks": summaries,
        "reference": REFERENCE,
        "stages_compared": compared,
        "control": CONTROL,
        "reuse": _reuse_summary(reuse.data),
        "repair": {
            "n": len(repair_task),
            **{arm: _effect_summary(arms[arm], e) for arm, e in repairs.items()},
        },
        **{
            k: summaries[REFERENCE][k]
            for k in ("accuracy", "logit_difference", "circuit", "faithfulness")
        },
    }
    labels = {name: heads.labels for name, heads in circuits.items()}
    return OverlapResult(analyses, compared, reuse, labels, arms, repairs, summary)


def _repair_heads(
    model: Model, scores: HeadScores, colours: CircuitTask, config: OverlapConfig
) -> HeadSet:
    """IOI's inhibition heads and a negative mover that demotes the colours it reads."""
    logits = scores.data[scores.data["stage"] == "logits"]
    copying = ov_copy_scores(model, HeadSet(logits["label"]), colours.choice_ids)
    return repair_heads(scores, copying, negative_rule=config.negative_rule)


def _effect_summary(heads: HeadSet, effects: Effects) -> dict[str, Any]:
    rows = effects.table.data.set_index("metric")
    keys = ("baseline", "intervened", "difference", "ci_low", "ci_high")
    return {
        "heads": heads.labels,
        **{
            metric: {**{k: float(rows.loc[metric, k]) for k in keys}, "warnings": row_warnings}
            for metric, row_warnings in rows["warnings"].items()
        },
    }


def _reuse_summary(table: pd.DataFrame) -> dict[str, Any]:
    return {
        f"{row.task}/{row.stage}": {
            "shared": list(row.shared),
            "shared_share": float(row.shared_share),
            "jaccard": float(row.jaccard),
        }
        for row in table.itertuples()
    }
