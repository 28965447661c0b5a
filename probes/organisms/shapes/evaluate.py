"""POPE and CHAIR of a vision-language model on held-out scenes, with the image and blank.

`python -m probes.organisms.shapes.evaluate` loads shapes-llava and prints both benchmarks on
the first `--scenes` scenes of a held-out seed range (`--split`: "eval", the reported
evaluation scenes; "validation"; or "test", the final check neither of the others holds;
`probes.organisms.shapes.scenes.SEEDS`), once with each scene's image and once with a blank
image (the scene's background, no shapes) scored against the same ground truth: a model that
uses the image should drop to about 50% POPE accuracy (always "no", or guessing) and
hallucinate in its captions. Answers come from greedy generation (`interp.generation` with
images), parsed and scored by the reference rules (`probes.organisms.shapes.hallucination`).
A question asked in several POPE settings is answered once. `--out` saves the scores, every
POPE answer and every caption as parquet tables with their provenance, so other scoring
rules can be applied to the same answers without generating again.

Cost: one short greedy generation per distinct question (about 35 prompt tokens) and one
caption per scene, in batches, twice (image and blank).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from interp.errors import InputError, InterpError
from interp.generation import GenerationConfig, generate
from interp.models import Model
from interp.results import Bundle, ItemTable, Provenance, hash_inputs
from probes.organisms.shapes.hallucination import (
    SETTINGS,
    chair,
    parse_yes_no,
    pope_questions,
    pope_scores,
)
from probes.organisms.shapes.model import (
    CAPTION_QUESTION,
    CAPTION_TOKENS,
    WEIGHTS,
    load_shapes_llava,
    prompt,
)
from probes.organisms.shapes.scenes import HELD_OUT, HeldOut, Scene, held_out_seeds, render, scenes

CONDITIONS = ("image", "blank")
ANSWER_TOKENS = 4


@dataclass(frozen=True)
class Evaluation(Bundle):
    """One evaluation: the scores, every distinct POPE answer and every caption.

    Attributes:
        scores: one row per (condition, benchmark): condition, benchmark ("pope-random",
            "pope-popular", "pope-adversarial", "chair"), n, and that benchmark's scores
            (accuracy, precision, recall, f1, yes_share; or chair_s, chair_i, recall,
            mentions_per_caption).
        answers: one row per (condition, distinct POPE question): condition, seed, object,
            truth, text (the generated answer), parsed (POPE's parse: True for yes).
        captions: one row per (condition, scene): condition, seed, text.
    """

    scores: ItemTable
    answers: ItemTable
    captions: ItemTable


def respond(
    model: Model,
    questions: Sequence[str],
    truths: Sequence[Scene],
    *,
    blank: bool = False,
    max_new_tokens: int = ANSWER_TOKENS,
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


def evaluate(
    model: Model, n_scenes: int = 100, *, split: HeldOut = "eval", batch_size: int = 16
) -> Evaluation:
    """POPE (three settings) and CHAIR on the first `n_scenes` scenes of `split`, with image
    and blank, by the reference rules (per-object adversarial negatives, POPE's answer parse,
    CHAIR_i over every mention)."""
    seeds = held_out_seeds(n_scenes, split)
    truths = scenes(seeds)
    questions = [q for setting in SETTINGS for q in pope_questions(truths, setting)]
    distinct = sorted({(q.scene, q.object) for q in questions})
    scores, answers, captions = [], [], []
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
        answers += [
            {
                "condition": condition,
                "seed": truths[i].seed,
                "object": name,
                "truth": name in truths[i].names,
                "text": text,
                "parsed": parsed[(i, name)],
            }
            for (i, name), text in zip(distinct, said, strict=True)
        ]
        pope = pope_scores(questions, [parsed[(q.scene, q.object)] for q in questions])
        for record in pope.to_dict("records"):
            setting = record.pop("setting")
            scores.append({"condition": condition, "benchmark": f"pope-{setting}", **record})
        texts = respond(
            model,
            [CAPTION_QUESTION] * len(truths),
            truths,
            blank=blank,
            max_new_tokens=CAPTION_TOKENS,
            batch_size=batch_size,
        )
        captions += [
            {"condition": condition, "seed": s.seed, "text": t}
            for s, t in zip(truths, texts, strict=True)
        ]
        scores.append(
            {"condition": condition, "benchmark": "chair", "n": len(truths), **chair(texts, truths)}
        )
    provenance = Provenance(
        **model.provenance_fields(),
        analyzer="shapes_evaluate",
        config={
            "split": split,
            "seeds": [seeds.start, seeds.stop],
            "adversarial": "per_object",
            "parse": "pope",
            "chair_count": "mentions",
            "answer_tokens": ANSWER_TOKENS,
            "caption_tokens": CAPTION_TOKENS,
        },
        inputs_hash=hash_inputs([list(seeds), CAPTION_QUESTION]),
        n_inputs=n_scenes,
    )
    return Evaluation(
        *(ItemTable(pd.DataFrame(rows), provenance) for rows in (scores, answers, captions))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=100, help="held-out scenes (default 100)")
    parser.add_argument(
        "--split", choices=HELD_OUT, default="eval", help="held-out seed range (default eval)"
    )
    parser.add_argument("--weights", type=Path, default=WEIGHTS, help="tower.safetensors")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="folder for the parquet tables (and CSV copies)")
    args = parser.parse_args()
    try:
        if args.threads < 1:
            raise InputError(f"--threads must be at least 1, got {args.threads}.")
        held_out_seeds(args.scenes, args.split)  # checked before the model loads
        if args.out is not None and args.out.exists() and not args.out.is_dir():
            raise InputError(f"--out {args.out} is a file; give a folder.")
        torch.set_num_threads(args.threads)
        result = evaluate(load_shapes_llava(args.weights), args.scenes, split=args.split)
    except InterpError as exc:
        sys.exit(f"error: {str(exc).splitlines()[0]}")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(result.scores.data.round(3).to_string(index=False))
    if args.out is not None:
        for path in result.save(args.out):
            print(path)


if __name__ == "__main__":
    main()
