"""Multiple-choice tasks: loading (shipped or the user's JSONL) and choice scoring.

A task file is JSONL, one {"prompt": str, "choices": [str, ...], "answer": int | str} per line
(`answer` is the index of the right choice, or the choice itself), and optionally "image":
an image file's path, relative to the JSONL file's folder or absolute, for vision-language
models. Shipped tasks live in `data/tasks/<name>/`: `task.json` (description, instruction,
number of few-shot demonstrations) and `calibration.jsonl`, `test.jsonl`. The first `shots`
calibration items are the demonstrations, prepended to every prompt as "{prompt} {answer}"
blocks, and are left out of the calibration split.

Scoring (`choice_logprobs`): a choice's score is the sum of its tokens' log-probabilities
given the prompt, the choice joined with one space (" positive"). Sums are not
length-normalised: with single-token labels, as in ACT's classification setup, this is the
label's log-probability. Each forward reads prompt + choice[:-1], so single-token choices
share one forward per item; prompts are left-padded into batches. Cost: one forward per item
and distinct multi-token choice prefix; only the logits of the choice positions are kept.

Items with images: `Model.prepare` runs the processor on each prompt with its image (the
image placeholder goes in front of the text unless the prompt has one), and the choice's
token ids are appended to the expanded ids (`ModelInputs.extended`), so the choice is
tokenized exactly as for text. The prompts of a batch are left-padded together.
Interventions that choose per forward (VHR picks its heads at the last position of a
prompt) choose at the last position of prompt + choice[:-1]: the prompt's last token for
single-token choices (a real tokenizer's " yes" / " no"), else once per distinct choice
prefix (docs/methods.md §10).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from interp.errors import InputError, did_you_mean
from interp.models import Model
from interp.prompts import DATA_DIR, read_jsonl, read_text

TASKS_DIR = DATA_DIR / "tasks"
Split = Literal["calibration", "test"]


@dataclass(frozen=True)
class Item:
    """One multiple-choice question; `answer` indexes `choices`; `image` is a file's path."""

    prompt: str
    choices: tuple[str, ...]
    answer: int
    image: str | None = None


@dataclass(frozen=True)
class Task:
    """A named list of items and the prefix (instruction, demonstrations) every prompt gets."""

    name: str
    items: tuple[Item, ...]
    prefix: str = ""

    def text(self, item: Item) -> str:
        return self.prefix + item.prompt

    @property
    def chance(self) -> float:
        """The accuracy of guessing uniformly among each item's choices (mean of 1/choices)."""
        return float(np.mean([1 / len(item.choices) for item in self.items]))

    def subsample(self, n: int | None, seed: int = 0) -> Task:
        """A seeded random subset of n items (all when n is None or >= the size)."""
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise InputError(f"A subsample needs a whole number of items >= 1, got {n!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"A subsample's seed must be a whole number >= 0, got {seed!r}.")
        if n is None or n >= len(self.items):
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self.items), n, replace=False))
        return Task(self.name, tuple(self.items[i] for i in keep), self.prefix)


def image_paths(task: Task) -> list[str]:
    """The distinct image files a task's items name, sorted."""
    return sorted({item.image for item in task.items if item.image is not None})


def shipped_tasks() -> list[str]:
    return sorted(p.name for p in TASKS_DIR.iterdir() if (p / "task.json").is_file())


def load_items(path: str | Path) -> list[Item]:
    """Read and validate a JSONL task file; relative image paths resolve against its folder."""
    folder = Path(path).expanduser().parent
    items = [_parse_item(record, where, folder) for where, record in read_jsonl(path, "Task")]
    if not items:
        raise InputError(f"Task file {path} holds no items.")
    return items


def _parse_item(record: Any, where: str, folder: Path) -> Item:
    if not isinstance(record, dict) or not {"prompt", "choices", "answer"} <= set(record):
        raise InputError(f"{where}: expected an object with 'prompt', 'choices' and 'answer'.")
    prompt, choices, answer = record["prompt"], record["choices"], record["answer"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError(f"{where}: 'prompt' must be a non-empty string.")
    if (
        not isinstance(choices, list)
        or len(choices) < 2
        or not all(isinstance(c, str) and c.strip() for c in choices)
        or len(set(choices)) != len(choices)
    ):
        raise InputError(f"{where}: 'choices' must list at least two distinct non-empty strings.")
    if isinstance(answer, str) and answer in choices:
        answer = choices.index(answer)
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise InputError(
            f"{where}: 'answer' must be a choice or its index 0..{len(choices) - 1},"
            f" got {answer!r}."
        )
    image = record.get("image")
    if image is not None:
        if not isinstance(image, str) or not image.strip():
            raise InputError(f"{where}: 'image' must be a file's path (a non-empty string).")
        image = str(folder / Path(image).expanduser())  # an absolute path stays as it is
    return Item(prompt, tuple(choices), answer, image)


def demonstrations(items: list[Item], instruction: str = "") -> str:
    """The few-shot prefix: the instruction, then "{prompt} {answer}" blocks."""
    blocks = [f"{item.prompt} {item.choices[item.answer]}\n\n" for item in items]
    head = f"{instruction}\n\n" if instruction else ""
    return head + "".join(blocks)


def _task_meta(path: Path) -> dict[str, Any]:
    """task.json, checked: an object with optional 'instruction' (str) and 'shots' (int >= 0)."""
    try:
        meta = json.loads(read_text(path, "Task description"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc}).") from exc
    if not isinstance(meta, dict):
        raise InputError(f"{path}: expected a JSON object with 'instruction' and 'shots'.")
    meta.setdefault("shots", 0)
    meta.setdefault("instruction", "")
    shots, instruction = meta["shots"], meta["instruction"]
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 0:
        raise InputError(f"{path}: 'shots' must be a whole number >= 0, got {shots!r}.")
    if not isinstance(instruction, str):
        raise InputError(f"{path}: 'instruction' must be a string, got {instruction!r}.")
    return meta


def load_task(source: str | Path, split: Split = "test") -> Task:
    """A shipped task by name (`sentiment`), a task folder, or a user's `.jsonl` file.

    A folder (shipped or the user's) gives `split` with its few-shot prefix; a `.jsonl` file
    is used whole, zero-shot.
    """
    if split not in ("calibration", "test"):
        raise InputError(f"Unknown split {split!r}: use 'calibration' or 'test'.")
    path = Path(source)
    if path.suffix == ".jsonl":
        return Task(path.stem, tuple(load_items(path)))
    folder = path if path.is_dir() else TASKS_DIR / str(source)
    if not (folder / "task.json").is_file():
        raise InputError(
            f"No task {str(source)!r}: give a shipped name, a task folder or a .jsonl file."
            + did_you_mean(str(source), shipped_tasks())
        )
    meta = _task_meta(folder / "task.json")
    shots = meta["shots"]
    calibration = load_items(folder / "calibration.jsonl")
    if len(calibration) <= shots:
        raise InputError(f"{folder}: calibration.jsonl needs more than {shots} items.")
    if any(item.image for item in calibration[:shots]):
        raise InputError(
            f"{folder}: the {shots} few-shot demonstrations have images, which a text prefix"
            " cannot hold: set 'shots' to 0 in task.json."
        )
    prefix = demonstrations(calibration[:shots], meta["instruction"])
    items = calibration[shots:] if split == "calibration" else load_items(folder / "test.jsonl")
    return Task(folder.name, tuple(items), prefix)


@dataclass(frozen=True)
class ChoicePlan:
    """The forwards that score a task's choices, and which log-probs each choice sums.

    Attributes:
        sequences: each distinct prompt + choice[:-1]: token ids for text items (what
            ACT's head search runs); (text, image, *choice[:-1] ids) for image items.
        tails: per sequence, how many last positions predict choice tokens.
        reads: per item, per choice: (sequence index, the choice's token ids).
    """

    sequences: tuple[tuple, ...]
    tails: tuple[int, ...]
    reads: tuple[tuple[tuple[int, tuple[int, ...]], ...], ...]


def plan_choices(model: Model, task: Task) -> ChoicePlan:
    """Tokenize every item's prompt and choices into the forwards `choice_logprobs` runs.

    Prompts of a text task are token ids; in a task with images every prompt is kept as
    (text, image or None), which `Model.prepare` expands at run time.
    """
    with_images = any(item.image is not None for item in task.items)

    def prompt(item: Item) -> tuple:
        if with_images:
            return (task.text(item), item.image)
        return tuple(model.encode(task.text(item)).ids().tolist())

    sequences: dict[tuple, int] = {}  # prompt + choice[:-1] -> sequence index
    tails: list[int] = []
    reads = []
    for item in task.items:
        start = prompt(item)
        per_choice = []
        for choice in item.choices:
            ids = model.tokenizer(" " + choice, add_special_tokens=False)["input_ids"]
            key = (*start, *ids[:-1])
            if not with_images:
                model.check_length(len(key) + 1, what="prompt with its choice")
            if key not in sequences:
                sequences[key] = len(sequences)
                tails.append(len(ids))
            per_choice.append((sequences[key], tuple(ids)))
        reads.append(tuple(per_choice))
    return ChoicePlan(tuple(sequences), tuple(tails), tuple(reads))


def read_choice(logprobs: torch.Tensor, ids: tuple[int, ...]) -> float:
    """A choice's score from its sequence's log-softmax rows [tail, vocab]: the last
    len(ids) rows predict its tokens."""
    return float(logprobs[-len(ids) :].gather(1, torch.tensor(ids)[:, None]).sum())


def choice_logprobs(model: Model, task: Task, batch_size: int = 16) -> list[np.ndarray]:
    """Per item, the summed log-probability of each choice given the prompt (see module doc).

    Raises:
        InputError: an item's image is missing or unreadable, or given to a text-only model.
    """
    plan = plan_choices(model, task)
    rows = _tail_logprobs(model, plan, batch_size)
    return [np.array([read_choice(rows[seq], ids) for seq, ids in item]) for item in plan.reads]


def left_pad(
    sequences: list[tuple[int, ...]], pad: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, position_ids) [batch, pos], left-padded: all end at -1.

    Raises:
        InputError: a plan sequence of a task with images (those go through the processor).
    """
    if any(sequence and isinstance(sequence[0], str) for sequence in sequences):
        raise InputError(
            "This scoring (ACT's head search) takes token ids of text tasks; a task with"
            " images is scored by interp.tasks.evaluate."
        )
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, sequence in enumerate(sequences):
        ids[row, width - len(sequence) :] = torch.tensor(sequence)
        mask[row, width - len(sequence) :] = 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp_min(0)


def _batch_inputs(model: Model, sequences: list[tuple]) -> Mapping[str, torch.Tensor]:
    """Model kwargs of a batch of plan sequences, left-padded (text ids, or prepared images)."""
    pad = model.tokenizer.pad_token_id
    if not isinstance(sequences[0][0], str):
        ids, mask, positions = left_pad(sequences, pad)
        return {
            "input_ids": ids.to(model.device),
            "attention_mask": mask.to(model.device),
            "position_ids": positions.to(model.device),
        }
    inputs = model.prepare([s[0] for s in sequences], [s[1] for s in sequences])
    inputs = inputs.extended([s[2:] for s in sequences], 0 if pad is None else pad)
    for row, length in enumerate(inputs.lengths):
        model.check_length(length + 1, what=f"prompt {row} of the batch with its choice")
    return inputs


@torch.no_grad()
def _tail_logprobs(model: Model, plan: ChoicePlan, batch_size: int) -> list[torch.Tensor]:
    """Log-softmax rows [tail, vocab] of the last `tail` positions of each sequence."""
    sequences, tails = plan.sequences, plan.tails
    order = sorted(range(len(sequences)), key=lambda i: _length(sequences[i]))
    out: list[torch.Tensor] = [torch.empty(0)] * len(sequences)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        inputs = _batch_inputs(model, [sequences[i] for i in chunk])
        keep = max(tails[i] for i in chunk)  # logits only where choice tokens are predicted
        logits = model.hf(**inputs, logits_to_keep=keep).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
        for row, index in enumerate(chunk):
            out[index] = logprobs[row]
    return out


def _length(sequence: tuple) -> int:
    """Sort key for tight padding: token count, or a text's characters plus its tail ids."""
    if sequence and isinstance(sequence[0], str):
        return len(sequence[0]) + len(sequence) - 2
    return len(sequence)


@dataclass(frozen=True)
class TaskRun:
    """Per-item predictions of one task: `scores` [item][choice], `correct` [item] bool."""

    task: str
    scores: list[np.ndarray]
    answers: np.ndarray
    predictions: np.ndarray

    @property
    def correct(self) -> np.ndarray:
        return self.predictions == self.answers

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())

    @property
    def answer_logprob(self) -> np.ndarray:
        """[item] log-probability of the right choice, normalised over the choices."""
        return np.array(
            [s[a] - np.logaddexp.reduce(s) for s, a in zip(self.scores, self.answers, strict=True)]
        )


def evaluate(model: Model, task: Task, batch_size: int = 16) -> TaskRun:
    """Score every item: the prediction is the choice with the highest summed log-prob."""
    scores = choice_logprobs(model, task, batch_size)
    return TaskRun(
        task=task.name,
        scores=scores,
        answers=np.array([item.answer for item in task.items]),
        predictions=np.array([int(np.argmax(s)) for s in scores]),
    )


def choice_accuracy(run: TaskRun) -> np.ndarray:
    """[item] 1.0 where the highest-scoring choice is the answer (the paper's metric)."""
    return run.correct.astype(float)


def choice_logprob(run: TaskRun) -> np.ndarray:
    """[item] log-probability of the answer, normalised over the choices (continuous)."""
    return run.answer_logprob
