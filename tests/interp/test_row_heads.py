"""Per-row interventions: RowHeads in HeadScale, AttentionEdit and ACT, row by row exact."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from interp.errors import HookError, InputError
from interp.heads import HeadSet, RowHeads
from interp.interventions import ACT, HeadScale, uniform_attention
from interp.interventions.act import ActConfig
from interp.interventions.base import Intervention, for_rows
from interp.models import Model

TEXTS = ["The quick brown fox jumps over the lazy dog.", "A cat sat.", "Rain falls on the hill"]
# Rows edit different layers (row 1 none of layer 1, row 2 nothing), so per-row kernels show,
# and different heads of layer 2, so each row keeps the heads it does not select.
ROWS = RowHeads(["L1H0,L2H3", "L0H1,L2H0", HeadSet()])
CASES: dict[str, Callable[[HeadSet | RowHeads], Intervention]] = {
    "zero": lambda heads: HeadScale(heads, alpha=0.0),
    "uniform": uniform_attention,
    "act": lambda heads: ACT(heads, ActConfig(threshold=0.04)),
}


def _last_logits(model: Model, intervention: Intervention | None) -> torch.Tensor:
    batch = model.encode(TEXTS)  # left-padded: rows differ in length
    with torch.no_grad():
        if intervention is None:
            return model.hf(**batch).logits[:, -1]
        with intervention.applied(model):
            return model.hf(**batch).logits[:, -1]


@pytest.mark.parametrize("case", list(CASES))
def test_each_row_computes_what_its_own_heads_compute_for_the_whole_batch(tiny, case) -> None:
    build = CASES[case]
    per_row = _last_logits(tiny, build(ROWS))
    plain = _last_logits(tiny, None)
    for row, heads in enumerate(ROWS):
        alone = _last_logits(tiny, build(heads) if len(heads) else None)
        assert torch.equal(per_row[row], alone[row]), (case, row)
    assert torch.equal(per_row[2], plain[2])  # an empty row is the plain model, bit for bit
    # The rows' sets are used, not one set for all: each edited row differs from what the
    # other row's set gives it.
    for row, other in ((0, 1), (1, 0)):
        swapped = _last_logits(tiny, build(ROWS[other]))
        assert not torch.equal(per_row[row], swapped[row]), (case, row)


def test_act_per_row_generation_equals_each_rows_own_set(tiny) -> None:
    config = ActConfig(threshold=0.04)
    batch = tiny.encode(TEXTS)

    def greedy(heads: HeadSet | RowHeads) -> torch.Tensor:
        with ACT(heads, config).applied(tiny):
            return tiny.hf.generate(**batch, max_new_tokens=4, do_sample=False)

    out = greedy(ROWS)
    for row in (0, 1):
        assert torch.equal(out[row], greedy(ROWS[row])[row]), row


def test_mean_ablation_per_row(tiny) -> None:
    reference = torch.randn(3, 4, 16)
    per_row = _last_logits(tiny, HeadScale(ROWS, mode="mean", reference=reference))
    for row in (0, 1):
        alone = _last_logits(tiny, HeadScale(ROWS[row], mode="mean", reference=reference))
        assert torch.equal(per_row[row], alone[row]), row


def test_row_heads_are_values_with_a_record() -> None:
    a = HeadScale(RowHeads([["L1H0"], "L2H3,L0H1"]), alpha=0.0)
    b = HeadScale(RowHeads([HeadSet("L1H0"), HeadSet(["L0H1", "L2H3"])]), alpha=0.0)
    assert a == b and hash(a) == hash(b)
    assert a != HeadScale(RowHeads(["L2H3,L0H1", ["L1H0"]]), alpha=0.0)
    assert a.to_dict()["heads"] == [["L1H0"], ["L0H1", "L2H3"]]
    assert a.identity() == HeadScale(a.heads, alpha=1.0)
    assert HeadScale("L1H0").heads == HeadSet("L1H0")  # a HeadSet stays the common case
    assert ROWS.layers == [0, 1, 2] and ROWS.all_heads == HeadSet("L0H1,L1H0,L2H0,L2H3")
    assert tuple(ROWS.mask(_geometry()).shape) == (3, 3, 4)
    for bad in ("L1H0", HeadSet("L1H0"), [], 3):
        with pytest.raises(InputError):
            RowHeads(bad)  # type: ignore[arg-type]


def test_select_cuts_per_row_interventions_to_some_rows() -> None:
    from probes.anchor_causal import block_keys

    picked = RowHeads([ROWS[2], ROWS[0]])
    assert HeadScale(ROWS).select([2, 0]) == HeadScale(picked)
    assert ACT(ROWS).select([2, 0]) == ACT(picked)
    assert for_rows(uniform_attention(ROWS), [2, 0]) == uniform_attention(picked)
    whole = HeadScale("L1H0")
    assert for_rows(whole, [1]) is whole  # a whole-batch intervention is every row's
    edit = block_keys(ROWS, [[1], [2, 3], []]).select([1])
    assert edit.heads == RowHeads([ROWS[1]]) and edit.fn.keys == ((2, 3),)


def _geometry():
    from interp.heads import HeadGeometry

    return HeadGeometry(3, 4, 2, 16, 64)


@pytest.mark.parametrize("case", ["zero", "uniform"])
def test_a_batch_of_another_size_is_refused(tiny, case) -> None:
    two = RowHeads(["L1H0", "L2H3"])
    with pytest.raises(HookError, match="2 rows"):
        _last_logits(tiny, CASES[case](two))
