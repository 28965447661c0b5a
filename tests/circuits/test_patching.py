"""Per-head activation patching: the batched sweep started at the patched layer equals one full
forward per head, and equals the same patching done through TransformerLens's bridge (`hook_z`)."""

import pytest
import torch

import circuits.patching as patching_module
from circuits.circuit_task import CircuitTask
from circuits.patching import activation_patching
from circuits.tasks import ioi
from interp.errors import ConfigError, InputError
from interp.heads import Head
from interp.hook_points import HeadPatch, patched, record
from interp.models import Model, load_model
from tests.tiny import saved_tiny

CLEAN = ["the cat sat on a mat", "dogs ran far", "a bird sang at dawn"]
CORRUPT = ["the rat sat in a hat", "logs ran far", "a bird rang at noon"]


def tiny_task(model: Model) -> CircuitTask:
    """Clean/corrupted byte prompts of equal length per row, left-padded, with answers."""
    clean, corrupted = model.encode(CLEAN), model.encode(CORRUPT)
    assert torch.equal(clean.attention_mask, corrupted.attention_mask)
    n, width = clean.input_ids.shape
    tokens = model.tokenizer.convert_tokens_to_ids
    return CircuitTask(
        name="tiny",
        clean=clean,
        corrupted=corrupted,
        answer_ids=torch.tensor([tokens("x"), tokens("y"), tokens("z")]),
        wrong_ids=torch.tensor([tokens("q"), tokens("r"), tokens("s")]),
        choice_ids=torch.tensor([[tokens("x"), tokens("q")]] * n),
        positions={"MID": torch.tensor([width - 4] * n), "END": torch.tensor([width - 1] * n)},
        prompts=tuple(CLEAN),
        corrupted_prompts=tuple(CORRUPT),
        templates=("t",) * n,
        families=("f",) * n,
        config={"task": "tiny"},
    )


def _ld(logits: torch.Tensor, task: CircuitTask) -> torch.Tensor:
    rows = torch.arange(len(task))
    return logits[rows, task.answer_ids] - logits[rows, task.wrong_ids]


@torch.no_grad()
def _one_head_at_a_time(model: Model, task: CircuitTask, layer: int, head: int, pos) -> float:
    """Mean LD of full clean forwards with one head's z patched in every prompt."""
    name = f"blocks.{layer}.attn.hook_z"
    source = record(model, task.corrupted, [name])
    patches = [
        HeadPatch(row=p, layer=layer, head=head, positions=None if pos is None else pos[p])
        for p in range(len(task))
    ]
    with patched(model.hf, source, patches):
        logits = model.hf(**task.clean).logits[:, -1]
    return float(_ld(logits, task).mean())


@pytest.mark.parametrize("positions", ["all", "MID"])
def test_the_sweep_equals_one_full_patched_forward_per_head(tiny, positions):
    task = tiny_task(tiny)
    scores = activation_patching(tiny, task, positions=positions, batch_size=5)
    table = scores.data
    assert len(table) == 12 and list(table["label"][:2]) == ["L0H0", "L0H1"]
    pos = None if positions == "all" else task.positions["MID"].tolist()
    expected = [_one_head_at_a_time(tiny, task, r.layer, r.head, pos) for r in table.itertuples()]
    assert torch.allclose(
        torch.tensor(table["logit_difference"].to_numpy()),
        torch.tensor(expected).double(),
        atol=1e-5,
    )
    with torch.no_grad():
        clean = float(_ld(tiny.hf(**task.clean).logits[:, -1], task).mean())
        corrupt = float(_ld(tiny.hf(**task.corrupted).logits[:, -1], task).mean())
    assert table["clean_logit_difference"].iloc[0] == pytest.approx(clean, abs=1e-5)
    score = (torch.tensor(expected) - clean) / (corrupt - clean)
    assert torch.allclose(torch.tensor(table["score"].to_numpy()).float(), score, atol=1e-4)
    assert table["score"].abs().max() > 1e-3  # the corruption does reach some head


def test_each_position_sums_to_its_rows_and_skips_padding(tiny):
    task = tiny_task(tiny)
    heads = [Head(1, 2), Head(2, 0)]
    scores = activation_patching(tiny, task, positions="each", heads=heads).data
    width = task.clean.input_ids.shape[1]
    assert len(scores) == 2 * width and list(scores["position"][:3]) == [0, 1, 2]
    clean = scores["clean_logit_difference"].iloc[0]
    for row in scores.itertuples():
        # Prompt p's padding positions are not patched: a one-position patch there is padding.
        positions = [[row.position]] * len(task)
        expected = _one_head_at_a_time(tiny, task, row.layer, row.head, positions)
        assert row.logit_difference == pytest.approx(expected, abs=1e-5)
    first_real = int((width - task.clean.attention_mask.sum(-1)).min())
    assert (scores[scores["position"] < first_real]["logit_difference"] == clean).all()


def test_starting_at_the_patched_layer_changes_nothing_but_the_cost(tiny, monkeypatch):
    task = tiny_task(tiny)
    midway = activation_patching(tiny, task).data
    monkeypatch.setattr(patching_module, "_starts_midway", lambda model: False)
    full = activation_patching(tiny, task).data
    assert torch.allclose(
        torch.tensor(midway["score"].to_numpy()), torch.tensor(full["score"].to_numpy()), atol=1e-5
    )


def test_bad_arguments_are_one_line_errors(tiny):
    task = tiny_task(tiny)
    with pytest.raises(ConfigError, match="Did you mean 'END'"):
        activation_patching(tiny, task, positions="EDN")
    with pytest.raises(ConfigError, match="outside"):
        activation_patching(tiny, task, heads=[Head(3, 0)])
    same = CircuitTask(**{**task.__dict__, "corrupted": task.clean})
    with pytest.raises(InputError, match="unchanged"):
        activation_patching(tiny, same)


@torch.no_grad()
def _bridge_patching(bridge, task: CircuitTask, heads: list[Head]) -> dict[Head, float]:
    """Mean patched LD per head, patching `blocks.{l}.attn.hook_z` through the bridge."""
    ids, mask = task.clean.input_ids, task.clean.attention_mask
    _, cache = bridge.run_with_cache(task.corrupted.input_ids, attention_mask=mask)
    out = {}
    for head in heads:
        name = f"blocks.{head.layer}.attn.hook_z"

        def patch(z, hook, name=name, h=head.head):
            z = z.clone()
            z[:, :, h] = cache[name][:, :, h]
            return z

        logits = bridge.run_with_hooks(ids, attention_mask=mask, fwd_hooks=[(name, patch)])
        out[head] = float(_ld(logits[:, -1].cpu(), task).mean())
    return out


def _assert_equal_to_bridge(model: Model, task: CircuitTask, heads: list[Head]) -> None:
    ours = activation_patching(model, task, heads=heads).data
    theirs = _bridge_patching(model.bridge, task, heads)
    for row in ours.itertuples():
        assert row.logit_difference == pytest.approx(theirs[Head(row.layer, row.head)], abs=1e-3)


def test_equals_patching_through_the_bridge_on_a_tiny_model(tmp_path):
    model = load_model(saved_tiny(tmp_path / "tiny"))
    _assert_equal_to_bridge(
        model, tiny_task(model), [Head(layer, h) for layer in range(3) for h in range(4)]
    )


@pytest.mark.integration
def test_equals_patching_through_the_bridge_on_the_default_model(default_model):
    task = ioi(default_model, 4, seed=1)
    heads = [Head(0, 0), Head(9, 4), Head(17, 2), Head(22, 8), Head(29, 1)]
    _assert_equal_to_bridge(default_model, task, heads)
