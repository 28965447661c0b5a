"""POPE and CHAIR of a vision-language model on held-out scenes, with the image and blank.

`python -m probes.organisms.shapes.evaluate` loads shapes-llava and prints both benchmarks on
the first `--scenes` scenes of the "eval" seed range, once with each scene's image and once
with a blank image (the scene's background, no shapes) scored against the same ground truth:
a model that uses the image should drop to about 50% POPE accuracy (always "no", or
guessing) and hallucinate in its captions. Answers come from greedy generation (`interp.generation`
with images), parsed as POPE and CHAIR parse them. A question asked in several POPE
settings is answered once.

Cost: one short greedy generation per distinct question (about 35 prompt tokens) and one
caption per scene, in batches, twice (image and blank).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from interp.errors import InputError, InterpError
from interp.generation import GenerationConfig, generate
from interp.models import Model
from probes.organisms.shapes.hallucination import (
    SETTINGS,
    chair,
    parse_yes_no,
    pope_questions,
    pope_scores,
)
from probes.organisms.shapes.model import CAPTION_QUESTION, WEIGHTS, load_shapes_llava, prompt
from probes.organisms.shapes.scenes import Scene, eval_seeds, render, scenes

CONDITIONS = ("image", "blank")


def respond(
    model: Model,
    questions: Sequence[str],
    truths: Sequence[Scene],
    *,
    blank: bool = False,
    max_new_tokens: int = 4,
    batch_size: int = 16,
) -> list[str]:
    """Greedy answers to one question per scene, each asked with its scene's image (or blank)."""
    out = generate(
        model,
        [prompt(q) for q in questions],
        GenerationConfig(max_new_tokens=max_new_tokens),
        images=[render(s, blank=blank) for s in truths],
        batch_size=batch_size,
    )
    return [g.text for g in out]


def evaluate(model: Model, n_scenes: int = 100, *, batch_size: int = 16) -> pd.DataFrame:
    """POPE (three settings) and CHAIR on `n_scenes` held-out scenes, with image and blank.

    Returns:
        One row per (condition, benchmark): condition, benchmark ("pope-random",
        "pope-popular", "pope-adversarial", "chair"), n, and that benchmark's scores
        (accuracy, precision, recall, f1, yes_share; or chair_s, chair_i, recall,
        mentions_per_caption).
    """
    truths = scenes(eval_seeds(n_scenes))
    questions = [q for setting in SETTINGS for q in pope_questions(truths, setting)]
    distinct = sorted({(q.scene, q.object) for q in questions})
    rows = []
    for condition in CONDITIONS:
        blank = condition == "blank"
        said = respond(
            model,
            [f"Is there a {name} in the image?" for _, name in distinct],
            [truths[i] for i, _ in distinct],
            blank=blank,
            batch_size=batch_size,
        )
        parsed = dict(zip(distinct, (parse_yes_no(s) for s in said), strict=True))
        scores = pope_scores(questions, [parsed[(q.scene, q.object)] for q in questions])
        for record in scores.to_dict("records"):
            setting = record.pop("setting")
            rows.append({"condition": condition, "benchmark": f"pope-{setting}", **record})
        captions = respond(
            model,
            [CAPTION_QUESTION] * len(truths),
            truths,
            blank=blank,
            max_new_tokens=40,
            batch_size=batch_size,
        )
        rows.append(
            {
                "condition": condition,
                "benchmark": "chair",
                "n": len(truths),
                **chair(captions, truths),
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=100, help="held-out scenes (default 100)")
    parser.add_argument("--weights", type=Path, default=WEIGHTS, help="tower.safetensors")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    try:
        if args.threads < 1:
            raise InputError(f"--threads must be at least 1, got {args.threads}.")
        eval_seeds(args.scenes)  # checked before the model loads
        torch.set_num_threads(args.threads)
        table = evaluate(load_shapes_llava(args.weights), args.scenes)
    except InterpError as exc:
        sys.exit(f"error: {str(exc).splitlines()[0]}")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
