"""Attribution patching equals the exact first-order estimate; rank correlation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from circuits.attribution import attribution_patching, rank_correlation
from circuits.tasks import logit_difference
from circuits.tiny_task import tiny_task
from interp.errors import InputError
from interp.results import HeadScores, head_frame
from tests.tiny import tiny_llama


def _directional_derivative(model, task, layer, head, position) -> float:
    """d mean LD / d alpha at 0, with z[layer, :, position, head] = clean + alpha (corrupt - clean).

    The exact derivative by autograd through a scalar alpha, with a hand-built pre-hook on
    the output projection (no z leaves, gradients through every layer).
    """
    n_heads = model.geometry.n_heads
    o_proj = model.hf.model.layers[layer].self_attn.o_proj
    seen = {}

    def grab(args):
        return args[0].view(*args[0].shape[:2], n_heads, -1)

    with torch.no_grad():
        for name, encoding in (("clean", task.clean), ("corrupt", task.corrupted)):
            handle = o_proj.register_forward_pre_hook(
                lambda _m, args, name=name: seen.__setitem__(name, grab(args).clone())
            )
            model.hf(**encoding)
            handle.remove()
    step = seen["corrupt"][:, position, head] - seen["clean"][:, position, head]
    alpha = torch.zeros((), requires_grad=True)

    def shift(_module, args):
        z = grab(args)
        moved = z[:, position, head] + alpha * step
        return (_put(z, position, head, moved).flatten(2),)

    handle = o_proj.register_forward_pre_hook(shift)
    try:
        ld = logit_difference(model.hf(**task.clean).logits[:, -1], task).mean()
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(ld, alpha)
    return float(grad)


def _put(z, position, head, value):
    """z with z[:, position, head] = value, out of place (keeps the graph)."""
    mask = torch.zeros(z.shape[1:3], dtype=torch.bool)
    mask[position, head] = True
    return torch.where(mask[None, :, :, None], value[:, None, None, :], z)


def test_equals_exact_gradient_estimate() -> None:
    model = tiny_llama()
    task = tiny_task(model)
    result = attribution_patching(model, task)
    table = result.positions.data.set_index(["layer", "head", "position"])
    width = task.clean.input_ids.shape[1]
    checked = [(0, 1, width - 1), (1, 3, 4), (2, 0, width - 1), (0, 2, 2), (1, 0, width - 3)]
    for layer, head, position in checked:
        want = _directional_derivative(model, task, layer, head, position)
        got = table.loc[(layer, head, position), "delta"]
        assert got == pytest.approx(want, rel=1e-4, abs=1e-7)
    assert any(abs(table.loc[c, "delta"]) > 1e-4 for c in checked)  # not all trivially 0
    # Per head: the positions summed; score = delta / (LD_corrupt - LD_clean).
    sums = result.positions.data.groupby(["layer", "head"])["delta"].sum().to_numpy()
    assert result.heads.data["delta"].to_numpy() == pytest.approx(sums, rel=1e-6, abs=1e-9)
    with torch.no_grad():
        clean = logit_difference(model.hf(**task.clean).logits[:, -1], task).mean()
        corrupt = logit_difference(model.hf(**task.corrupted).logits[:, -1], task).mean()
    ratio = result.heads.data["delta"] / result.heads.data["score"]
    assert ratio.to_numpy() == pytest.approx(float(corrupt - clean), rel=1e-5)


def _scores(values: np.ndarray) -> HeadScores:
    provenance = tiny_provenance()
    return HeadScores(head_frame({"score": values.reshape(2, 3)}), provenance)


def tiny_provenance():
    from interp.results import Provenance

    return Provenance("m", "w", "a", {}, "h", 1)


def test_rank_correlation() -> None:
    a = np.array([0.1, 0.5, -0.2, 0.9, 0.0, 0.3])
    assert rank_correlation(_scores(a), _scores(a * 10 + 1)) == pytest.approx(1.0)
    assert rank_correlation(_scores(a), _scores(-a)) == pytest.approx(-1.0)
    few = HeadScores(_scores(a).data.head(2), tiny_provenance())
    with pytest.raises(InputError, match="at least 3 heads"):
        rank_correlation(few, _scores(a))
    partial = HeadScores(pd.DataFrame(_scores(a).data.iloc[[0, 2, 3, 5]]), tiny_provenance())
    assert rank_correlation(partial, _scores(a)) == pytest.approx(1.0)
