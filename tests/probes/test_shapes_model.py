"""shapes-llava: assembled offline from the default model, it answers from the image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from interp.errors import InputError, UnsupportedModelError
from interp.models import Model, load_model
from probes.organisms.shapes.evaluate import respond
from probes.organisms.shapes.hallucination import chair, parse_yes_no, pope_questions, pope_scores
from probes.organisms.shapes.model import CAPTION_QUESTION, load_shapes_llava, prompt
from probes.organisms.shapes.scenes import held_out_seeds, make_scene, render, scenes
from probes.organisms.shapes.train import _tokenize, conversation, patch_targets, pixels


@pytest.fixture(scope="module")
def shapes() -> Model:
    return load_model("shapes-llava")


def test_missing_weights_and_a_device_map_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match=r"python -m probes\.organisms\.shapes\.train"):
        load_shapes_llava(tmp_path / "tower.safetensors")
    with pytest.raises(InputError, match="one device"):
        load_model("shapes-llava", device_map="auto")


@pytest.mark.integration
def test_its_language_model_is_the_default_model(shapes: Model, default_model: Model) -> None:
    assert type(shapes.hf).__name__ == "LlavaForConditionalGeneration"
    assert shapes.geometry == default_model.geometry
    ids = default_model.encode("The capital of France is").input_ids
    with torch.no_grad():
        assert torch.equal(shapes.hf(input_ids=ids).logits, default_model.hf(input_ids=ids).logits)


@pytest.mark.integration
def test_its_captions_name_objects_of_the_image_and_none_without_it(shapes: Model) -> None:
    truths = scenes(held_out_seeds(6))
    seen = chair(respond(shapes, [CAPTION_QUESTION] * 6, truths, max_new_tokens=24), truths)
    blank = respond(shapes, [CAPTION_QUESTION] * 6, truths, blank=True, max_new_tokens=24)
    assert seen["recall"] >= 0.5  # held-out scenes: it reads them from the pixels
    assert chair(blank, truths)["mentions_per_caption"] == 0


@pytest.mark.integration
def test_training_inputs_match_what_the_processor_makes(shapes: Model) -> None:
    truths = scenes(held_out_seeds(3))
    images = [render(s) for s in truths]
    processor = shapes.processor.image_processor
    mean, std = torch.tensor(processor.image_mean), torch.tensor(processor.image_std)
    prepared = shapes.prepare([prompt("Describe the image.")] * 3, images)
    assert torch.equal(pixels(images, mean, std), prepared["pixel_values"])
    segments = conversation(truths[0], np.random.default_rng(0), caption_share=1.0, follow_ups=2)
    ids, target = _tokenize(shapes, segments)
    whole = shapes.prepare("".join(text for text, _ in segments), images[0]).input_ids[0]
    assert ids == whole.tolist()  # segment by segment = the processor on the whole text
    answer = shapes.tokenizer.decode([i for i, t in zip(ids, target, strict=True) if t][:12])
    assert answer.startswith(truths[0].caption())


def test_alignment_targets_weight_object_words_by_covered_share() -> None:
    scene = make_scene(held_out_seeds(1)[0])  # its bottom-left cell is empty
    words = {w: torch.full((4,), float(i)) for i, w in enumerate(["red", "green", "blue"])}
    words |= {w: torch.zeros(4) for w in ["yellow", "circle", "square", "triangle"]}
    empty = torch.full((4,), -1.0)
    target = patch_targets(scene, words, empty)
    assert target.shape == (16, 4)
    assert torch.equal(target[12], empty)  # patch (row 3, column 0): background only
    red_circle = next(o for o in scene.objects if o.name == "red circle")
    assert red_circle.cell == "bottom right"
    assert (target[15] > -1).all()  # the red circle covers part of the last patch


@pytest.mark.integration
def test_its_pope_answers_read_the_image_and_fall_to_chance_without_it(shapes: Model) -> None:
    truths = scenes(held_out_seeds(12))
    questions = pope_questions(truths, "adversarial")
    asked = [q.text for q in questions]
    seen = [truths[q.scene] for q in questions]
    with_image = pope_scores(questions, [parse_yes_no(a) for a in respond(shapes, asked, seen)])
    blank = respond(shapes, asked, seen, blank=True)
    without = pope_scores(questions, [parse_yes_no(a) for a in blank])
    assert with_image.accuracy[0] >= 0.75  # the shipped weights: 0.84 on 100 scenes
    assert without.accuracy[0] <= 0.65
