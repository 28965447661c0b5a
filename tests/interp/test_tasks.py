"""Task loading, validation and choice scoring."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from interp.errors import InputError
from interp.models import Model
from interp.tasks import (
    TASKS_DIR,
    Item,
    Task,
    choice_logprobs,
    evaluate,
    load_items,
    load_task,
    shipped_tasks,
)


def test_shipped_tasks_have_disjoint_splits_and_demonstrations() -> None:
    assert set(shipped_tasks()) >= {"sentiment", "topic", "continents", "larger", "contrast"}
    for name in shipped_tasks():
        calibration, test = load_task(name, "calibration"), load_task(name, "test")
        shots = json.loads((TASKS_DIR / name / "task.json").read_text())["shots"]
        assert 40 <= len(test.items) <= 120 and len(calibration.items) >= 16
        # The instruction, then one block per demonstration.
        assert calibration.prefix == test.prefix and test.prefix.count("\n\n") == shots + 1
        prompts = {i.prompt for i in calibration.items}
        assert not prompts & {i.prompt for i in test.items}
        assert all(i.prompt not in test.prefix for i in calibration.items)


def write(tmp_path, lines: list[str]):
    path = tmp_path / "task.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = json.dumps({"prompt": "2+2=", "choices": ["4", "5"], "answer": "4"})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"prompt": "x", "choices": ["a", "b"]}), "'answer'"),
        (json.dumps({"prompt": "x", "choices": ["a"], "answer": 0}), "at least two"),
        (json.dumps({"prompt": "x", "choices": ["a", "a"], "answer": 0}), "distinct"),
        (json.dumps({"prompt": "x", "choices": ["a", "b"], "answer": 2}), "index 0..1"),
        (json.dumps({"prompt": "x", "choices": ["a", "b"], "answer": "c"}), "'answer'"),
        (json.dumps({"prompt": "", "choices": ["a", "b"], "answer": 0}), "'prompt'"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, line: str, message: str) -> None:
    path = write(tmp_path, [GOOD, line])
    with pytest.raises(InputError, match=message) as error:
        load_items(path)
    assert f"{path}:2" in str(error.value)


def test_user_jsonl_is_zero_shot_and_answers_may_be_strings(tmp_path) -> None:
    task = load_task(write(tmp_path, [GOOD, ""]))
    assert task.items == (Item("2+2=", ("4", "5"), 0),) and task.prefix == ""
    with pytest.raises(InputError, match="no items"):
        load_items(write(tmp_path, [""]))
    with pytest.raises(InputError, match="Did you mean 'sentiment'"):
        load_task("sentimnet")


def test_subsample_is_seeded() -> None:
    task = load_task("topic")
    assert task.subsample(5, seed=1) == task.subsample(5, seed=1)
    assert task.subsample(5, seed=1) != task.subsample(5, seed=2)
    assert task.subsample(None) is task and len(task.subsample(5).items) == 5


def brute_force(model: Model, prompt: str, choice: str) -> float:
    """Log-prob of the choice from one unpadded forward of prompt + choice."""
    prompt_ids = model.encode(prompt).ids()
    ids = model.tokenizer(" " + choice, add_special_tokens=False)["input_ids"]
    full = torch.cat([prompt_ids, torch.tensor(ids)])[None]
    with torch.no_grad():
        logprobs = torch.log_softmax(model.hf(full).logits[0].float(), -1)
    rows = logprobs[len(prompt_ids) - 1 : -1]
    return float(rows.gather(1, torch.tensor(ids)[:, None]).sum())


def test_choice_scores_match_unbatched_forwards(tiny: Model) -> None:
    items = (
        Item("Q: colour of the sky?\nA:", ("blue", "green", "b"), 0),
        Item("Hi", ("yes", "no way at all"), 1),
        Item("A much longer prompt that forces left padding in the batch:", ("x", "y"), 0),
    )
    task = Task("mixed", items, prefix="Answer briefly.\n\n")
    scores = choice_logprobs(tiny, task, batch_size=2)
    for item, row in zip(items, scores, strict=True):
        expected = [brute_force(tiny, task.text(item), c) for c in item.choices]
        np.testing.assert_allclose(row, expected, atol=1e-4)
    run = evaluate(tiny, task)
    assert run.predictions.tolist() == [int(np.argmax(s)) for s in scores]
    assert np.all(run.answer_logprob <= 0)


@pytest.mark.integration
def test_default_act_tasks_leave_headroom_on_the_default_model(default_model: Model) -> None:
    """ACT's default tasks sit between chance/ceiling (55-85%), so an effect of either sign
    can show; the first four shipped tasks are at ceiling or chance on this model."""
    from interp.interventions.act_search import DEFAULT_TASKS

    for name in DEFAULT_TASKS:
        accuracy = evaluate(default_model, load_task(name, "test")).accuracy
        assert 0.55 <= accuracy <= 0.85, (name, accuracy)
