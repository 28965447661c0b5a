"""Circuit reuse: how many heads two tasks' circuits share, stage by stage (Merullo et al. 2024).

Merullo, Eickhoff and Pavlick ("Circuit Component Reuse Across Tasks in Transformer
Language Models", ICLR 2024) score every head per stage of a circuit (path patching to the
logits, to the mover heads' queries, ...), take each stage's top 2% of heads per task, and
call the union of those per-stage top sets the task's circuit. Two tasks share a head at a
stage when it is in both tasks' top set of that stage. Their IOI vs Colored Objects figure
is 25 of 32 heads (78%); unrelated control tasks share 17-25%.

`stage_circuits` picks the per-stage top sets from per-stage `HeadScores`;
`overlap` compares a reference task with each other task (one of them the control) and
returns a tidy table, one row per (task, stage) plus an "all" row per task:

- `shared`: heads in both tasks' top set of the stage ("all": the union over stages).
- `shared_share` = |shared| / |reference's top set| ("all": over the union of the
  reference's per-stage top sets, its circuit): the paper's measure.
- `jaccard` = |A ∩ B| / |A ∪ B| of the two top sets ("all": of the two circuits, so a head
  both tasks use at different stages counts here but not in `shared`).

Ranking follows `circuits.discovery`: by |score| by default, which keeps negative movers
(IOI's 19.1 in GPT2-medium, the most important head for the logit difference, whose score
has the other sign), `rank_by="score"` by the score itself. The paper does not say which.
The top set has max(1, round(top_fraction x all heads)) heads, the model's head count read
from the largest stage table (later stages score only the heads up to their lowest receiver layer).
Cost: sorting [layer, head] tables; no model runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from interp.config import Config, check_range
from interp.errors import InputError
from interp.heads import Head, HeadSet
from interp.results import HeadScores, ItemTable, Provenance, hash_inputs

ANALYZER = "circuit_reuse"
ALL_STAGES = "all"

# task -> stage -> per-head scores of that stage
StageScores = Mapping[str, HeadScores]


@dataclass(frozen=True, kw_only=True)
class ReuseConfig(Config):
    """How each stage's top set is chosen.

    Attributes:
        top_fraction: share of all the model's heads kept per stage (Merullo: 2%, about 8
            of GPT2-medium's 384; 5 of a 270-head model).
        rank_by: "abs" (|score|, default) or "score", as `circuits.discovery`.
    """

    top_fraction: float = 0.02
    rank_by: Literal["score", "abs"] = "abs"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "top_fraction", 0.0, 1.0, strict_low=True)


def top_heads(scores: HeadScores, config: ReuseConfig, n_heads: int) -> HeadSet:
    """The stage's top max(1, round(top_fraction * n_heads)) heads, ties by layer, head.

    Args:
        scores: one stage's per-head scores.
        config: the top-set rule.
        n_heads: all of the model's heads (the 2% is of these, not of the stage's senders).
    """
    table = scores.per_head()
    k = max(1, round(config.top_fraction * n_heads))
    key = table["score"].abs() if config.rank_by == "abs" else table["score"]
    ranked = table.assign(_key=key).sort_values(
        ["_key", "layer", "head"], ascending=[False, True, True]
    )
    return HeadSet(Head(int(r.layer), int(r.head)) for r in ranked.head(k).itertuples())


def stage_circuits(
    stages: StageScores, config: ReuseConfig | None = None, n_heads: int | None = None
) -> dict[str, HeadSet]:
    """Each stage's top set of one task; their union is the task's circuit.

    `n_heads` defaults to the model's head count read from the largest stage table.
    """
    if not stages:
        raise InputError("A task's circuit needs the head scores of at least one stage.")
    config = config or ReuseConfig()
    n_heads = n_heads or _model_heads(stages.values())
    return {stage: top_heads(scores, config, n_heads) for stage, scores in stages.items()}


def _model_heads(tables: Iterable[HeadScores]) -> int:
    """layers x heads of the largest table (the logits stage scores every head)."""
    return max((int(t.data["layer"].max()) + 1) * (int(t.data["head"].max()) + 1) for t in tables)


def circuit_of(per_stage: Mapping[str, HeadSet]) -> HeadSet:
    """The circuit: the union of the per-stage top sets."""
    return HeadSet(h for heads in per_stage.values() for h in heads)


def _row(task: str, stage: str, ref: HeadSet, other: HeadSet, shared: HeadSet) -> dict:
    both, union = HeadSet(h for h in ref if h in other), ref.union(other)
    return {
        "task": task,
        "stage": stage,
        "n_reference": len(ref),
        "n_task": len(other),
        "n_shared": len(shared),
        "shared": shared.labels,
        "shared_share": len(shared) / len(ref) if len(ref) else np.nan,
        "jaccard": len(both) / len(union) if len(union) else np.nan,
    }


def overlap(
    reference: str,
    scores: Mapping[str, StageScores],
    config: ReuseConfig | None = None,
    controls: tuple[str, ...] = (),
) -> ItemTable:
    """Per-stage overlap of `reference`'s circuit with every other task's.

    Args:
        reference: the task the others are compared with (e.g. "ioi").
        scores: task -> stage -> HeadScores; every task must score the same stages.
        config: the top-set rule.
        controls: tasks to mark as controls (`control` column), e.g. an unrelated task.

    Returns:
        ItemTable with task, stage, control, n_reference, n_task, n_shared, shared (labels),
        shared_share, jaccard; one row per (other task, stage) and an "all" row per task.

    Example:
        >>> from interp.results import HeadScores, Provenance
        >>> s = HeadScores.from_matrix(np.eye(3), Provenance("tiny", "abc", "test", {}, "h", 2))
        >>> table = overlap("a", {"a": {"logits": s}, "b": {"logits": s}})
        >>> table.data[["task", "stage", "shared_share"]].values.tolist()
        [['b', 'logits', 1.0], ['b', 'all', 1.0]]
    """
    config = config or ReuseConfig()
    if reference not in scores:
        raise InputError(f"No scores for the reference task {reference!r}: got {sorted(scores)}.")
    unknown = set(controls) - set(scores)
    if unknown:
        raise InputError(f"Control tasks {sorted(unknown)} have no scores: got {sorted(scores)}.")
    stages = list(scores[reference])
    for task, per_stage in scores.items():
        if list(per_stage) != stages:
            raise InputError(
                f"Task {task!r} scores stages {list(per_stage)}, {reference!r} scores {stages}:"
                " compare the same stages."
            )
    n_heads = _model_heads(t for per_stage in scores.values() for t in per_stage.values())
    sets = {task: stage_circuits(st, config, n_heads) for task, st in scores.items()}
    ref = sets[reference]
    rows = []
    for task, other in sets.items():
        if task == reference:
            continue
        shared_by_stage = {s: HeadSet(h for h in ref[s] if h in other[s]) for s in stages}
        rows += [_row(task, s, ref[s], other[s], shared_by_stage[s]) for s in stages]
        rows.append(
            _row(
                task,
                ALL_STAGES,
                circuit_of(ref),
                circuit_of(other),
                circuit_of(shared_by_stage),
            )
        )
    table = pd.DataFrame(rows)
    table.insert(2, "control", table["task"].isin(controls))
    first = next(iter(scores[reference].values())).provenance
    provenance = Provenance(
        model=first.model,
        weights_hash=first.weights_hash,
        dtype=first.dtype,
        placement=first.placement,
        analyzer=ANALYZER,
        config={**config.to_dict(), "reference": reference, "controls": list(controls)},
        inputs_hash=hash_inputs(
            {
                task: {
                    s: [v.provenance.inputs_hash, v.data["score"].tolist()] for s, v in st.items()
                }
                for task, st in scores.items()
            }
        ),
        n_inputs=len(scores),
    )
    return ItemTable(table, provenance)
