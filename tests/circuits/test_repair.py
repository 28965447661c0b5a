"""The repair edit: only the final row of the chosen heads changes, to 1/k on its positions."""

from __future__ import annotations

import pytest
import torch

from circuits.circuit_task import CircuitTask
from circuits.metrics import accuracy, logit_difference
from circuits.repair import (
    Repair,
    ov_copy_scores,
    random_heads_like,
    repair_effects,
    repair_heads,
    wrong_color_positions,
)
from interp.effects import EffectsConfig
from interp.errors import HookError, InputError
from interp.heads import HeadSet
from interp.hooks import attention_hooks
from interp.interventions.attention_edit import AttentionEdit, unchanged_rows
from interp.interventions.base import for_rows
from interp.models import Model
from tests.interp.helpers import Recorder
from tests.tiny import tiny_llama

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


def colour_task(model: Model) -> CircuitTask:
    """TEXTS as a hand-made Colored Objects-like task: listed colours at C1-C3 per row."""
    batch = model.encode(TEXTS)
    tokens = model.tokenizer.convert_tokens_to_ids
    answers, wrong, third = (torch.tensor([tokens(a), tokens(b)]) for a, b in ("rx", "by", "gz"))
    listed = torch.tensor([[4, 17, 33], [24, 35, 40]])
    return CircuitTask(
        name="colours",
        clean=batch,
        corrupted=batch,
        answer_ids=answers,
        wrong_ids=wrong,
        choice_ids=torch.stack([answers, wrong, third], 1),
        positions={f"C{k + 1}": listed[:, k] for k in range(3)} | {"END": torch.tensor([43, 43])},
        prompts=tuple(TEXTS),
        corrupted_prompts=tuple(TEXTS),
        templates=("t", "t"),
        families=("C3", "C1"),
        config={"task": "colours"},
    )


def test_wrong_colours_are_the_listed_ones_that_are_not_asked(tiny: Model) -> None:
    task = colour_task(tiny)
    assert wrong_color_positions(task).tolist() == [[4, 17], [35, 40]]
    other = CircuitTask(**{**vars(task), "positions": {"END": task.positions["END"]}})
    with pytest.raises(InputError, match="Colored Objects task"):
        wrong_color_positions(other)


def test_slices_of_a_batch_equal_the_whole_batch(tiny: Model) -> None:
    task = colour_task(tiny)
    repair = Repair(HEADS, POSITIONS)
    whole = repair_effects(tiny, task, repair, EffectsConfig(n_boot=10, batch_size=2))
    sliced = repair_effects(tiny, task, repair, EffectsConfig(n_boot=10, batch_size=1))
    columns = ["baseline_logit_difference", "intervened_logit_difference"]
    difference = whole.per_item.data[columns] - sliced.per_item.data[columns]
    assert float(difference.abs().max().max()) < 1e-5


def test_repair_effects_pairs_identity_and_repair(tiny: Model) -> None:
    task = colour_task(tiny)
    repair = Repair(HEADS, wrong_color_positions(task))
    effects = repair_effects(tiny, task, repair, EffectsConfig(n_boot=50))
    table = effects.table.data.set_index("metric")
    with torch.no_grad():
        with repair.applied(tiny):
            edited = tiny.hf(**task.clean).logits[:, -1]
        with repair.identity().applied(tiny):
            base = tiny.hf(**task.clean).logits[:, -1]
    expected = logit_difference(edited, task).mean()
    assert table.loc["logit_difference", "intervened"] == pytest.approx(float(expected), abs=1e-5)
    assert table.loc["accuracy", "baseline"] == accuracy(base, task).float().mean().item()
    assert effects.provenance.config["intervention"]["heads"] == ["L1H0", "L2H3"]
    assert table.loc["logit_difference", "difference"] != 0.0
    assert {"ci_low", "ci_high"} <= set(table.columns)
    with pytest.raises(InputError, match="positions for 1 prompts"):
        repair_effects(tiny, task, repair.select([0]))


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
    assert a.select([1]).positions.tolist() == [[24, 35]]
    assert for_rows(a, [1, 0]) == Repair(HEADS, POSITIONS[[1, 0]])


def _stage_scores():
    import pandas as pd

    from interp.results import HeadScores
    from tests.interp.test_results import provenance

    frame = pd.DataFrame(
        {
            "layer": [0, 1, 2, 0, 1],
            "head": [0, 0, 0, 1, 1],
            "score": [0.5, -0.9, 0.2, 0.3, 0.1],
            "stage": ["logits", "logits", "logits", "name_mover_queries", "name_mover_queries"],
        }
    ).assign(label=lambda f: [f"L{a}H{b}" for a, b in zip(f["layer"], f["head"], strict=True)])
    return HeadScores(frame, provenance())


def test_repair_heads_take_a_demoting_head_not_a_copying_one() -> None:
    """L1H0 scores most negative but copies what it reads; of the demoting heads L0H0 (0.5)
    has the largest |score|, then L2H0 (0.2)."""
    scores = _stage_scores()
    copying = {"L0H0": -2.0, "L1H0": 1.0, "L2H0": -1.0}
    assert repair_heads(scores, copying, inhibition=1) == HeadSet("L0H1,L0H0")
    assert repair_heads(scores, copying, inhibition=2, negative=2) == HeadSet("L0H1,L1H1,L0H0,L2H0")
    old = repair_heads(scores, inhibition=1, negative_rule="most_negative")
    assert old == HeadSet("L0H1,L1H0")
    with pytest.raises(InputError, match="stages"):
        repair_heads(scores, copying, inhibition_stage="s_inhibition_values")
    with pytest.raises(InputError, match="copy scores"):
        repair_heads(scores)


def test_ov_copy_scores_by_hand() -> None:
    """Tokens 5, 6 embed and unembed as e_0, e_1; head 0's OV is +I on them, head 1's -I.

    RMSNorm(e_0) = 8 e_0 (d_model 64, unit weights, eps 1e-6 negligible); OV gives +-8 e_0;
    the final norm gives +-8 e_0 again: logit(5) = +-8, logit(6) = 0, so the score is +-8.
    """
    model = tiny_llama(n_layers=2, n_heads=4, n_kv_heads=2)
    ids = torch.tensor([5, 6])
    with torch.no_grad():
        for module in (model.hf.get_input_embeddings(), model.hf.get_output_embeddings()):
            module.weight[ids] = torch.eye(64)[:2]
        attention = model.hf.model.layers[1].self_attn
        attention.v_proj.weight.zero_()
        attention.v_proj.weight[:2, :2] = torch.eye(2)  # KV head 0, its dims 0 and 1
        attention.o_proj.weight.zero_()
        attention.o_proj.weight[:2, :2] = torch.eye(2)  # head 0 (columns 0..15)
        attention.o_proj.weight[:2, 16:18] = -torch.eye(2)  # head 1 (columns 16..31)
    got = ov_copy_scores(model, HeadSet("L1H0,L1H1,L1H2"), ids)
    assert got == pytest.approx({"L1H0": 8.0, "L1H1": -8.0, "L1H2": 0.0}, abs=1e-3)
    with pytest.raises(InputError, match="two or more"):
        ov_copy_scores(model, HeadSet("L1H0"), torch.tensor([5, 5]))


def test_random_heads_like_draw_other_heads_of_each_chosen_layer() -> None:
    """Two chosen heads of layer 2 (of 4) leave exactly L2H2 and L2H3; layer 3 is never drawn."""
    from interp.heads import HeadGeometry

    geometry = HeadGeometry(n_layers=6, n_heads=4, n_kv_heads=2, d_head=8, d_model=32)
    chosen = HeadSet("L2H0,L2H1,L4H3")
    draws = [random_heads_like(chosen, geometry, seed) for seed in range(20)]
    for drawn in draws:
        assert set(drawn.heads_in(2)) == {2, 3} and drawn.layers == [2, 4]
        assert len(drawn.heads_in(4)) == 1 and 3 not in drawn.heads_in(4)
    assert random_heads_like(chosen, geometry, 3) == draws[3] and len(set(draws)) > 1
    with pytest.raises(InputError, match="too few"):
        random_heads_like(HeadSet("L1H0,L1H1,L1H2"), geometry, 0)
