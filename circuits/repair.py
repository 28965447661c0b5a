"""Circuit-reuse repair: make chosen heads attend from the final token to given positions.

Merullo et al. (ICLR 2024, §5) repair GPT2-medium on Colored Objects with IOI's circuit:
the final-token attention row of the inhibition heads (12.3, 13.4, 13.13) and/or the
negative mover (19.1) is set to 1/2 on each of the two *wrong* listed colours and 0
elsewhere, post-softmax. The heads then suppress the wrong colours as they suppress the
subject in IOI; accuracy rose from 49.6% to 93.7% with both edits.

`Repair(heads, positions)` does this for any heads and per-row key positions: in every
selected head the last query row (the last position of the forward, where left-padded
prompts all end) becomes uniform over that row's `positions`, and every other row is left
as the model computed it. It is an `AttentionEdit` (prefill only), so rows sum to 1 and the
identity arm runs the same explicit kernel. Positions are in the padded coordinates of the
batch the repair runs on (a `CircuitTask`'s `positions`), so one `Repair` belongs to one
batch; `select(rows)` gives the repair of some of its rows (`interp.interventions.base.PerRow`).

`wrong_color_positions(task)` gives a Colored Objects task's two wrong listed colours per
row; `repair_effects` measures a repair on a task through `interp.effects.compare` (paired
bootstrap intervals): accuracy among the listed colours and the logit difference. Cost:
two forwards of the task; the edited layers run explicit attention.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor

from circuits.circuit_task import CircuitTask
from circuits.metrics import accuracy, last_logits, logit_difference
from interp.effects import Effects, EffectsConfig, Score, measure_arms
from interp.encoding import Encoding
from interp.errors import HookError, InputError
from interp.heads import HeadGeometry, HeadSet
from interp.hooks import AttentionRows
from interp.interventions.attention_edit import AttentionEdit
from interp.interventions.base import Intervention, for_rows, tensor_digest
from interp.layouts import ov_path
from interp.models import Model
from interp.results import EffectTable, HeadScores, ItemTable, Provenance, hash_inputs
from interp.runs import run_identity
from interp.work import Item, WorkFolder

ANALYZER = "circuit_repair"
ARMS = ("baseline", "intervened")
METRICS = ("accuracy", "logit_difference")


class _FinalRowOnto:
    """The edit function: the last query row of each selected head -> 1 on its row's positions.

    AttentionEdit renormalises the row to 1/k on each of the k positions.
    """

    def __init__(self, positions: Int[Tensor, "batch k"], digest: str) -> None:
        self.positions = positions
        self.digest = digest

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _FinalRowOnto) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def __call__(self, rows: AttentionRows, index: Tensor) -> Tensor:
        probs = rows.probs[:, index]  # [batch, head, query, key]
        final = rows.query_positions == rows.n_keys - 1  # [query]: the forward's last row
        if not final.any():
            return probs
        batch, n_keys = probs.shape[0], probs.shape[-1]
        positions = self.positions.to(probs.device)
        if positions.shape[0] != batch:
            raise HookError(
                f"Repair positions are for {positions.shape[0]} rows, the forward has {batch}:"
                " build the repair for this batch (Repair.select for some of its rows)."
            )
        if int(positions.max()) >= n_keys:
            raise InputError(
                f"Repair position {int(positions.max())} is past the prompt's {n_keys} tokens."
            )
        visible = rows.visible[:, final][:, -1].gather(1, positions)  # [batch, k]
        if not bool(visible.all()):
            row = int((~visible).any(1).nonzero()[0])
            raise InputError(
                f"Repair positions {positions[row].tolist()} of row {row} include padding or"
                " future tokens: give positions inside the prompt, in padded coordinates."
            )
        target = torch.zeros(batch, n_keys, device=probs.device)
        target.scatter_(1, positions, 1.0)
        edited = probs.clone()
        edited[:, :, final] = target[:, None, None, :].expand(-1, len(index), int(final.sum()), -1)
        return edited


@dataclass(frozen=True, eq=False)
class Repair:
    """Set `heads`' final-position attention uniform over each row's `positions`.

    Attributes:
        heads: query heads to edit: a HeadSet, labels ("L12H3,L13H4") or (layer, head) pairs.
        positions: [batch, k] key positions per batch row, in the padded coordinates of the
            batch it runs on (Colored Objects: the two wrong listed colours).

    Example:
        >>> import torch
        >>> from interp.tiny_models import tiny_llama
        >>> model = tiny_llama()
        >>> batch = model.encode(["The red cup and the blue pen."])
        >>> with Repair("L1H0", torch.tensor([[4, 17]])).applied(model):
        ...     logits = model.hf(**batch).logits
    """

    heads: HeadSet
    positions: Tensor
    _digest: dict[str, Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", HeadSet(self.heads))
        positions = torch.as_tensor(self.positions)
        if (
            positions.ndim != 2
            or positions.shape[1] < 1
            or positions.dtype not in (torch.int32, torch.int64)
            or bool((positions < 0).any())
        ):
            raise InputError(
                "Repair.positions must be a [batch, k >= 1] tensor of non-negative integer"
                f" positions, got shape {tuple(positions.shape)} ({positions.dtype})."
            )
        if not len(self.heads):
            raise InputError("Repair needs at least one head.")
        object.__setattr__(self, "positions", positions.detach().long().cpu().clone())
        object.__setattr__(self, "_digest", tensor_digest(self.positions))

    def edit(self) -> AttentionEdit:
        """The AttentionEdit this repair is: prefill rows, renormalised."""
        fn = _FinalRowOnto(self.positions, self._digest["sha256"])
        return AttentionEdit(self.heads, fn, phase="prefill")

    def select(self, rows: Sequence[int]) -> Repair:
        """The repair of batch rows `rows` (to run a batch in slices)."""
        return Repair(self.heads, self.positions[list(rows)])

    def identity(self) -> Intervention:
        """The same heads through the same explicit kernel, rows unchanged."""
        return self.edit().identity()

    def to_dict(self) -> dict[str, Any]:
        """The reproducible record (positions by their digest)."""
        return {
            "intervention": "Repair",
            "heads": self.heads.labels,
            "row": "final",
            "positions": self._digest,
        }

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and self.heads == other.heads  # type: ignore[attr-defined]
            and self._digest == other._digest  # type: ignore[attr-defined]
        )

    def __hash__(self) -> int:
        return hash((self.heads, self._digest["sha256"]))

    @contextmanager
    def applied(self, model: Model) -> Iterator[None]:
        with self.edit().applied(model):
            yield


NegativeRule = Literal["demoting", "most_negative"]


@torch.no_grad()
def ov_copy_scores(model: Model, heads: HeadSet, token_ids: Tensor) -> dict[str, float]:
    """Per head, whether its OV circuit promotes (> 0) or demotes (< 0) the tokens it reads.

    The repair makes a head read chosen tokens (the wrong colours); it helps only if the
    head's output lowers their logits, as Merullo's 19.1 demotes the subject. For each token
    t of `token_ids`: the embedding through the head's layer's input norm, its value and
    output projections, the final norm and the unembedding, read at `token_ids`; the score
    is the mean over t of logit(t) minus the mean logit of the other tokens (Wang et al.'s
    copying test on the raw embedding, a toolkit choice; no MLP is applied first).
    Llama-layout models (input_layernorm, v_proj, o_proj, model.norm; `interp.layouts.ov_path`).
    """
    ids = torch.as_tensor(token_ids).unique().to(model.device)
    if len(ids) < 2:
        raise InputError(f"The OV copying test needs two or more tokens, got {len(ids)}.")
    geometry = model.geometry
    embedded = model.hf.get_input_embeddings().weight[ids].float()
    unembed = model.hf.get_output_embeddings().weight[ids].float()  # [token, d_model]
    n = len(ids)
    off = ~torch.eye(n, dtype=torch.bool, device=ids.device)
    out: dict[str, float] = {}
    for head in heads:
        ov = ov_path(model.hf, head.layer)
        x = ov.input_norm(embedded.to(ov.value_projection.weight.dtype))
        kv = geometry.kv_head(head.head)
        d = geometry.d_head
        values = ov.value_projection(x)[:, kv * d : (kv + 1) * d]
        written = values @ ov.output_projection.weight[:, head.head * d : (head.head + 1) * d].T
        logits = ov.final_norm(written).float() @ unembed.T  # [source token, read token]
        others = (logits * off).sum(1) / (n - 1)
        out[head.label] = float((logits.diagonal() - others).mean())
    return out


def repair_heads(
    scores: HeadScores,
    copy_scores: dict[str, float] | None = None,
    *,
    inhibition: int = 3,
    negative: int = 1,
    inhibition_stage: str = "name_mover_queries",
    logits_stage: str = "logits",
    negative_rule: NegativeRule = "demoting",
) -> HeadSet:
    """IOI's inhibition and negative-mover heads from its staged path-patching scores.

    Merullo et al. repair with GPT2-medium's inhibition heads (path patching to the name
    movers' queries) and its negative mover 19.1, which reads S2 and demotes it. On another
    model: the top `inhibition` heads by score of `inhibition_stage`, and `negative` heads
    of `logits_stage`. `negative_rule="demoting"` (default) takes, among the heads whose OV
    circuit demotes what they read (`copy_scores` < 0, `ov_copy_scores`), those with the
    largest |score|: 19.1 raises the logit difference and a Wang negative name mover lowers
    it, and both demote; a head that lowers it by copying S would make the repair worse.
    `"most_negative"` (the toolkit's earlier rule) takes the most negative scores, no OV check.

    Raises:
        InputError: a stage is missing from `scores`, or "demoting" without `copy_scores`.
    """
    if negative_rule not in ("demoting", "most_negative"):
        raise InputError(
            f"negative_rule must be 'demoting' or 'most_negative', got {negative_rule!r}."
        )
    stages = set(scores.data.get("stage", ()))
    missing = {inhibition_stage, logits_stage} - stages
    if missing:
        raise InputError(
            f"Repair heads need path-patching stages {sorted(missing)}; the scores have"
            f" {sorted(stages)}."
        )
    if negative_rule == "demoting" and copy_scores is None:
        raise InputError("negative_rule='demoting' needs the heads' OV copy scores.")
    table = scores.data
    inhibitors = table[table["stage"] == inhibition_stage].sort_values(
        ["score", "layer", "head"], ascending=[False, True, True]
    )
    movers = table[table["stage"] == logits_stage]
    if negative_rule == "demoting":
        assert copy_scores is not None
        movers = movers[movers["label"].map(lambda label: copy_scores.get(label, 0.0) < 0)]
        movers = movers.assign(key=-movers["score"].abs())
    else:
        movers = movers.assign(key=movers["score"])
    movers = movers.sort_values(["key", "layer", "head"])

    def top(rows: pd.DataFrame, k: int) -> list[tuple[int, int]]:
        return [(int(r.layer), int(r.head)) for r in rows.head(k).itertuples()]

    return HeadSet(top(inhibitors, inhibition) + top(movers, negative))


def random_heads_like(heads: HeadSet, geometry: HeadGeometry, seed: int) -> HeadSet:
    """Per layer of `heads`, as many of that layer's other heads, drawn uniformly (seeded).

    The control for a repair: an effect that random heads of the same layers also give is
    not the chosen heads' doing.
    """
    rng = np.random.default_rng(seed)
    drawn: list[tuple[int, int]] = []
    for layer in heads.layers:
        mine = heads.heads_in(layer)
        pool = [h for h in range(geometry.n_heads) if h not in mine]
        if len(pool) < len(mine):
            raise InputError(f"Layer {layer} holds too few other heads to draw {len(mine)}.")
        drawn += [(layer, pool[int(i)]) for i in rng.choice(len(pool), len(mine), replace=False)]
    return HeadSet(drawn)


def wrong_color_positions(task: CircuitTask) -> Int[Tensor, "batch 2"]:
    """Per row, the positions of the two listed colours that are not the answer.

    For a Colored Objects task: its positions "C1", "C2", "C3" are the query's listed
    colours and each row's family ("C2") names the asked one.

    Raises:
        InputError: the task has no listed-colour positions or families.
    """
    names = ("C1", "C2", "C3")
    if not set(names) <= set(task.positions) or not set(task.families) <= set(names):
        raise InputError(
            f"The repair's positions need a Colored Objects task (positions C1-C3 and the"
            f" asked colour per row), got task {task.name!r} with positions"
            f" {sorted(task.positions)}."
        )
    listed = torch.stack([task.positions[name] for name in names], 1)  # [batch, 3]
    keep = torch.tensor([[name != family for name in names] for family in task.families])
    return listed[keep].reshape(len(task), 2)


def repair_effects(
    model: Model,
    task: CircuitTask,
    repair: Repair,
    config: EffectsConfig | None = None,
    folder: WorkFolder | None = None,
) -> Effects:
    """The repair's effect on the task's accuracy and logit difference, with intervals.

    The baseline arm is `repair.identity()` (same heads, same explicit kernel, rows
    unchanged), so only the edit shows. Accuracy is `circuits.metrics.accuracy` (the answer
    above the other listed choices), the logit difference logit(answer) - logit(wrong).
    With `folder` (a folder, or a log shared by several repairs: the items are keyed by the
    repair) each finished batch is recorded, and a stopped run resumes (`interp.work`).

    Returns:
        Effects: one EffectTable row per metric ("accuracy", "logit_difference") with
        paired bootstrap intervals (`interp.effects.compare`), and per-item scores.

    Raises:
        InputError: the repair has not one row of positions per prompt.
    """
    config = config or EffectsConfig()
    if repair.positions.shape[0] != len(task):
        raise InputError(
            f"The repair has positions for {repair.positions.shape[0]} prompts, the task"
            f" {task.name!r} has {len(task)}."
        )

    def scored(rows: list[int], arm: Intervention) -> list[dict[str, float]]:
        """Both metrics of rows start..stop-1 (padded width kept: positions stay put)."""
        start, stop = rows[0], rows[-1] + 1
        part = Encoding(task.clean.input_ids[start:stop], task.clean.attention_mask[start:stop])
        with for_rows(arm, rows).applied(model):
            logits = last_logits(model, part, batch_size=len(rows))
        answers = task.select(slice(start, stop))  # only its answer and choice ids are read
        correct = accuracy(logits, answers).float().numpy()
        difference = logit_difference(logits, answers).float().numpy()
        return [
            {"accuracy": float(a), "logit_difference": float(d)}
            for a, d in zip(correct, difference, strict=True)
        ]

    provenance = Provenance(
        **model.provenance_fields(),
        analyzer=ANALYZER,
        config={**config.to_dict(), "task": task.config, "intervention": repair.to_dict()},
        inputs_hash=task.inputs_hash(),
        n_inputs=len(task),
    )
    key = f"{ANALYZER}/{hash_inputs(repair.to_dict())[:16]}"
    measured = measure_arms(
        [Item(f"{key}/{row}", row) for row in range(len(task))],
        [repair],
        scored,
        [Score("accuracy"), Score("logit_difference")],
        config,
        folder=folder,
        identity=run_identity(provenance),
    )
    per_item = measured.per_item
    items = pd.DataFrame(
        {
            "task": task.name,
            "item": per_item["item"],
            "prompt": task.prompts,
            **{
                f"{arm}_{name}": per_item[f"{arm}_{name}"].astype(np.float32)  # the metrics' dtype
                for arm in ARMS
                for name in METRICS
            },
        }
    )
    rows = measured.summary.assign(task=task.name)
    rows = rows[["task", *(c for c in rows if c != "task")]]
    return Effects(EffectTable(rows, provenance), ItemTable(items, provenance))
