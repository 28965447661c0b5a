"""The repair edit: only the final row of the chosen heads changes, to 1/k on its positions."""

from __future__ import annotations

import pytest
import torch

from circuits.repair import Repair, choice_accuracy, last_logits, repair_effects
from interp.effects import EffectsConfig
from interp.errors import HookError, InputError
from interp.hooks import attention_hooks
from interp.interventions.attention_edit import AttentionEdit, unchanged_rows
from interp.models import Model
from tests.interp.helpers import Recorder

TEXTS = ["The red cup, the blue pen and the green mug.", "A red ball, a tan box."]
HEADS = "L1H0,L2H3"
# per row: two key positions in the batch's padded coordinates (row 1 starts at column 22)
POSITIONS = torch.tensor([[4, 17], [24, 35]])


def rows_of(model: Model, intervention) -> list:
    recorder = Recorder([0, 1, 2])
    with intervention.applied(model), attention_hooks(model.hf, recorder), torch.no_grad():
        model.hf(**model.encode(TEXTS))
    return recorder.seen


def test_only_the_final_row_of_the_chosen_heads_changes(tiny: Model) -> None:
    repair = Repair(HEADS, POSITIONS)
    edited, plain = rows_of(tiny, repair), rows_of(tiny, repair.identity())
    assert [r.layer for r in edited] == [0, 1, 2]  # one block per layer: short prompts
    assert torch.equal(edited[0].probs, plain[0].probs)
    for rows in edited[1:]:
        final = rows.probs[:, :, -1]  # [batch, head, key]
        for head in repair.heads.heads_in(rows.layer):
            for row in range(2):
                expected = torch.zeros(final.shape[-1])
                expected[POSITIONS[row]] = 0.5
                assert torch.equal(final[row, head], expected)
    # below the final row, and in the other heads, layer 1 is exactly the model's own
    others = [h for h in range(4) if h != 0]
    assert torch.equal(edited[1].probs[:, :, :-1], plain[1].probs[:, :, :-1])
    assert torch.equal(edited[1].probs[:, others], plain[1].probs[:, others])


def test_identity_is_the_unchanged_edit_and_matches_the_plain_model(tiny: Model) -> None:
    repair = Repair(HEADS, POSITIONS)
    assert repair.identity() == AttentionEdit(repair.heads, unchanged_rows, phase="prefill")
    batch = tiny.encode(TEXTS)
    with torch.no_grad():
        plain = tiny.hf(**batch).logits
        with repair.identity().applied(tiny):
            same = tiny.hf(**batch).logits
        with repair.applied(tiny):
            changed = tiny.hf(**batch).logits
    assert (same - plain).abs().max() < 1e-5
    assert (changed[:, -1] - plain[:, -1]).abs().max() > 1e-3
    # earlier positions see the model's own rows, so their logits do not move
    assert torch.equal(changed[:, :-1], same[:, :-1])


def test_slices_of_a_batch_equal_the_whole_batch(tiny: Model) -> None:
    repair = Repair(HEADS, POSITIONS)
    batch = tiny.encode(TEXTS)
    whole = last_logits(tiny, batch, repair.rows, batch_size=2)
    sliced = last_logits(tiny, batch, repair.rows, batch_size=1)
    assert (whole - sliced).abs().max() < 1e-5


def test_repair_effects_pairs_identity_and_repair(tiny: Model) -> None:
    repair = Repair(HEADS, POSITIONS)
    batch = tiny.encode(TEXTS)
    answers, wrong = torch.tensor([70, 71]), torch.tensor([72, 73])
    choices = torch.stack([answers, wrong, torch.tensor([74, 75])], 1)
    effects = repair_effects(
        tiny, batch, answers, wrong, choices, repair, task_name="t", config=EffectsConfig(n_boot=50)
    )
    table = effects.table.data.set_index("metric")
    base = last_logits(tiny, batch, lambda a, b: repair.identity(), 2)
    edited = last_logits(tiny, batch, lambda a, b: repair, 2)
    gap = (edited[:, 70:72].diagonal() - edited[:, 72:74].diagonal()).mean()
    assert table.loc["logit_difference", "intervened"] == pytest.approx(float(gap), abs=1e-5)
    assert (
        table.loc["choice_accuracy", "baseline"] == choice_accuracy(base, choices, answers).mean()
    )
    assert effects.provenance.config["intervention"]["heads"] == ["L1H0", "L2H3"]
    assert {"ci_low", "ci_high"} <= set(table.columns)


def test_choice_accuracy_is_argmax_among_the_listed_choices() -> None:
    logits = torch.zeros(2, 10)
    logits[0, 3], logits[0, 9], logits[1, 5] = 2.0, 5.0, 1.0  # token 9 is not a listed choice
    choices = torch.tensor([[3, 4, 5], [3, 4, 5]])
    assert choice_accuracy(logits, choices, torch.tensor([3, 4])).tolist() == [1.0, 0.0]


def test_bad_positions_are_one_line_errors(tiny: Model) -> None:
    with pytest.raises(InputError, match="non-negative integer"):
        Repair(HEADS, torch.tensor([4, 17]))
    with pytest.raises(InputError, match="non-negative integer"):
        Repair(HEADS, torch.tensor([[0.5, 1.0]]))
    with pytest.raises(InputError, match="at least one head"):
        Repair([], POSITIONS)
    with pytest.raises(InputError, match="include padding"):
        rows_of(tiny, Repair(HEADS, torch.tensor([[4, 17], [3, 30]])))  # row 1 pads 0..21
    with pytest.raises(InputError, match="past the prompt"):
        rows_of(tiny, Repair(HEADS, torch.tensor([[4, 90], [24, 30]])))
    with pytest.raises(HookError, match="for 1 rows"):
        rows_of(tiny, Repair(HEADS, POSITIONS[:1]))


def test_repairs_are_values_with_a_record() -> None:
    a, b = Repair(HEADS, POSITIONS), Repair("L2H3,L1H0", POSITIONS.clone())
    assert a == b and hash(a) == hash(b) and a != Repair(HEADS, POSITIONS + 1)
    record = a.to_dict()
    assert record["heads"] == ["L1H0", "L2H3"] and record["row"] == "final"
    assert len(record["positions"]["sha256"]) == 64
    assert a.rows(1, 2).positions.tolist() == [[24, 35]]
