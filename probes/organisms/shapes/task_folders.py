"""Held-out scenes as task folders: POPE for `interp.effects`, captions for `interp.captions`.

`write_pope_task(folder, setting)` renders the first `n_scenes` scenes of the "eval" seed
range as PNG files and writes their POPE questions (`probes.organisms.shapes.hallucination`) as a
task folder `interp.tasks.load_task` reads: `test.jsonl` with one item per question (the
shapes-llava prompt with its image placeholder, choices "Yes"/"No", the answer, the image),
`calibration.jsonl` (the same items: nothing here is calibrated) and `task.json` (zero
shots). Choice scoring reads the tokens " Yes" and " No", the ones shapes-llava answers
with, so the task's accuracy is the greedy POPE accuracy.

`write_caption_task(folder)` writes the same scenes as a caption task
(`interp.captions.load_caption_task`): the caption request with each image, the objects it
shows, and the 12-object vocabulary, so CHAIR's parse is exact.

`blank` writes the background-only images instead, scored against the same ground truth.
`write_task_folders(folder)` writes all four (`pope-random`, `pope-popular`,
`pope-adversarial`, `captions`); `interp shapes tasks` is its command line.

Cost: one 64x64 PNG per scene (about 300 bytes) per folder and a few kB of JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

from probes.organisms.shapes.hallucination import SETTINGS, Setting, pope_questions
from probes.organisms.shapes.model import ANSWERS, CAPTION_QUESTION, prompt
from probes.organisms.shapes.scenes import OBJECTS, Scene, eval_seeds, render, scenes

CAPTION_TOKENS = 40


def write_pope_task(
    folder: str | Path, setting: Setting, n_scenes: int = 100, *, blank: bool = False
) -> Path:
    """Write the POPE task of one setting on `n_scenes` held-out scenes; return the folder."""
    folder, truths = _with_images(folder, n_scenes, blank)
    choices = [ANSWERS[True].strip(), ANSWERS[False].strip()]
    lines = [
        {
            "prompt": prompt(q.text),
            "choices": choices,
            "answer": 0 if q.answer else 1,
            "image": _image(truths[q.scene]),
        }
        for q in pope_questions(truths, setting)
    ]
    _write_jsonl(folder / "test.jsonl", lines)
    _write_jsonl(folder / "calibration.jsonl", lines)
    (folder / "task.json").write_text(json.dumps({"instruction": "", "shots": 0}))
    return folder


def write_caption_task(folder: str | Path, n_scenes: int = 100, *, blank: bool = False) -> Path:
    """Write the caption task on `n_scenes` held-out scenes; return the folder."""
    folder, truths = _with_images(folder, n_scenes, blank)
    lines = [
        {"prompt": prompt(CAPTION_QUESTION), "image": _image(s), "objects": sorted(s.names)}
        for s in truths
    ]
    _write_jsonl(folder / "test.jsonl", lines)
    meta = {"vocabulary": list(OBJECTS), "max_new_tokens": CAPTION_TOKENS}
    (folder / "task.json").write_text(json.dumps(meta))
    return folder


def write_task_folders(
    folder: str | Path, n_scenes: int = 100, *, blank: bool = False
) -> list[Path]:
    """POPE in each setting and the caption task, as sibling folders under `folder`."""
    folder = Path(folder)
    written = [write_pope_task(folder / f"pope-{s}", s, n_scenes, blank=blank) for s in SETTINGS]
    return [*written, write_caption_task(folder / "captions", n_scenes, blank=blank)]


def _with_images(folder: str | Path, n_scenes: int, blank: bool) -> tuple[Path, list[Scene]]:
    """The folder, with the held-out scenes rendered into images/ (blank: background only)."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    truths = scenes(eval_seeds(n_scenes))
    for scene in truths:
        render(scene, blank=blank).save(folder / _image(scene))
    return folder, truths


def _image(scene: Scene) -> str:
    return f"images/{scene.seed}.png"


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
