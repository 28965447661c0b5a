"""SAE circuit identification over seeds, scored against a reference circuit, in one call.

What `interp circuit sae` runs (`identify_circuit`): the reference circuit is given (a
`<task>_circuit` table of `analyse_circuit` on this model) or discovered here by staged path
patching on the task's prompts; every head's position-averaged output is collected once
for the clean prompts (positives) and their corruptions (negatives); O'Neill & Bui's scoring
(`circuits.sae_circuits.score_heads`) runs once per seed, each seed drawing its own training
prompts and SAE. The result holds the per-seed and mean node scores, the node and
edge-derived node ROC AUC per seed, the ROC curves, the summary and the figures. Method
notes: docs/methods.md §11.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from circuits.circuit_analysis import END_STAGES, CircuitConfig, Progress, staged_discovery
from circuits.circuit_task import CircuitTask
from circuits.path_patching import IOI_STAGES
from circuits.sae_circuits import (
    SAECircuitConfig,
    roc_auc,
    roc_points,
    score_heads,
    scores_provenance,
)
from interp.activations import Activations, collect_heads
from interp.effects import caveats
from interp.errors import InputError
from interp.heads import HeadSet
from interp.models import Model
from interp.results import HeadScores, ItemTable
from interp.runs import run_identity
from interp.work import Item, Row, Work, WorkFolder, for_stage, open_log

__all__ = ["SAEIdentification", "identify_circuit", "reference_heads"]


@dataclass(frozen=True)
class SAEIdentification:
    """What `identify_circuit` returns.

    Attributes:
        task: the task's name, the prefix of every table's name.
        circuit: the reference circuit.
        discovered: the circuit table when the reference was discovered here, else None.
        per_seed: node and edge-derived scores per (seed, head), with `in_circuit`.
        mean: the scores' mean over seeds per head (`score_std`: population std).
        aucs: node and edge-derived node ROC AUC per seed.
        curves: the node ROC curve of every seed (`run`, `fpr`, `tpr`, `auc`).
        summary: the numbers `summary.json` holds.
    """

    task: str
    circuit: HeadSet
    discovered: HeadScores | None
    per_seed: ItemTable
    mean: HeadScores
    aucs: ItemTable
    curves: pd.DataFrame
    summary: dict[str, Any]

    def tables(self) -> dict[str, HeadScores | ItemTable]:
        """Every table under the name the command saves it as."""
        found = {} if self.discovered is None else {f"{self.task}_circuit": self.discovered}
        return {
            **found,
            f"{self.task}_sae_nodes": self.per_seed,
            f"{self.task}_sae_nodes_mean": self.mean,
            f"{self.task}_sae_auc": self.aucs,
        }

    def summary_lines(self) -> list[str]:
        """The node AUC per seed and its spread, the edge-derived AUC and any warning."""
        summary = self.summary
        nodes, edges, seeds = summary["node_auc"], summary["edge_auc"], summary["seeds"]
        per_seed = ", ".join(f"{v:.3f}" for v in nodes["per_seed"])
        spread = f" ± {nodes['std']:.3f} (population std over seeds, ddof 0)" if seeds > 1 else ""
        lines = [
            f"{self.task}: node ROC AUC against the {len(summary['circuit'])}-head reference"
            f" circuit {nodes['mean']:.3f}{spread}; per seed {per_seed}",
            f"edge-derived node AUC {edges['mean']:.3f} (max {max(edges['per_seed']):.3f})",
        ]
        if summary["warnings"]:
            lines.append(f"  warning: {summary['warnings']}")
        return lines

    def figures(self) -> dict[str, Any]:
        """The ROC curves and a head map of the mean node score with the circuit marked."""
        from interp.figures import circuit_heatmaps, roc_curves

        seeds = self.summary["seeds"]
        title = f"{self.task}: SAE node scores vs path patching ({seeds} seed{'s' * (seeds > 1)})"
        return {
            f"{self.task}_sae_roc": roc_curves(self.curves, title),
            f"{self.task}_sae_nodes": circuit_heatmaps(
                {self.task: self.mean},
                {self.task: self.circuit.labels},
                f"{self.task}: SAE node score (mean over seeds); squares: reference circuit",
                label="node score",
            ),
        }


def reference_heads(model: Model, stored: HeadScores, task: str) -> HeadSet:
    """A stored reference circuit's heads, checked against the model (`task`: the command
    that makes one, named in the error)."""
    if stored.provenance.weights_hash != model.weights_hash:
        raise InputError(
            f"The reference circuit was found on {stored.provenance.model}, not on"
            f" {model.spec}: give one from `interp circuit {task}` on this model."
        )
    heads = HeadSet(zip(stored.data["layer"], stored.data["head"], strict=True))
    heads.mask(model.geometry)  # a head the model lacks is an error
    return heads


def identify_circuit(
    model: Model,
    task: CircuitTask,
    config: SAECircuitConfig | None = None,
    *,
    seeds: int = 1,
    reference: HeadSet | None = None,
    progress: Progress | None = None,
    folder: WorkFolder | None = None,
) -> SAEIdentification:
    """Score every head with an SAE per seed 0..seeds-1 against the reference circuit.

    `reference` is the circuit's heads (a stored one: `reference_heads`); default:
    discovered here, IOI's four stages or the stages read at the last token for other tasks.
    With `folder`, each finished seed is recorded in its work log, so a stopped run given
    the same folder resumes at the first seed it lacks (discovery and the head outputs,
    which every seed shares, are recomputed).
    """
    config = config or SAECircuitConfig()
    circuit, discovered = reference, None
    if circuit is None:
        stages = tuple(IOI_STAGES) if task.name == "ioi" else END_STAGES
        found = staged_discovery(model, task, CircuitConfig(stages=stages), progress)
        circuit, discovered = found.heads, found.circuit
    texts = [*task.prompts, *task.corrupted_prompts]
    acts = collect_heads(
        model,
        texts,
        batch_size=config.batch_size,
        progress=for_stage(progress, "head outputs"),
    )
    n_positive = len(task.prompts)
    identity = {
        **run_identity(scores_provenance(acts, n_positive, config)),
        "circuit": sorted(circuit.labels),
    }
    work = Work([Item(f"seed {seed}", seed) for seed in range(seeds)], open_log(folder, identity))
    done = [
        rows[0]
        for rows in work.run(
            lambda batch: [_seed_rows(acts, n_positive, config, circuit, s) for s in batch],
            for_stage(progress, "SAE seeds"),
        )
    ]
    provenance = scores_provenance(acts, n_positive, replace(config, seed=seeds - 1))
    per_seed = pd.concat([pd.DataFrame(row["nodes"]) for row in done], ignore_index=True)
    per_seed["in_circuit"] = per_seed["label"].isin(circuit.labels)
    table = pd.DataFrame([row["auc"] for row in done])
    summary = {
        "task": task.name,
        "n": len(task),
        "seeds": seeds,
        "circuit": sorted(circuit.labels),
        "node_auc": _spread(table["node_auc"]),
        "edge_auc": _spread(table["edge_auc"]),
        "config": config.to_dict(),
        "reference": "discovered" if reference is None else "given",
        "warnings": caveats(seeds=seeds),
    }
    return SAEIdentification(
        task.name,
        circuit,
        discovered,
        ItemTable(per_seed, provenance),
        HeadScores(_mean(per_seed, circuit), provenance),
        ItemTable(table, provenance),
        pd.concat([pd.DataFrame(row["curve"]) for row in done], ignore_index=True),
        summary,
    )


def _seed_rows(
    acts: Activations, n_positive: int, config: SAECircuitConfig, circuit: HeadSet, seed: int
) -> list[Row]:
    """One seed's scoring as one work-log row: its node table, ROC AUCs and ROC curve."""
    found = score_heads(acts, n_positive, replace(config, seed=seed))
    node = roc_auc(found.nodes, circuit)
    edge_scores = found.edge_nodes.data["score"].to_numpy()
    nodes = found.nodes.data.assign(seed=seed, edge_score=edge_scores)
    curve = roc_points(found.nodes, circuit).assign(run=f"seed {seed}", auc=node)
    auc = {"seed": seed, "node_auc": node, "edge_auc": roc_auc(found.edge_nodes, circuit)}
    return [{"nodes": nodes.to_dict("list"), "auc": auc, "curve": curve.to_dict("list")}]


def _mean(per_seed: pd.DataFrame, circuit: HeadSet) -> pd.DataFrame:
    mean = (
        per_seed.groupby(["layer", "head", "label"], sort=False)
        .agg(
            score=("score", "mean"),
            score_std=("score", lambda v: float(np.std(v, ddof=0))),
            edge_score=("edge_score", "mean"),
        )
        .reset_index()
    )
    mean["in_circuit"] = mean["label"].isin(circuit.labels)
    return mean


def _spread(values: pd.Series) -> dict[str, Any]:
    """Per seed, mean and population std (ddof 0, as the reference reports)."""
    array = values.to_numpy()
    std = float(np.std(array, ddof=0))
    return {"per_seed": array.tolist(), "mean": float(array.mean()), "std": std, "ddof": 0}
