"""Circuit discovery by staged path patching, and its faithfulness under mean ablation.

Discovery (Wang et al. 2022 §3; Merullo et al. 2024 §4): path patching runs stage by stage
(`circuits.path_patching.IOI_STAGES`), each stage's chosen heads being the next stage's
receivers: heads -> logits picks the name movers, -> their queries the S-inhibition heads,
-> those heads' values at S2 the induction and duplicate-token heads, -> the induction
heads' keys at S1+1 the previous-token heads. Per stage the top `per_stage` heads (Merullo:
top 2% of heads per stage) are chosen; the circuit is their union, capped at `max_heads`
by dropping the lowest stage-normalised scores (each stage's scores divided by its largest
magnitude, as Merullo normalises per task and stage).

Faithfulness (Wang et al. §4): F(C) is the mean logit difference when every head outside C
is mean-ablated: its z replaced by the mean of z over the reference distribution (default:
the task's corrupted prompts, Wang's p_ABC), taken per position. Reported as the share
F(C) / F(M) of the full model's F(M), and F(M \\ C) / F(M) for the circuit ablated; F of the
empty circuit is every head ablated.

Heads are ranked by |score| (Wang's circuit includes the negative name movers, which only a
magnitude ranking picks; Merullo does not say). Deviations, as options: `rank_by="score"`
keeps only heads that support the answer; `selection="top_fraction"` and
`"threshold"` choose over all stages' normalised scores at once; `means="all_positions"`
averages z over every real token instead of per position; `means="template"` per position
within each template (when one task mixes templates whose token layouts differ).
`refine` greedily drops heads by faithfulness on the discovery prompts.

Cost: discovery is four path-patching runs (see that module). Each faithfulness value is a
reference forward (the means, shared) and one clean forward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from circuits.path_patching import (
    IOI_STAGES,
    PathPatchingConfig,
    ioi_stage,
    path_patching,
    task_provenance,
)
from circuits.tasks import CircuitTask, logit_difference
from interp.config import Config, check_range
from interp.encoding import Encoding
from interp.errors import ConfigError, InputError
from interp.heads import Head, HeadSet
from interp.hooks import head_output_hooks
from interp.models import Model
from interp.results import Bundle, HeadScores, ItemTable
from interp.runs import WorkLog
from interp.work import Item, Row, Work

__all__ = [
    "Discovery",
    "DiscoveryConfig",
    "FaithfulnessConfig",
    "choose_circuit",
    "discover_ioi",
    "faithfulness",
    "mean_ablated_ld",
    "mean_z",
    "refine",
]

ANALYZER = "circuit_discovery"
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, kw_only=True)
class DiscoveryConfig(Config):
    """How heads are ranked and chosen.

    Attributes:
        stages: the IOI stages to run, in order.
        per_stage: heads chosen per stage; Merullo's top 2% of the model's heads when 0.
        max_heads: cap on the circuit (the union over stages).
        rank_by: "abs" (default: |score|, so heads that push against the answer count
            too, as Wang's negative name movers do) or "score" (only heads whose
            corruption lowers the logit difference).
        selection: "per_stage_top_k" (Merullo), "top_fraction" (`fraction` of all heads by
            stage-normalised score), "threshold" (normalised score above `threshold`).
        fraction: for "top_fraction".
        threshold: for "threshold".
        freeze_mlps: passed to path patching.
        batch_size: (sender, prompt) rows per path-patching forward.
    """

    stages: tuple[str, ...] = tuple(IOI_STAGES)
    per_stage: int = 0
    max_heads: int = 27
    rank_by: Literal["score", "abs"] = "abs"
    selection: Literal["per_stage_top_k", "top_fraction", "threshold"] = "per_stage_top_k"
    fraction: float = 0.1
    threshold: float = 0.1
    freeze_mlps: bool = False
    batch_size: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "per_stage", 0)
        check_range(self, "max_heads", 1)
        check_range(self, "fraction", 0.0, 1.0, strict_low=True)
        check_range(self, "batch_size", 1)
        unknown = [s for s in self.stages if s not in IOI_STAGES]
        if unknown or not self.stages or self.stages[0] != "logits":
            raise ConfigError(
                f"DiscoveryConfig.stages must start with 'logits' and use {list(IOI_STAGES)},"
                f" got {list(self.stages)}."
            )

    def heads_per_stage(self, n_heads: int) -> int:
        return self.per_stage or max(1, round(0.02 * n_heads))


@dataclass(frozen=True)
class Discovery(Bundle):
    """Staged path-patching scores and the circuit chosen from them.

    Attributes:
        scores: every stage's HeadScores stacked (`stage` column), with `normalised`.
        circuit: the chosen heads, one row each, with the stage that chose them.
    """

    scores: HeadScores
    circuit: HeadScores

    @property
    def heads(self) -> HeadSet:
        return HeadSet(zip(self.circuit.data["layer"], self.circuit.data["head"], strict=True))


def discover_ioi(
    model: Model,
    task: CircuitTask,
    config: DiscoveryConfig | None = None,
    *,
    progress: Progress | None = None,
    log: WorkLog | None = None,
) -> Discovery:
    """Run the IOI stages, each stage's chosen heads the next one's receivers; choose the circuit.

    `progress(stage, done, total)` is called after each chunk of senders. With a `log`
    (`interp.work.open_log`), each stage's scores are a work item keyed by the task, the
    stage and its receivers: a stopped run resumes after its last finished stage.
    """
    config = config or DiscoveryConfig()
    k = config.heads_per_stage(model.geometry.n_heads * model.geometry.n_layers)
    tables: list[pd.DataFrame] = []
    receivers: HeadSet | None = None
    for stage in config.stages:
        stage_config = ioi_stage(
            stage, receivers, freeze_mlps=config.freeze_mlps, batch_size=config.batch_size
        )

        def scored(configs: list[PathPatchingConfig], stage: str = stage) -> list[list[Row]]:
            bar = (lambda d, t: progress(stage, d, t)) if progress else None
            scores = path_patching(model, task, configs[0], progress=bar)
            return [scores.data.to_dict("records")]

        key = f"{task.name}/{stage}/{' '.join(receivers.labels) if receivers else '-'}"
        (rows,) = Work([Item(key, stage_config)], log).run(scored)
        table = _normalised(pd.DataFrame(rows), config.rank_by)
        tables.append(table)
        receivers = HeadSet(_top(table, k))
        if not receivers.layers or max(receivers.layers) == 0:
            break  # no sender has a path to receivers all in layer 0: the chain ends here
    stacked = pd.concat(tables, ignore_index=True)
    provenance = task_provenance(model, task, ANALYZER, config.to_dict())
    scores = HeadScores(stacked, provenance)
    return Discovery(scores, HeadScores(_choose(stacked, config, k), provenance))


def choose_circuit(scores: HeadScores, config: DiscoveryConfig, n_heads: int) -> HeadSet:
    """The circuit from stacked stage scores (`Discovery.scores`), per `config`'s selection.

    Args:
        scores: rows with `stage` and `score` (path patching's, any number of stages).
        config: selection rule, `rank_by`, `max_heads`.
        n_heads: the model's total heads (for Merullo's 2% per stage).
    """
    table = pd.concat(
        [
            _normalised(group, config.rank_by)
            for _, group in scores.data.groupby("stage", sort=False)
        ],
        ignore_index=True,
    )
    chosen = _choose(table, config, config.heads_per_stage(n_heads))
    return HeadSet(zip(chosen["layer"], chosen["head"], strict=True))


def _normalised(table: pd.DataFrame, rank_by: str) -> pd.DataFrame:
    """Add `normalised`: the ranking key divided by the stage's largest magnitude."""
    key = table["score"].abs() if rank_by == "abs" else table["score"]
    scale = float(table["score"].abs().max()) or 1.0
    return table.assign(normalised=(key / scale).to_numpy())


def _top(table: pd.DataFrame, k: int) -> list[Head]:
    ordered = table.sort_values(["normalised", "layer", "head"], ascending=[False, True, True])
    return [Head(int(r.layer), int(r.head)) for r in ordered.head(k).itertuples()]


def _choose(table: pd.DataFrame, config: DiscoveryConfig, k: int) -> pd.DataFrame:
    """Rows of the chosen heads (best stage per head), at most `max_heads`, best first."""
    if config.selection == "per_stage_top_k":
        ranked = table.sort_values(["normalised", "layer", "head"], ascending=[False, True, True])
        candidates = ranked.groupby("stage", sort=False).head(k)
    elif config.selection == "top_fraction":
        candidates = table.sort_values("normalised", ascending=False)
        n = max(1, round(config.fraction * table[["layer", "head"]].drop_duplicates().shape[0]))
        candidates = candidates.drop_duplicates(["layer", "head"]).head(n)
    else:
        candidates = table[table["normalised"] > config.threshold]
    best = candidates.sort_values(["normalised", "layer", "head"], ascending=[False, True, True])
    best = best.drop_duplicates(["layer", "head"]).head(config.max_heads)
    return best.reset_index(drop=True)


# ----------------------------------------------------------------------------------------
# Faithfulness


@dataclass(frozen=True, kw_only=True)
class FaithfulnessConfig(Config):
    """How heads outside the kept set are ablated.

    Attributes:
        means: "position" (Wang: mean z over the reference prompts at each padded position),
            "template" (per position within each template's rows), "all_positions" (one
            mean over every real token).
    """

    means: Literal["position", "template", "all_positions"] = "position"


def mean_z(
    model: Model,
    reference: Encoding,
    config: FaithfulnessConfig,
    templates: Sequence[str] = (),
) -> list[Tensor]:
    """Per layer, the mean z the ablation writes: [row or 1, pos or 1, head, d_head].

    Padding is left out of every mean. "template" needs one template per reference row
    and gives each row its own template's means.
    """
    mask = reference.attention_mask.to(torch.float32)  # [batch, pos]
    if config.means == "template" and len(templates) != mask.shape[0]:
        raise InputError(
            f"Per-template means need a template per reference row, got {len(templates)}"
            f" for {mask.shape[0]} rows."
        )
    group = _groups(templates if config.means == "template" else ["all"] * mask.shape[0])
    means: list[Tensor] = []

    def keep(_layer: int, z: Tensor) -> None:
        w = mask.to(z.device)[:, :, None, None]
        zw = z.float() * w
        if config.means == "all_positions":
            means.append((zw.sum((0, 1)) / w.sum((0, 1)))[None, None])
            return
        onehot = group.to(z.device)  # [group, batch]
        total = torch.einsum("gb,bphd->gphd", onehot, zw)
        count = torch.einsum("gb,bphd->gphd", onehot, w.expand_as(zw[..., :1]))
        per_group = total / count.clamp_min(1.0)
        means.append(per_group[onehot.argmax(0)])  # each row its group's means

    with torch.no_grad(), head_output_hooks(model.hf, keep):
        model.hf(**reference, use_cache=False, logits_to_keep=1)
    return means


def _groups(keys: Sequence[str]) -> Tensor:
    """[group, row] one-hot of rows by key, groups in first-seen order."""
    order = list(dict.fromkeys(keys))
    onehot = torch.zeros(len(order), len(keys))
    onehot[[order.index(k) for k in keys], torch.arange(len(keys))] = 1.0
    return onehot


def mean_ablated_ld(
    model: Model, task: CircuitTask, keep: HeadSet, means: list[Tensor]
) -> Float[Tensor, " prompt"]:
    """Per-prompt logit difference of the clean prompts with every head not in `keep` ablated.

    `means` from `mean_z` on the task's reference prompts. Keeping every head runs the
    plain model: no z is touched.
    """
    return _ablated_lds(model, task, [keep], means, batch_size=len(task))[0]


@torch.no_grad()
def _ablated_lds(
    model: Model, task: CircuitTask, sets: Sequence[HeadSet], means: list[Tensor], batch_size: int
) -> Float[Tensor, "set prompt"]:
    """Per kept set and prompt, the mean-ablated LD; several sets per forward (set-major rows)."""
    n = len(task)
    per_forward = max(1, batch_size // n)
    out = []
    for start in range(0, len(sets), per_forward):
        chunk = sets[start : start + per_forward]
        ablate = torch.stack([~heads.mask(model.geometry) for heads in chunk])  # [set, layer, head]
        rows = ablate.repeat_interleave(n, 0)  # [row, layer, head]

        def write(layer: int, z: Tensor, rows: Tensor = rows) -> Tensor | None:
            if not rows[:, layer].any():
                return None
            mean = means[layer].to(device=z.device, dtype=z.dtype)
            mean = mean.repeat(z.shape[0] // mean.shape[0], 1, 1, 1)
            where = rows[:, layer].to(z.device)[:, None, :, None]
            return torch.where(where, mean.expand_as(z), z)

        batch = {k: v.repeat(len(chunk), 1) for k, v in task.clean.items()}
        with head_output_hooks(model.hf, write):
            logits = model.hf(**batch, use_cache=False, logits_to_keep=1).logits[:, -1]
        out += [logit_difference(part, task).float().cpu() for part in logits.split(n)]
    return torch.stack(out)


def faithfulness(
    model: Model,
    task: CircuitTask,
    circuit: HeadSet,
    config: FaithfulnessConfig | None = None,
    *,
    reference: Encoding | None = None,
) -> ItemTable:
    """F(M), F(C), F(M \\ C) and F(empty), and each as a share of F(M).

    Args:
        model: the model.
        task: its clean prompts are scored.
        circuit: the kept heads.
        config: how means are taken.
        reference: the prompts the means come from (default: the task's corrupted
            prompts); the same shape as the task's for per-position means.

    Returns:
        ItemTable with one row per condition ("full", "circuit", "complement", "empty"):
        `n_heads` kept, `logit_difference` (mean), `share` (of the full model's).
    """
    config = config or FaithfulnessConfig()
    reference = task.corrupted if reference is None else reference
    if config.means != "all_positions" and reference.input_ids.shape != task.clean.input_ids.shape:
        raise InputError(
            f"Per-position means need reference prompts shaped like the task's"
            f" {tuple(task.clean.input_ids.shape)}, got {tuple(reference.input_ids.shape)}."
        )
    means = mean_z(model, reference, config, task.templates)
    everything = model.geometry.all_heads()
    kept = {
        "full": everything,
        "circuit": circuit,
        "complement": everything.difference(circuit),
        "empty": HeadSet(),
    }
    lds = {
        name: float(mean_ablated_ld(model, task, heads, means).mean())
        for name, heads in kept.items()
    }
    frame = pd.DataFrame(
        {
            "condition": list(kept),
            "n_heads": [len(h) for h in kept.values()],
            "logit_difference": list(lds.values()),
            "share": [ld / lds["full"] for ld in lds.values()],
        }
    )
    provenance = task_provenance(
        model, task, "faithfulness", {**config.to_dict(), "circuit": circuit.labels}
    )
    return ItemTable(frame, provenance)


def refine(
    model: Model,
    task: CircuitTask,
    candidates: HeadSet,
    max_heads: int,
    config: FaithfulnessConfig | None = None,
    *,
    batch_size: int = 512,
) -> tuple[HeadSet, list[float]]:
    """Greedy backward elimination: drop the head whose removal keeps the most F(C).

    A named deviation from path patching alone: starting from `candidates`, heads are
    dropped one at a time until `max_heads` remain, each time the one whose removal leaves
    the highest mean LD on `task` (the discovery prompts; never held-out ones). Returns the
    circuit and the kept share F(C)/F(M) after each drop. Cost: one mean-z forward, then
    per drop one forward of (circuit size x prompts) rows, `batch_size` rows at a time.
    """
    config = config or FaithfulnessConfig()
    means = mean_z(model, task.corrupted, config, task.templates)
    full = float(mean_ablated_ld(model, task, model.geometry.all_heads(), means).mean())
    current = candidates
    shares: list[float] = []
    while len(current) > max_heads:
        heads = list(current)
        trials = _ablated_lds(
            model, task, [current.difference([h]) for h in heads], means, batch_size
        ).mean(-1)
        best = int(torch.argmax(trials))  # first of equals: the lowest (layer, head)
        current = current.difference([heads[best]])
        shares.append(float(trials[best]) / full)
    return current, shares
