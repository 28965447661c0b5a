"""POPE on held-out scenes as an image task folder, for `interp.effects` and `interp effect`.

`write_pope_task(folder, setting)` renders the first `n_scenes` scenes of the "eval" seed
range as PNG files and writes their POPE questions (`interp.shapes.hallucination`) as a
task folder `interp.tasks.load_task` reads: `test.jsonl` with one item per question (the
shapes-llava prompt with its image placeholder, choices "Yes"/"No", the answer, the image),
`calibration.jsonl` (the same items: nothing here is calibrated) and `task.json` (zero
shots). Choice scoring reads the tokens " Yes" and " No", the ones shapes-llava answers
with, so the task's accuracy is the greedy POPE accuracy. `blank` writes the
background-only images instead, scored against the same answers.

Cost: one 64x64 PNG per scene (about 300 bytes) and a few kB of JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

from interp.shapes.hallucination import Setting, pope_questions
from interp.shapes.model import ANSWERS, prompt
from interp.shapes.scenes import eval_seeds, render, scenes


def write_pope_task(
    folder: str | Path, setting: Setting, n_scenes: int = 100, *, blank: bool = False
) -> Path:
    """Write the POPE task of one setting on `n_scenes` held-out scenes; return the folder."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    truths = scenes(eval_seeds(n_scenes))
    for scene in truths:
        render(scene, blank=blank).save(folder / "images" / f"{scene.seed}.png")
    choices = [ANSWERS[True].strip(), ANSWERS[False].strip()]
    lines = [
        json.dumps(
            {
                "prompt": prompt(q.text),
                "choices": choices,
                "answer": 0 if q.answer else 1,
                "image": f"images/{truths[q.scene].seed}.png",
            }
        )
        for q in pope_questions(truths, setting)
    ]
    text = "\n".join(lines) + "\n"
    (folder / "test.jsonl").write_text(text)
    (folder / "calibration.jsonl").write_text(text)
    (folder / "task.json").write_text(json.dumps({"instruction": "", "shots": 0}))
    return folder
