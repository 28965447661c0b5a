"""Attribution patching: a first-order estimate of activation patching for every head at once.

Nanda 2023 ("Attribution patching"), Syed et al. 2023 (arXiv 2310.10348). Patching head h's
z at position t from the clean to the corrupted run changes the logit difference by about

    delta[h, t] = (z_corrupt[h, t] - z_clean[h, t]) . dLD/dz[h, t]   (gradient at the clean run)

so one clean forward with one backward, plus the corrupted run's z, estimate all heads and
positions together. `dLD/dz` is the total derivative through every later layer; only the
gradients with respect to z are computed, none for weights. `score` is normalised like
activation and path patching: mean delta / (LD_corrupt - LD_clean), positive for heads whose
corruption lowers LD; per head it sums the positions.

`rank_correlation` reports Spearman's rho between this estimate and another per-head score
(activation patching), over the heads both tables hold.

Cost: one corrupted forward (no grad), one clean forward keeping activations for backward,
one backward to the z of every layer. Memory: the forward's activations for the whole
batch, plus both runs' z [layer, prompt, pos, head, d_head].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import Tensor

from circuits.path_patching import task_provenance
from circuits.tasks import CircuitTask, logit_difference
from interp.errors import InputError
from interp.hooks import head_output_hooks
from interp.models import Model
from interp.results import Bundle, HeadScores, ItemTable, head_frame

__all__ = ["Attribution", "attribution_patching", "rank_correlation"]

ANALYZER = "attribution_patching"


@dataclass(frozen=True)
class Attribution(Bundle):
    """Attribution patching estimates.

    Attributes:
        heads: one row per head; `score` (normalised), `delta` (mean estimated change in LD).
        positions: one row per (head, padded position): `position`, `score`, `delta`.
    """

    heads: HeadScores
    positions: ItemTable


def attribution_patching(model: Model, task: CircuitTask) -> Attribution:
    """Estimate every head's activation-patching effect from one forward and one backward.

    Example:
        >>> from interp.tiny_models import tiny_llama
        >>> from circuits.tiny_task import tiny_task
        >>> model = tiny_llama()
        >>> result = attribution_patching(model, tiny_task(model))
        >>> len(result.heads) == model.geometry.n_layers * model.geometry.n_heads
        True
    """
    z_corrupt: list[Tensor] = []

    def keep(_layer: int, z: Tensor) -> None:
        z_corrupt.append(z.detach())

    with torch.no_grad(), head_output_hooks(model.hf, keep):
        ld_corrupt = logit_difference(
            model.hf(**task.corrupted, use_cache=False, logits_to_keep=1).logits[:, -1], task
        )

    tracked: list[Tensor] = []

    def track(_layer: int, z: Tensor) -> Tensor:
        # z itself feeds the output projection, so dLD/dz flows through every later layer
        # (later heads included). Frozen weights leave nothing upstream in the graph: then
        # the first z becomes the graph's leaf.
        tracked.append(z if z.requires_grad else z.detach().requires_grad_(True))
        return tracked[-1]

    with torch.enable_grad(), head_output_hooks(model.hf, track):
        logits = model.hf(**task.clean, use_cache=False, logits_to_keep=1).logits[:, -1]
        ld_clean = logit_difference(logits, task)
        grads = torch.autograd.grad(ld_clean.sum(), tracked)
    # [layer, prompt, pos, head]: each prompt's own gradient (the sum's terms are independent).
    delta = torch.stack(
        [
            ((zc - z.detach()) * g).sum(-1)
            for zc, z, g in zip(z_corrupt, tracked, grads, strict=True)
        ]
    ).float()
    delta = delta.mean(1).cpu()  # [layer, pos, head]
    denominator = float((ld_corrupt.float().mean() - ld_clean.detach().float().mean()).cpu())
    provenance = task_provenance(model, task, ANALYZER, {})
    per_head = delta.sum(1).numpy().astype(np.float64)
    heads = HeadScores(head_frame({"score": per_head / denominator, "delta": per_head}), provenance)
    n_layers, n_pos, n_heads = delta.shape
    by_position = delta.permute(0, 2, 1).reshape(-1).numpy().astype(np.float64)
    frame = head_frame({"score": np.zeros((n_layers, n_heads))}).drop(columns="score")
    positions = pd.DataFrame(
        {
            **{c: np.repeat(frame[c].to_numpy(), n_pos) for c in frame.columns},
            "position": np.tile(np.arange(n_pos), n_layers * n_heads),
            "score": by_position / denominator,
            "delta": by_position,
        }
    )
    return Attribution(heads, ItemTable(positions, provenance))


def rank_correlation(estimate: HeadScores, reference: HeadScores, column: str = "score") -> float:
    """Spearman's rho between two per-head scores, over the heads both tables hold.

    Raises:
        InputError: fewer than three heads in common.
    """
    merged = estimate.per_head().merge(reference.per_head(), on=["layer", "head"])
    if len(merged) < 3:
        raise InputError(f"Need at least 3 heads in common to rank, got {len(merged)}.")
    rho = stats.spearmanr(merged[f"{column}_x"], merged[f"{column}_y"]).statistic
    return float(rho)
