"""Caption tasks and CHAIR (`interp.captions`): loading, parsing, and paired effects."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from interp.captions import (
    caption_effects,
    caption_objects,
    captions,
    chair,
    load_caption_task,
    mentioned_objects,
)
from interp.effects import EffectsConfig
from interp.errors import InputError
from interp.interventions.vhr import VHR, VhrConfig
from interp.tiny_models import tiny_llava

VOCABULARY = ["red circle", "blue square", "cat"]


def write_caption_task(folder: Path, objects: list[list[str]], vocabulary: list[str]) -> Path:
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for index, present in enumerate(objects):
        pixels = rng.integers(0, 255, (24 + 4 * index, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "images" / f"{index}.png")
        record = {"prompt": "Describe:", "image": f"images/{index}.png", "objects": present}
        lines.append(json.dumps(record) + "\n")
    (folder / "test.jsonl").write_text("".join(lines))
    (folder / "task.json").write_text(json.dumps({"vocabulary": vocabulary, "max_new_tokens": 6}))
    return folder


def test_mentions_are_whole_vocabulary_names_any_case_plural_allowed() -> None:
    text = "Two Red  circles, a blue squares; catalogue, a CAT and a purple star."
    assert mentioned_objects(text, VOCABULARY) == {"red circle", "blue square", "cat"}
    assert mentioned_objects("A catalogue of red circ les.", VOCABULARY) == frozenset()


def test_chair_counts_captions_and_mentions() -> None:
    truths = [frozenset({"red circle", "cat"}), frozenset({"blue square"})]
    texts = ["A red circle and a blue square.", "A blue square, a blue square."]
    counts = caption_objects(texts, truths, VOCABULARY)
    assert counts.to_dict("list") == {
        "mentions": [2, 2],
        "hallucinated_mentions": [1, 0],
        "mentioned": [2, 1],
        "hallucinated": [1, 0],
        "found": [1, 1],
        "present": [2, 1],
    }
    # reference CHAIR_i: every mention, 1 hallucinated of 4 ("blue square" twice counts 2)
    assert chair(texts, truths, VOCABULARY) == {
        "chair_s": 0.5,
        "chair_i": 1 / 4,
        "recall": 2 / 3,
        "mentions_per_caption": 2.0,
    }
    assert chair(texts, truths, VOCABULARY, "distinct") == {
        "chair_s": 0.5,
        "chair_i": 1 / 3,
        "recall": 2 / 3,
        "mentions_per_caption": 1.5,
    }
    assert np.isnan(chair(["Nothing."], truths[:1], VOCABULARY)["chair_i"])
    with pytest.raises(InputError, match="one object set per caption"):
        chair(texts, truths[:1], VOCABULARY)


def test_caption_task_folder_loads_and_bad_folders_are_one_line_errors(tmp_path: Path) -> None:
    task = load_caption_task(write_caption_task(tmp_path / "ok", [["cat"], []], VOCABULARY))
    assert task.name == "ok" and task.max_new_tokens == 6 and task.vocabulary == tuple(VOCABULARY)
    assert [item.objects for item in task.items] == [{"cat"}, frozenset()]
    assert Path(task.items[0].image).is_file()
    cases = {
        "not in the task's vocabulary": ([["dog"]], VOCABULARY),
        "'vocabulary' must list": ([["cat"]], []),
    }
    for index, (message, (objects, vocabulary)) in enumerate(cases.items()):
        folder = write_caption_task(tmp_path / f"bad{index}", objects, vocabulary)
        with pytest.raises(InputError, match=message):
            load_caption_task(folder)
    with pytest.raises(InputError):
        load_caption_task(tmp_path / "missing")


def test_caption_effects_pair_the_arms_and_an_identity_moves_nothing(tmp_path: Path) -> None:
    model = tiny_llava(n_layers=4)
    # A vocabulary of words the random model does say, so the counts are not all zero.
    probe = load_caption_task(write_caption_task(tmp_path / "probe", [[]] * 4, ["x"]))
    said = captions(model, probe, batch_size=4)
    words = sorted({w.lower() for text in said for w in re.findall(r"[^\W\d_]+", text)})[:6]
    assert len(words) >= 2, said
    objects = [words[i % 2 :: 2][:2] for i in range(4)]
    task = load_caption_task(write_caption_task(tmp_path / "task", objects, words))
    config = EffectsConfig(n_boot=50)
    identity = caption_effects(model, [task], VHR(VhrConfig(alpha=1.0)), config)
    table = identity.table.data
    assert table.metric.tolist() == ["chair_s", "hallucinated", "found"]
    assert table.lower_is_better.tolist() == [True, True, False]
    assert (table.difference == 0).all() and (table.improved == 0).all()
    items = identity.per_item.data
    assert (items.baseline_caption == items.intervened_caption).all()
    truths = [item.objects for item in task.items]
    expected = caption_objects(list(items.baseline_caption[:4]), truths, words)
    assert expected.found.sum() > 0 and expected.hallucinated.sum() > 0  # not all zeros
    found = items[items.metric == "found"].baseline_score.to_numpy()
    assert found.tolist() == expected.found.tolist()
    assert table.baseline.tolist()[1] == expected.hallucinated.mean()
    edited = caption_effects(model, [task], VHR(VhrConfig(alpha=8.0, last_layers=3)), config)
    changed = edited.per_item.data
    assert (changed.baseline_caption != changed.intervened_caption).any()
    assert (changed.baseline_caption == items.baseline_caption).all()  # same baseline arm
