"""Held-out scenes as task folders: POPE for `interp.effects`, captions for `interp.captions`.

`write_pope_task(folder, setting)` renders the first `n_scenes` scenes of the "eval" seed
range (or of `split="test"`) as PNG files and writes their POPE questions
(`probes.organisms.shapes.hallucination`) as a task folder `interp.tasks.load_task` reads:
`test.jsonl` with one item per question (the shapes-llava prompt with its image placeholder,
choices "Yes"/"No", the answer, the image), `calibration.jsonl`, the same on as many scenes
of the "validation" range (what a head search such as `interp effect act` tunes on, so no
scene it tunes on is scored), and `task.json` (zero shots). Choice scoring reads the tokens
" Yes" and " No", the ones shapes-llava answers with, so the task's accuracy is the greedy
POPE accuracy. Each split's negatives count frequencies and co-occurrences over its own
scenes, as an evaluation does.

`write_caption_task(folder)` writes the test scenes as a caption task
(`interp.captions.load_caption_task`): the caption request with each image, the objects it
shows, and the 12-object vocabulary, so CHAIR's parse is exact.

`blank` writes the background-only images instead, scored against the same ground truth.
`write_task_folders(folder)` writes all four (`pope-random`, `pope-popular`,
`pope-adversarial`, `captions`); `interp shapes tasks` is its command line.

Cost: one 64x64 PNG per scene (about 300 bytes) per folder and split, and a few kB of JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

from interp.errors import InputError
from probes.organisms.shapes.hallucination import SETTINGS, Setting, pope_questions
from probes.organisms.shapes.model import ANSWERS, CAPTION_QUESTION, CAPTION_TOKENS, prompt
from probes.organisms.shapes.scenes import OBJECTS, HeldOut, Scene, held_out_seeds, render, scenes

# The ranges a task folder's test split may come from; calibration is always "validation".
TEST_SPLITS: tuple[HeldOut, ...] = ("eval", "test")
CALIBRATION_SPLIT: HeldOut = "validation"


def write_pope_task(
    folder: str | Path,
    setting: Setting,
    n_scenes: int = 100,
    *,
    blank: bool = False,
    split: HeldOut = "eval",
) -> Path:
    """Write the POPE task of one setting: test on `n_scenes` scenes of `split`, calibration
    on as many "validation" scenes; return the folder."""
    folder = Path(folder)
    for name, source in (("test", _test_split(split)), ("calibration", CALIBRATION_SPLIT)):
        truths = _with_images(folder, n_scenes, blank, source)
        _write_jsonl(folder / f"{name}.jsonl", _pope_items(truths, setting))
    (folder / "task.json").write_text(json.dumps({"instruction": "", "shots": 0}))
    return folder


def write_caption_task(
    folder: str | Path, n_scenes: int = 100, *, blank: bool = False, split: HeldOut = "eval"
) -> Path:
    """Write the caption task on `n_scenes` scenes of `split`; return the folder."""
    folder = Path(folder)
    truths = _with_images(folder, n_scenes, blank, _test_split(split))
    lines = [
        {"prompt": prompt(CAPTION_QUESTION), "image": _image(s), "objects": sorted(s.names)}
        for s in truths
    ]
    _write_jsonl(folder / "test.jsonl", lines)
    meta = {"vocabulary": list(OBJECTS), "max_new_tokens": CAPTION_TOKENS}
    (folder / "task.json").write_text(json.dumps(meta))
    return folder


def write_task_folders(
    folder: str | Path, n_scenes: int = 100, *, blank: bool = False, split: HeldOut = "eval"
) -> list[Path]:
    """POPE in each setting and the caption task, as sibling folders under `folder`."""
    folder = Path(folder)
    written = [
        write_pope_task(folder / f"pope-{s}", s, n_scenes, blank=blank, split=split)
        for s in SETTINGS
    ]
    return [*written, write_caption_task(folder / "captions", n_scenes, blank=blank, split=split)]


def _test_split(split: HeldOut) -> HeldOut:
    """`split`, refused unless it is a range the test split may come from."""
    if split not in TEST_SPLITS:
        raise InputError(
            f"A task folder's test scenes come from {TEST_SPLITS}, not {split!r}"
            f" ({CALIBRATION_SPLIT!r} is its calibration split)."
        )
    return split


def _pope_items(truths: list[Scene], setting: Setting) -> list[dict]:
    """One multiple-choice item per POPE question on `truths`."""
    choices = [ANSWERS[True].strip(), ANSWERS[False].strip()]
    return [
        {
            "prompt": prompt(q.text),
            "choices": choices,
            "answer": 0 if q.answer else 1,
            "image": _image(truths[q.scene]),
        }
        for q in pope_questions(truths, setting)
    ]


def _with_images(folder: Path, n_scenes: int, blank: bool, split: HeldOut) -> list[Scene]:
    """The first `n_scenes` scenes of `split`, rendered into folder/images/ (blank:
    background only)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    truths = scenes(held_out_seeds(n_scenes, split))
    for scene in truths:
        render(scene, blank=blank).save(folder / _image(scene))
    return truths


def _image(scene: Scene) -> str:
    return f"images/{scene.seed}.png"


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
