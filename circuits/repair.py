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
batch; `rows(start, stop)` gives the repair of a slice of it.

`repair_effects` measures it on a task through `interp.effects.compare` (paired bootstrap
intervals): accuracy among the listed choices (argmax over their logits at the last
position) and the task's logit difference. Cost: the edited layers run explicit attention;
two forwards of the task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.effects import Effects, EffectsConfig, compare
from interp.encoding import Encoding
from interp.errors import HookError, InputError
from interp.heads import HeadSet
from interp.hooks import AttentionRows
from interp.interventions.attention_edit import AttentionEdit
from interp.interventions.base import Intervention, tensor_digest
from interp.models import Model
from interp.results import EffectTable, ItemTable, Provenance, hash_inputs

ANALYZER = "circuit_repair"


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
                " build the repair for this batch (Repair.rows for a slice)."
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
        >>> from tests.tiny import tiny_llama
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

    def rows(self, start: int, stop: int) -> Repair:
        """The repair of batch rows start..stop-1 (to run a batch in slices)."""
        return Repair(self.heads, self.positions[start:stop])

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


@torch.no_grad()
def last_logits(
    model: Model,
    encoding: Encoding,
    intervention: Callable[[int, int], Intervention],
    batch_size: int,
) -> Float[Tensor, "batch vocab"]:
    """Last-position logits of a left-padded batch, each slice under `intervention(start, stop)`."""
    out = []
    for start in range(0, encoding.input_ids.shape[0], batch_size):
        stop = min(start + batch_size, encoding.input_ids.shape[0])
        rows = Encoding(encoding.input_ids[start:stop], encoding.attention_mask[start:stop])
        inputs = {k: v.to(model.device) for k, v in rows.items()}
        with intervention(start, stop).applied(model):
            out.append(model.hf(**inputs, logits_to_keep=1).logits[:, -1].float().cpu())
    return torch.cat(out)


def choice_accuracy(
    logits: Float[Tensor, "batch vocab"],
    choices: Int[Tensor, "batch n"],
    answers: Int[Tensor, " batch"],
) -> np.ndarray:
    """[batch] 1.0 where the answer has the highest logit among the row's listed choices."""
    picked = choices.gather(1, logits.gather(1, choices).argmax(1, keepdim=True))[:, 0]
    return (picked == answers).float().numpy()


def repair_effects(
    model: Model,
    encoding: Encoding,
    answers: Int[Tensor, " batch"],
    wrong: Int[Tensor, " batch"],
    choices: Int[Tensor, "batch n"],
    repair: Repair,
    *,
    task_name: str,
    config: EffectsConfig | None = None,
) -> Effects:
    """The repair's effect on accuracy among `choices` and on logit(answer) - logit(wrong).

    The baseline arm is `repair.identity()` (same explicit kernel, rows unchanged), so only
    the edit shows as an effect.

    Returns:
        Effects: one EffectTable row per metric ("choice_accuracy", "logit_difference") with
        paired bootstrap intervals, and the per-item scores.
    """
    config = config or EffectsConfig()
    n = encoding.input_ids.shape[0]
    if repair.positions.shape[0] != n or not (len(answers) == len(wrong) == len(choices) == n):
        raise InputError(
            f"repair_effects needs one answer, wrong token, choice row and repair row per prompt"
            f" ({n} prompts)."
        )
    if not bool((choices == answers[:, None]).any(1).all()):
        raise InputError("Every row's answer must be one of its listed choices.")
    base = last_logits(
        model, encoding, lambda a, b: repair.rows(a, b).identity(), config.batch_size
    )
    edited = last_logits(model, encoding, repair.rows, config.batch_size)

    def gap(logits: Tensor) -> np.ndarray:
        return (logits.gather(1, answers[:, None]) - logits.gather(1, wrong[:, None]))[:, 0].numpy()

    scores = {
        "choice_accuracy": (
            choice_accuracy(base, choices, answers),
            choice_accuracy(edited, choices, answers),
        ),
        "logit_difference": (gap(base), gap(edited)),
    }
    rows = [{"task": task_name, **compare(b, a, name, config)} for name, (b, a) in scores.items()]
    items = pd.DataFrame(
        {
            "task": task_name,
            "item": np.arange(n),
            **{f"baseline_{k}": v[0] for k, v in scores.items()},
            **{f"intervened_{k}": v[1] for k, v in scores.items()},
        }
    )
    provenance = Provenance(
        model=model.spec,
        weights_hash=model.weights_hash,
        analyzer=ANALYZER,
        config={**config.to_dict(), "intervention": repair.to_dict()},
        inputs_hash=hash_inputs([encoding.input_ids.tolist(), answers.tolist(), wrong.tolist()]),
        n_inputs=n,
    )
    return Effects(EffectTable(pd.DataFrame(rows), provenance), ItemTable(items, provenance))
