"""Multiple-choice tasks with images (interp.tasks' image seam) on tiny random LLaVA."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from interp.effects import EffectsConfig, measure
from interp.errors import InputError
from interp.heads import Head, HeadSet
from interp.interventions import VHR, AttentionEdit, HeadScale
from interp.interventions.var import VAR, VarConfig, var_layers
from interp.interventions.vhr import VhrConfig, divergence
from interp.models import Model
from interp.tasks import Item, Task, evaluate, left_pad, load_items, load_task, plan_choices
from tests.tiny import tiny_llama, tiny_llava, write_image_task

VAR_CONFIG = VarConfig(tau=2.5, min_image_share=0.05)  # random weights: no sinks at tau 20


@pytest.fixture(scope="module")
def llava() -> Model:
    return tiny_llava(n_layers=5)


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> Task:
    """Six image items of mixed sizes and one text-only item (byte tokens: " yes" is 4)."""
    folder = write_image_task(tmp_path_factory.mktemp("task"), n_items=6)
    items = load_task(folder).items
    return Task("mixed", (*items, Item("No picture: yes or no?", ("yes", "no"), 1)))


def brute_force(model: Model, item: Item, choice: str) -> float:
    """A choice's log-prob from one forward of the item alone, its choice tokens appended."""
    ids = model.tokenizer(" " + choice, add_special_tokens=False)["input_ids"]
    inputs = model.prepare(item.prompt, item.image).extended([ids], 0)
    with torch.no_grad():
        logprobs = torch.log_softmax(model.hf(**inputs).logits[0].float(), -1)
    rows = logprobs[-len(ids) - 1 : -1]
    return float(rows.gather(1, torch.tensor(ids)[:, None]).sum())


def test_image_items_load_with_paths_resolved_against_the_file(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    absolute = tmp_path / "elsewhere.png"
    records = [
        {"prompt": "p", "choices": ["yes", "no"], "answer": 0, "image": "a.png"},
        {"prompt": "q", "choices": ["yes", "no"], "answer": "no", "image": str(absolute)},
        {"prompt": "r", "choices": ["yes", "no"], "answer": 1},
    ]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    items = load_items(path)
    assert [i.image for i in items] == [str(tmp_path / "a.png"), str(absolute), None]
    for bad in ("", 3, ["a.png"]):
        path.write_text(json.dumps({**records[0], "image": bad}))
        with pytest.raises(InputError, match=f"{path}:1: 'image' must be"):
            load_items(path)


def test_demonstrations_with_images_are_refused(tmp_path: Path) -> None:
    folder = write_image_task(tmp_path, n_items=3)
    (folder / "task.json").write_text(json.dumps({"shots": 1}))
    with pytest.raises(InputError, match="demonstrations have images"):
        load_task(folder)


def test_batched_scores_match_each_item_alone(llava: Model, task: Task) -> None:
    """Batches of mixed image sizes (and one row without an image) score as unbatched."""
    run = evaluate(llava, task, batch_size=3)
    assert len(run.scores) == 7
    for item, scores in zip(task.items, run.scores, strict=True):
        expected = [brute_force(llava, item, c) for c in item.choices]
        np.testing.assert_allclose(scores, expected, atol=1e-4)
    assert run.predictions.tolist() == [int(np.argmax(s)) for s in run.scores]


def test_identity_arms_of_vhr_and_var_change_no_score(llava: Model, task: Task) -> None:
    plain = evaluate(llava, task, batch_size=4).scores
    with VHR().identity().applied(llava):
        vhr_identity = evaluate(llava, task, batch_size=4).scores
    # VAR's layers run explicit attention: its identity is bit-exact against the same
    # kernel left unedited (the plain model's SDPA differs by float rounding, ~1e-6).
    layers = var_layers(llava.geometry.n_layers, VAR_CONFIG)
    heads = HeadSet(Head(layer, h) for layer in layers for h in range(llava.geometry.n_heads))
    with AttentionEdit(heads, lambda rows, index: rows.probs[:, index], renormalize=False).applied(
        llava
    ):
        unedited = evaluate(llava, task, batch_size=4).scores
    with VAR(VAR_CONFIG).identity().applied(llava):
        var_identity = evaluate(llava, task, batch_size=4).scores
    for a, b, c, d in zip(plain, vhr_identity, unedited, var_identity, strict=True):
        assert np.array_equal(a, b) and np.array_equal(c, d)
        np.testing.assert_allclose(c, a, atol=1e-4)
    config = EffectsConfig(n_boot=50, batch_size=4)
    for identity in (VHR(VhrConfig(alpha=1.0)), VAR(VarConfig(tau=2.5, p=0.0))):
        effects = measure(llava, [task], identity, config)
        per_item = effects.per_item.data
        assert (per_item.baseline_score == per_item.intervened_score).all()
        assert effects.table.data.difference.tolist() == [0.0]


def test_vhr_chooses_at_the_last_position_of_each_scored_sequence(tmp_path: Path) -> None:
    """Under evaluate, VHR's choice for an item is VHD's on prompt + choice[:-1] (the byte
    tokenizer's " yes"/" no" share no prefix): each choice's sequence gets its own heads,
    and batching does not change them."""
    model = tiny_llava(n_layers=3)
    task = load_task(write_image_task(tmp_path, n_items=3))
    vhr = VHR(VhrConfig(last_layers=0))  # layer 1 only: its choice is unreinforced VHD's
    with vhr.applied(model):
        run = evaluate(model, task, batch_size=4)
    reinforced_any = False
    for item, scores in zip(task.items, run.scores, strict=True):
        expected = []
        for choice in item.choices:
            ids = model.tokenizer(" " + choice, add_special_tokens=False)["input_ids"]
            inputs = model.prepare(item.prompt, item.image).extended([ids[:-1]], 0)
            chosen = divergence(model, inputs).chosen[0, 1]
            heads = HeadSet(Head(1, int(h)) for h in chosen.nonzero().flatten())
            reinforced_any |= bool(heads)
            with HeadScale(heads, alpha=2.0).applied(model), torch.no_grad():
                logits = model.hf(**inputs.extended([ids[-1:]], 0)).logits[0].float()
            rows = torch.log_softmax(logits, -1)[-len(ids) - 1 : -1]
            expected.append(float(rows.gather(1, torch.tensor(ids)[:, None]).sum()))
        np.testing.assert_allclose(scores, expected, atol=1e-4)
    assert reinforced_any


def test_image_errors_are_one_line(llava: Model, tmp_path: Path) -> None:
    folder = write_image_task(tmp_path, n_items=2)
    task = load_task(folder)
    with pytest.raises(InputError, match="text-only model"):
        evaluate(tiny_llama(), task)
    (folder / "images" / "000.png").unlink()
    with pytest.raises(InputError, match="No image file at"):
        evaluate(llava, load_task(folder))
    (folder / "images" / "000.png").write_text("not a png")
    with pytest.raises(InputError, match="Cannot read the image file"):
        evaluate(llava, load_task(folder))
    # ACT's head search runs token ids of text tasks only.
    with pytest.raises(InputError, match="text tasks"):
        left_pad(list(plan_choices(llava, task).sequences), 0)
