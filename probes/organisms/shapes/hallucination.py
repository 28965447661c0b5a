"""Hallucination benchmarks with exact ground truth on synthetic scenes: CHAIR and POPE analogues.

CHAIR (Rohrbach et al., EMNLP 2018; `interp.captions`) parses a caption for objects of a
closed vocabulary and compares them with the image's objects. Here the vocabulary is the 12
"colour shape" objects of `probes.organisms.shapes.scenes`, so parsing is exact.

POPE (Li et al., EMNLP 2023) asks "Is there a <object> in the image?" for each object in
the image (answer yes) and as many absent ones (answer no), drawn three ways: "random"
(uniform among absent objects), "popular" (the absent objects most frequent in the data
set's ground truth) and "adversarial": as POPE's code, for each object in the image in turn,
the absent object not yet chosen that co-occurs most often with *that* object
(`adversarial="per_object"`); `"summed"` (the toolkit's earlier rule) ranks absent objects
by co-occurrence summed over all the image's objects. Frequencies and co-occurrences are
counted over the scenes evaluated, as POPE counts them over its annotation set. Scores:
accuracy, precision, recall, F1 and the share of "yes" answers. Answers are parsed as POPE's
evaluation code parses them (`parse_yes_no`: "no" only when the first sentence has the word
"no", "No" or "not", otherwise "yes"); `rule="first_word"` (the toolkit's earlier parse)
takes the first yes/no word and leaves an answer with neither unparsed, which
`pope_scores` counts as "yes" by default or, with `unparsed="wrong"` (the earlier rule), as
wrong.

Everything here is pure Python on scene descriptions and strings; no model.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import permutations
from typing import Literal

import numpy as np
import pandas as pd

from interp import captions
from interp.errors import ConfigError, InputError
from probes.organisms.shapes.scenes import OBJECTS, Scene

Setting = Literal["random", "popular", "adversarial"]
SETTINGS: tuple[Setting, ...] = ("random", "popular", "adversarial")

_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
_POPE_NO = frozenset({"no", "No", "not"})  # POPE's code: words that make an answer "no"


def mentioned_objects(caption: str) -> frozenset[str]:
    """The vocabulary objects a caption names ("colour shape", plural allowed, any case)."""
    return captions.mentioned_objects(caption, OBJECTS)


def caption_objects(texts: Sequence[str], truths: Sequence[Scene]) -> pd.DataFrame:
    """Per caption: objects mentioned, hallucinated, found and present (`interp.captions`)."""
    return captions.caption_objects(texts, [scene.names for scene in truths], OBJECTS)


def chair(
    texts: Sequence[str],
    truths: Sequence[Scene],
    count: Literal["mentions", "distinct"] = "mentions",
) -> dict[str, float]:
    """CHAIR_s, CHAIR_i, recall and mentions per caption against the scenes (`interp.captions`)."""
    return captions.chair(texts, [scene.names for scene in truths], OBJECTS, count)


@dataclass(frozen=True)
class PopeQuestion:
    """One POPE question: which scene, which object, the true answer and how it was drawn."""

    scene: int
    object: str
    answer: bool
    setting: Setting

    @property
    def text(self) -> str:
        return f"Is there a {self.object} in the image?"


def pope_questions(
    truths: Sequence[Scene],
    setting: Setting,
    seed: int = 0,
    adversarial: Literal["per_object", "summed"] = "per_object",
) -> list[PopeQuestion]:
    """Balanced POPE questions: each scene's objects (yes) and as many absent ones (no).

    `scene` in each question is the index into `truths`. Negatives per setting: "random"
    draws uniformly (seeded); "popular" takes the most frequent absent objects; "adversarial"
    per present object (scene order) the unchosen absent object co-occurring most with it
    (POPE's code; `adversarial="summed"`: most co-occurrences summed over the scene's
    objects). Ties go to frequency, then vocabulary order; counts are over `truths`.

    Raises:
        ConfigError: an unknown setting.
    """
    if setting not in SETTINGS:
        raise ConfigError(f"POPE setting must be one of {SETTINGS}, not {setting!r}.")
    if adversarial not in ("per_object", "summed"):
        raise ConfigError(
            f"POPE adversarial must be 'per_object' or 'summed', not {adversarial!r}."
        )
    frequency = Counter(name for scene in truths for name in scene.names)
    co_occurrence = Counter(
        pair for scene in truths for pair in permutations(sorted(scene.names), 2)
    )
    rank = {name: i for i, name in enumerate(OBJECTS)}
    rng = np.random.default_rng(seed)
    questions = []
    for index, scene in enumerate(truths):
        absent = [o for o in OBJECTS if o not in scene.names]
        n = len(scene.names)
        if setting == "random":
            negatives = [absent[i] for i in rng.choice(len(absent), size=n, replace=False)]
        elif setting == "popular":
            negatives = sorted(absent, key=lambda o: (-frequency[o], rank[o]))[:n]
        elif adversarial == "summed":
            negatives = sorted(
                absent,
                key=lambda o: (
                    -sum(co_occurrence[(p, o)] for p in scene.names),
                    -frequency[o],
                    rank[o],
                ),
            )[:n]
        else:
            negatives = []
            for present in scene.objects:
                p = present.name
                left = [o for o in absent if o not in negatives]
                ranked = sorted(
                    left, key=lambda o: (-co_occurrence[(p, o)], -frequency[o], rank[o])
                )
                negatives.append(ranked[0])
        questions += [PopeQuestion(index, o.name, True, setting) for o in scene.objects]
        questions += [PopeQuestion(index, o, False, setting) for o in negatives]
    return questions


def parse_yes_no(answer: str, rule: Literal["pope", "first_word"] = "pope") -> bool | None:
    """Whether an answer says yes (True) or no (False).

    "pope" (POPE's evaluation code): keep the text before the first ".", drop commas, split
    at spaces; the answer is no if a word is exactly "no", "No" or "not", else yes (never
    None). "first_word": the first "yes" or "no" (any case, whole word), None if neither,
    for `pope_scores(unparsed=...)` to count.

    Raises:
        ConfigError: an unknown rule.
    """
    if rule == "pope":
        words = answer.split(".")[0].replace(",", "").split(" ")
        return not _POPE_NO.intersection(words)
    if rule != "first_word":
        raise ConfigError(f"POPE parse rule must be 'pope' or 'first_word', not {rule!r}.")
    match = _YES_NO.search(answer)
    return None if match is None else match.group(1).lower() == "yes"


def pope_scores(
    questions: Sequence[PopeQuestion],
    answers: Sequence[bool | None],
    unparsed: Literal["yes", "wrong"] = "yes",
) -> pd.DataFrame:
    """Accuracy, precision, recall, F1 and yes-share per setting.

    An unparsed answer (None) is a "yes", as POPE's evaluation code counts it
    (`unparsed="yes"`), or neither yes nor no and wrong (`"wrong"`, the earlier rule).

    Returns:
        One row per setting present: setting, n, accuracy, precision, recall, f1, yes_share.
    """
    if len(questions) != len(answers) or not questions:
        raise InputError(
            f"POPE needs one answer per question; got {len(questions)} and {len(answers)}."
        )
    if unparsed not in ("yes", "wrong"):
        raise InputError(f"POPE unparsed must be 'yes' or 'wrong', got {unparsed!r}.")
    if unparsed == "yes":
        answers = [True if a is None else a for a in answers]
    table = pd.DataFrame(
        {"setting": [q.setting for q in questions], "truth": [q.answer for q in questions]}
    )
    table["said_yes"] = [a is True for a in answers]
    table["correct"] = [
        a is not None and a == q.answer for q, a in zip(questions, answers, strict=True)
    ]
    rows = []
    for setting, group in table.groupby("setting", sort=False):
        true_pos = int((group.said_yes & group.truth).sum())
        precision = true_pos / max(int(group.said_yes.sum()), 1)
        recall = true_pos / max(int(group.truth.sum()), 1)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append(
            {
                "setting": setting,
                "n": len(group),
                "accuracy": float(group.correct.mean()),
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "yes_share": float(group.said_yes.mean()),
            }
        )
    return pd.DataFrame(rows)
