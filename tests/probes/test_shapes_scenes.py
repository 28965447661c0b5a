"""Synthetic scenes and the CHAIR/POPE analogues: exact ground truth, checked by hand."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from interp.errors import ConfigError, InputError
from interp.tasks import load_task
from probes.organisms.shapes.hallucination import (
    chair,
    mentioned_objects,
    parse_yes_no,
    pope_questions,
    pope_scores,
)
from probes.organisms.shapes.scenes import (
    CELLS,
    HELD_OUT,
    IMAGE_SIZE,
    OBJECTS,
    PARTNER,
    SEEDS,
    Scene,
    SceneObject,
    held_out_seeds,
    make_scene,
    object_masks,
    render,
    scenes,
)
from probes.organisms.shapes.task_folders import write_pope_task

MANY = scenes(range(400))


def _scene(*names: str, seed: int = 0) -> Scene:
    """A hand-made scene with the named objects in the first cells."""
    objects = tuple(
        SceneObject(
            *name.split(" "), CELLS[i], (16 + 32 * (i % 2), 16 + 32 * (i // 2)), 20, (9, 9, 9)
        )
        for i, name in enumerate(names)
    )
    return Scene(seed, 0, objects)


def test_a_scene_is_a_function_of_its_seed_and_ranges_are_disjoint() -> None:
    assert make_scene(7) == make_scene(7)
    assert len({make_scene(s) for s in range(20)}) == 20
    ranges = list(SEEDS.values())
    for i, first in enumerate(ranges):
        for second in ranges[i + 1 :]:  # ranges: disjoint when one ends before the other starts
            assert first.stop <= second.start or second.stop <= first.start
    assert set(SEEDS) == {"train", *HELD_OUT}


def test_held_out_seeds_come_from_the_named_range() -> None:
    assert held_out_seeds(3) == range(1_000_000, 1_000_003)  # "eval", the reported scenes
    assert held_out_seeds(2, "validation") == range(1_100_000, 1_100_002)
    assert held_out_seeds(2, "test") == range(1_200_000, 1_200_002)
    for split in HELD_OUT:
        assert set(held_out_seeds(len(SEEDS[split]), split)) == set(SEEDS[split])
    with pytest.raises(InputError, match="Held-out scenes come from"):
        held_out_seeds(3, "train")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="held-out scenes"):
        held_out_seeds(len(SEEDS["test"]) + 1, "test")


def test_scenes_hold_one_to_four_distinct_objects_in_distinct_cells() -> None:
    counts = Counter(len(s.objects) for s in MANY)
    assert set(counts) == {1, 2, 3, 4}
    for scene in MANY:
        assert len(scene.names) == len(scene.objects)
        assert len({o.cell for o in scene.objects}) == len(scene.objects)
        assert [o.cell for o in scene.objects] == sorted(
            (o.cell for o in scene.objects), key=CELLS.index
        )


def test_rendered_pixels_are_the_objects_exactly() -> None:
    for scene in MANY[:50]:
        image = np.asarray(render(scene))
        masks = object_masks(scene)
        assert image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
        assert not (masks.sum(0) > 1).any()  # objects never overlap
        for obj, mask in zip(scene.objects, masks, strict=True):
            assert mask.sum() > 100
            assert (image[mask] == obj.rgb).all()
        assert (image[~masks.any(0)] == scene.background).all()
        assert (np.asarray(render(scene, blank=True)) == scene.background).all()


def test_partners_co_occur_more_often_than_chance() -> None:
    with_object = Counter(n for s in MANY for n in s.names)
    with_partner = Counter(n for s in MANY for n in s.names if PARTNER[n] in s.names)
    for name in OBJECTS:
        partner_rate = with_object[PARTNER[name]] / len(MANY)
        assert with_partner[name] / with_object[name] > partner_rate


def test_captions_parse_back_to_their_scene() -> None:
    for scene in MANY:
        assert mentioned_objects(scene.caption()) == scene.names
    assert mentioned_objects("Two Red circles and a blue  square; a purple star.") == {
        "red circle",
        "blue square",
    }


def test_chair_counts_captions_and_mentions() -> None:
    truths = [_scene("red circle", "blue square"), _scene("green triangle")]
    captions = ["A red circle and a yellow square.", "A green triangle, a green triangle."]
    # every mention (reference): 1 hallucinated of 4; one per object and caption: 1 of 3
    assert chair(captions, truths) == {
        "chair_s": 0.5,
        "chair_i": 1 / 4,
        "recall": 2 / 3,
        "mentions_per_caption": 2.0,
    }
    assert chair(captions, truths, "distinct")["chair_i"] == 1 / 3
    assert np.isnan(chair(["Nothing."], truths[:1])["chair_i"])
    with pytest.raises(InputError, match="one object set per caption"):
        chair(captions, truths[:1])


def test_pope_questions_are_balanced_and_negatives_absent() -> None:
    truths = MANY[:100]
    for setting in ("random", "popular", "adversarial"):
        questions = pope_questions(truths, setting)
        for index, scene in enumerate(truths):
            mine = [q for q in questions if q.scene == index]
            assert {q.object for q in mine if q.answer} == scene.names
            negatives = [q.object for q in mine if not q.answer]
            assert len(negatives) == len(scene.names) == len(set(negatives))
            assert not set(negatives) & scene.names
    assert pope_questions(truths, "random", seed=1) == pope_questions(truths, "random", seed=1)
    with pytest.raises(ConfigError, match="POPE setting"):
        pope_questions(truths, "hard")  # type: ignore[arg-type]


def test_popular_and_adversarial_negatives_follow_the_counts() -> None:
    # Frequencies: red circle 3, blue square 2, green triangle 2, yellow circle 1.
    # Co-occurring with "yellow circle": green triangle twice, blue square never.
    truths = [
        _scene("red circle", "blue square"),
        _scene("red circle", "blue square"),
        _scene("red circle", "green triangle", "yellow circle"),
        _scene("green triangle", "yellow circle"),
        _scene("yellow circle"),
    ]
    popular = [q.object for q in pope_questions(truths, "popular") if q.scene == 4 and not q.answer]
    adversarial = [
        q.object for q in pope_questions(truths, "adversarial") if q.scene == 4 and not q.answer
    ]
    assert popular == ["red circle"]
    assert adversarial == ["green triangle"]


def test_adversarial_negatives_per_present_object_as_pope() -> None:
    """Scene 0 holds A (red circle) and B (blue square). Over the scenes: co(A, C) = 3 and
    co(A, D) = 2 (C green triangle, D yellow circle), co(B, E) = 3 and co(B, D) = 2
    (E red square). POPE, per object: A -> C, then B -> E. Summed over the scene's objects:
    D 4, C 3, E 3, so D comes first."""
    a, b, c, d, e = "red circle", "blue square", "green triangle", "yellow circle", "red square"
    truths = [_scene(a, b), *[_scene(a, c)] * 3, *[_scene(a, d), _scene(b, d)] * 2]
    truths += [_scene(b, e)] * 3

    def negatives(**options: object) -> list[str]:
        asked = pope_questions(truths, "adversarial", **options)  # type: ignore[arg-type]
        return [q.object for q in asked if q.scene == 0 and not q.answer]

    assert negatives() == [c, e]
    assert negatives(adversarial="summed")[0] == d
    with pytest.raises(ConfigError, match="adversarial"):
        negatives(adversarial="sum")


def test_pope_scores_and_yes_no_parsing() -> None:
    truths = [_scene("red circle")]
    questions = pope_questions(truths, "popular")
    answers = [parse_yes_no(a) for a in ("Yes, there is.", "no")]
    assert answers == [True, False]
    perfect = pope_scores(questions, answers).iloc[0]
    assert (perfect.accuracy, perfect.f1, perfect.yes_share) == (1.0, 1.0, 0.5)
    always_yes = pope_scores(questions, [True, True]).iloc[0]
    assert (always_yes.accuracy, always_yes.precision, always_yes.recall) == (0.5, 0.5, 1.0)
    # the first-word parse leaves an answer naming neither unparsed: a "yes" or wrong
    assert parse_yes_no("I cannot tell.", "first_word") is None
    unparsed = pope_scores(questions, [None, None]).iloc[0]
    assert (unparsed.accuracy, unparsed.yes_share) == (0.5, 1.0)
    wrong = pope_scores(questions, [None, None], unparsed="wrong").iloc[0]
    assert (wrong.accuracy, wrong.yes_share) == (0.0, 0.0)
    with pytest.raises(ConfigError, match="parse rule"):
        parse_yes_no("Yes", "first")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("answer", "pope", "first_word"),
    [
        # POPE's code: the text before the first ".", commas dropped, split at spaces;
        # "no" if a word is exactly "no", "No" or "not", otherwise "yes".
        ("Yes", True, True),
        ("No.", False, False),
        (" No", False, False),  # the words "" and "No"
        ("There is not.", False, None),
        ("Yes, but it is not red.", False, True),  # "Yes but it is not red": has "not"
        ("Not that I can see.", True, None),  # "Not" is not one of the three words
        ("NO", True, False),  # nor is "NO": POPE's test is case-sensitive
        ("no!", True, False),  # the word is "no!", not "no"
        ("Nothing.", True, None),
        ("I see one. No, not here.", True, False),  # only the first sentence counts
        ("", True, None),
    ],
)
def test_yes_no_parse_as_popes_evaluation_code(
    answer: str, pope: bool, first_word: bool | None
) -> None:
    assert parse_yes_no(answer) is pope
    assert parse_yes_no(answer, "first_word") is first_word


def test_pope_scores_with_popes_parse_by_hand() -> None:
    """Truths yes, yes, no, no. POPE's parse of the answers: yes, yes ("Not" is not its "not"),
    yes ("I think so"), no ("not" in "Yes, but it is not red"): TP 2, FP 1, TN 1, FN 0, so
    accuracy 3/4, precision 2/3, recall 1, F1 2 * (2/3) / (5/3) = 0.8, yes share 3/4. The
    first-word parse: yes, -, -, yes; unparsed as yes: all yes, accuracy 1/2, precision 1/2;
    unparsed wrong: only the first is right (1/4), two said yes (1/2)."""
    questions = pope_questions([_scene("red circle", "blue square")], "popular")
    assert [q.answer for q in questions] == [True, True, False, False]
    said = ["Yes", "Not that I can see.", "I think so.", "Yes, but it is not red."]
    pope = pope_scores(questions, [parse_yes_no(a) for a in said]).iloc[0]
    assert pope.accuracy == 0.75 and pope.recall == 1.0 and pope.yes_share == 0.75
    assert pope.precision == pytest.approx(2 / 3) and pope.f1 == pytest.approx(0.8)
    first_word = [parse_yes_no(a, "first_word") for a in said]
    as_yes = pope_scores(questions, first_word).iloc[0]
    assert (as_yes.accuracy, as_yes.precision, as_yes.yes_share) == (0.5, 0.5, 1.0)
    wrong = pope_scores(questions, first_word, unparsed="wrong").iloc[0]
    assert (wrong.accuracy, wrong.yes_share) == (0.25, 0.5)


def test_pope_task_folder_loads_as_an_image_task(tmp_path: Path) -> None:
    folder = write_pope_task(tmp_path / "pope", "adversarial", n_scenes=3)
    task = load_task(folder)
    questions = pope_questions(scenes(held_out_seeds(3)), "adversarial")
    assert len(task.items) == len(questions)
    for item, question in zip(task.items, questions, strict=True):
        assert question.text in item.prompt and item.choices == ("Yes", "No")
        assert item.answer == (0 if question.answer else 1)
        assert Path(item.image).is_file()


def _seeds(task_items: tuple) -> set[int]:
    """The scene seeds of a task's items, read from their image file names."""
    return {int(Path(item.image).stem) for item in task_items}


@pytest.mark.parametrize("split", ["eval", "test"])
def test_pope_task_calibration_and_test_share_no_scene(tmp_path: Path, split: str) -> None:
    folder = write_pope_task(tmp_path / "pope", "random", n_scenes=4, split=split)  # type: ignore[arg-type]
    test, calibration = load_task(folder), load_task(folder, "calibration")
    assert _seeds(test.items) == set(held_out_seeds(4, split))  # type: ignore[arg-type]
    assert _seeds(calibration.items) == set(held_out_seeds(4, "validation"))
    assert _seeds(test.items).isdisjoint(_seeds(calibration.items))
    questions = pope_questions(scenes(held_out_seeds(4, "validation")), "random")
    assert [i.answer for i in calibration.items] == [0 if q.answer else 1 for q in questions]
    with pytest.raises(InputError, match="calibration split"):
        write_pope_task(tmp_path / "bad", "random", n_scenes=2, split="validation")
