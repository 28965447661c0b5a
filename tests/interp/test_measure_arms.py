"""`interp.effects.measure_arms`: the one paired measurement (identity arm vs interventions)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from interp.effects import EffectsConfig, Score, measure_arms
from interp.errors import InputError
from interp.heads import HeadSet
from interp.interventions import AttentionEdit, HeadScale
from interp.interventions.attention_edit import unchanged_rows
from interp.models import Model
from interp.work import Item
from tests.tiny import tiny_llama

CONFIG = EffectsConfig(n_boot=50, batch_size=2)
TEXTS = ["the cat sat", "a dog ran far", "it is", "red blue green", "one two", "so it goes on"]


@dataclass(frozen=True)
class Shift:
    """A stand-in intervention: adds `amount` to every score; its identity adds 0."""

    amount: float

    @contextmanager
    def applied(self, model: Any) -> Iterator[None]:
        yield

    def to_dict(self) -> dict[str, Any]:
        return {"intervention": "Shift", "amount": self.amount}

    def identity(self) -> Shift:
        return Shift(0.0)


class Counted:
    """evaluate for `Shift`: score = value + amount; counts calls, can fail on a given call."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls: list[tuple[list[float], float]] = []
        self.fail_on = fail_on

    def __call__(self, values: list[float], arm: Shift) -> list[dict[str, float]]:
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise KeyboardInterrupt  # the run is killed in the middle of a batch
        self.calls.append((list(values), arm.amount))
        return [{"score": v + arm.amount, "doubled": 2 * v + arm.amount} for v in values]


def numbers(n: int = 12) -> list[Item[float]]:
    return [Item(f"n{i}", float(i)) for i in range(n)]


def text_logprobs(model: Model) -> Any:
    """evaluate over texts: each text's summed token log-probability under the arm."""

    def evaluate(texts: list[str], arm: Any) -> list[dict[str, float]]:
        out = []
        for text in texts:
            ids = model.encode(text).input_ids.to(model.device)
            with torch.no_grad(), arm.applied(model):
                logits = model.hf(ids).logits[0, :-1].double()
            picked = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None])
            out.append({"logprob": float(picked.sum())})
        return out

    return evaluate


def test_an_identity_intervention_gives_exactly_zero_in_every_metric():
    model = tiny_llama()
    items = [Item(str(i), text) for i, text in enumerate(TEXTS)]
    unchanged = AttentionEdit(HeadSet(["L1H0", "L2H1"]), unchanged_rows)
    arms = measure_arms(
        items,
        [unchanged],
        text_logprobs(model),
        [Score("logprob")],
        CONFIG,
    )
    per_item, summary = arms.per_item, arms.summary
    assert per_item.baseline_logprob.tolist() == per_item.intervened_logprob.tolist()
    assert (per_item.baseline_logprob != 0).all()  # real scores, not an empty run
    row = summary.iloc[0]
    assert (row.difference, row.ci_low, row.ci_high) == (0.0, 0.0, 0.0)
    assert (row.improved, row.worsened, row.n) == (0, 0, len(TEXTS))
    assert "changed no item" in row.warnings


def test_a_known_edit_on_a_tiny_model_gives_the_expected_per_item_deltas():
    """Masking every head of layer 1 equals zeroing that layer's output projection."""
    model = tiny_llama()
    evaluate = text_logprobs(model)
    n_heads = model.geometry.n_heads
    masked = HeadScale(HeadSet([(1, h) for h in range(n_heads)]), alpha=0.0)
    items = [Item(str(i), text) for i, text in enumerate(TEXTS)]
    arms = measure_arms(items, [masked], evaluate, [Score("logprob")], CONFIG)

    plain = [row["logprob"] for row in evaluate(TEXTS, HeadScale("L0H0", alpha=1.0))]
    surgery = copy.deepcopy(model)
    with torch.no_grad():
        surgery.hf.model.layers[1].self_attn.o_proj.weight.zero_()
    zeroed = [row["logprob"] for row in text_logprobs(surgery)(TEXTS, Shift(0.0))]
    expected = np.array(zeroed) - np.array(plain)
    got = (arms.per_item.intervened_logprob - arms.per_item.baseline_logprob).to_numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    assert (np.abs(expected) > 1e-6).all()  # the edit moves every item
    assert arms.summary.difference.iloc[0] == pytest.approx(expected.mean(), abs=1e-9)


def test_per_item_deltas_summary_and_sweep_layout():
    evaluate = Counted()
    arms = measure_arms(
        numbers(),
        [Shift(0.5), Shift(-2.0)],
        evaluate,
        [Score("score"), Score("doubled", lower_is_better=True)],
        CONFIG,
        values=[0.5, -2.0],
    )
    per_item, summary = arms.per_item, arms.summary
    assert per_item.parameter.tolist() == [0.5] * 12 + [-2.0] * 12
    assert per_item.item.tolist() == list(range(12)) * 2
    delta = per_item.intervened_score - per_item.baseline_score
    assert (delta == per_item.parameter).all()
    assert summary[["parameter", "metric"]].values.tolist() == [
        [0.5, "score"],
        [0.5, "doubled"],
        [-2.0, "score"],
        [-2.0, "doubled"],
    ]
    assert summary.difference.tolist() == [0.5, 0.5, -2.0, -2.0]
    assert summary.improved.tolist() == [12, 0, 0, 12]  # lower is better for "doubled"
    # Both settings share one identity: it runs once per batch (6 batches of 2).
    assert sum(amount == 0.0 for _, amount in evaluate.calls) == 6
    assert len(evaluate.calls) == 18


def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path):
    def run(evaluate: Counted, folder: Any = None) -> Any:
        return measure_arms(
            numbers(),
            [Shift(1.5)],
            evaluate,
            [Score("score")],
            CONFIG,
            folder=folder,
            identity={"test": "resume"},
        )

    whole = run(Counted())
    with pytest.raises(KeyboardInterrupt):
        run(Counted(fail_on=5), tmp_path)  # killed in the third batch's baseline
    resumed_evaluate = Counted()
    resumed = run(resumed_evaluate, tmp_path)
    pd.testing.assert_frame_equal(resumed.per_item, whole.per_item)
    pd.testing.assert_frame_equal(resumed.summary, whole.summary)
    assert len(resumed_evaluate.calls) == 8  # the two recorded batches were not run again
    assert resumed_evaluate.calls[0][0] == [4.0, 5.0]


@dataclass(frozen=True)
class Lift:
    """An arm built per batch (`PerItem`): the batch's Shift is `scale` x its largest value."""

    scale: float

    def for_items(self, values: list[float]) -> Shift:
        return Shift(self.scale * max(values))

    def identity(self) -> Lift:
        return Lift(0.0)


def test_an_arm_built_per_batch_runs_as_that_batchs_intervention():
    evaluate, prepared = Counted(), []
    arms = measure_arms(
        numbers(6), [Lift(1.0), Lift(2.0)], evaluate, [Score("score")], CONFIG,
        prepare=prepared.append,
    )  # fmt: skip
    values = np.arange(6.0)
    batch_max = values + (values % 2 == 0)  # batches of 2: [0, 1] -> 1, [2, 3] -> 3, ...
    expected = np.concatenate([values + batch_max, values + 2 * batch_max])
    assert arms.per_item.intervened_score.tolist() == expected.tolist()
    assert arms.per_item.baseline_score.tolist() == values.tolist() * 2
    assert prepared == [values.tolist()]  # once, with every item still to run
    # Both arms share the identity Lift(0.0): it runs once per batch, as Shift(0.0).
    assert [amount for _, amount in evaluate.calls] == [
        0.0,
        1.0,
        2.0,
        0.0,
        3.0,
        6.0,
        0.0,
        5.0,
        10.0,
    ]


@dataclass(frozen=True)
class Stacked:
    """Shifts stacked as rows (`measure_arms(stack=...)`): block i of the rows gets amounts[i]."""

    amounts: tuple[float, ...]


def test_stacked_arms_run_as_one_call_and_give_each_arms_results():
    calls = []

    def evaluate(values: list[float], arm: Stacked) -> list[dict[str, float]]:
        calls.append((list(values), arm.amounts))
        block = len(values) // len(arm.amounts)
        return [{"score": v + arm.amounts[i // block]} for i, v in enumerate(values)]

    arms = [Shift(1.0), Shift(2.0)]
    stacked = measure_arms(
        numbers(4), arms, evaluate, [Score("score")], CONFIG,
        stack=lambda edits: Stacked(tuple(e.amount for e in edits)),
    )  # fmt: skip
    alone = measure_arms(
        numbers(4), arms, lambda values, arm: [{"score": v + arm.amount} for v in values],
        [Score("score")], CONFIG,
    )  # fmt: skip
    pd.testing.assert_frame_equal(stacked.per_item, alone.per_item, check_exact=True)
    pd.testing.assert_frame_equal(stacked.summary, alone.summary, check_exact=True)
    # one call per batch of 2: the batch repeated per arm, the identity's rows first
    assert calls == [([0.0, 1.0] * 3, (0.0, 1.0, 2.0)), ([2.0, 3.0] * 3, (0.0, 1.0, 2.0))]


def test_no_items_or_mismatched_values_are_refused():
    with pytest.raises(InputError, match="at least one item"):
        measure_arms([], [Shift(1.0)], Counted(), [Score("score")], CONFIG)
    with pytest.raises(InputError, match="swept values"):
        measure_arms(numbers(), [Shift(1.0)], Counted(), [Score("score")], CONFIG, values=[1, 2])
