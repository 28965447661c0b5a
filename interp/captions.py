"""Caption tasks and CHAIR: object hallucination in generated captions, and its effects.

CHAIR (Rohrbach et al., EMNLP 2018) parses a caption for the objects of a closed vocabulary
and compares them with the image's objects: CHAIR_i is the share of mentioned objects that
are not in the image, CHAIR_s the share of captions with at least one such object. CHAIR_i
counts every mention, as the reference implementation does (a caption naming "red circle"
twice counts it twice; `chair(count="distinct")` counts each object once per caption, the
toolkit's earlier rule); found objects and recall use sets. A mention is a
vocabulary name as whole words, any case, with an optional plural "s"; synonyms are not
mapped (name them in the vocabulary).

A caption task is a folder: `task.json` {"vocabulary": [object names], "max_new_tokens":
int (default 40)} and `test.jsonl`, one {"prompt": str, "image": path, "objects": [names of
the objects in the image]} per line (image paths relative to the folder, or absolute).
`caption_effects` captions every item greedily without and with an intervention (the
baseline under `intervention.identity()`, like with like) through the generation driver
(`interp.generation.generate` with images) and pairs per caption, as `interp.effects` does,
three metrics: `chair_s` (1 if the caption names an absent object), `hallucinated` and
`found` objects; lower is better for the first two (`lower_is_better`).

Cost: two greedy generations of up to `max_new_tokens` per item.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from interp.effect_provenance import arms_provenance, image_digests
from interp.effects import (
    Effects,
    EffectsConfig,
    Score,
    measure_arms,
    setting_major,
)
from interp.errors import InputError
from interp.generation import GenerationConfig, generate
from interp.interventions.base import Intervention
from interp.models import Model
from interp.prompts import read_jsonl, read_text
from interp.results import EffectTable, ItemTable
from interp.work import Item, WorkFolder, open_log

ANALYZER = "captions"
# Per caption: (metric, lower is better).
METRICS = (("chair_s", True), ("hallucinated", True), ("found", False))


@dataclass(frozen=True)
class CaptionItem:
    """One image to caption: the prompt, the image file and the objects it shows."""

    prompt: str
    image: str
    objects: frozenset[str]


@dataclass(frozen=True)
class CaptionTask:
    """Images to caption, the closed object vocabulary, and the caption budget."""

    name: str
    items: tuple[CaptionItem, ...]
    vocabulary: tuple[str, ...]
    max_new_tokens: int = 40


def load_caption_task(folder: str | Path) -> CaptionTask:
    """Read and check a caption task folder (see the module docstring).

    Raises:
        InputError: a missing or malformed file, an object outside the vocabulary.
    """
    folder = Path(folder).expanduser()
    try:
        meta = json.loads(read_text(folder / "task.json", "Caption task description"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{folder / 'task.json'}: not valid JSON ({exc}).") from exc
    vocabulary = meta.get("vocabulary") if isinstance(meta, dict) else None
    if (
        not isinstance(vocabulary, list)
        or not vocabulary
        or not all(isinstance(v, str) and v.strip() for v in vocabulary)
    ):
        raise InputError(f"{folder / 'task.json'}: 'vocabulary' must list object names.")
    budget = meta.get("max_new_tokens", 40)
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise InputError(f"{folder / 'task.json'}: 'max_new_tokens' must be an integer >= 1.")
    known = {v.lower() for v in vocabulary}
    items = tuple(
        _parse_item(record, where, folder, known)
        for where, record in read_jsonl(folder / "test.jsonl", "Caption task")
    )
    if not items:
        raise InputError(f"Caption task {folder} holds no items.")
    return CaptionTask(folder.name, items, tuple(vocabulary), budget)


def _parse_item(record: Any, where: str, folder: Path, known: set[str]) -> CaptionItem:
    if not isinstance(record, dict) or not {"prompt", "image", "objects"} <= set(record):
        raise InputError(f"{where}: expected an object with 'prompt', 'image' and 'objects'.")
    prompt, image, objects = record["prompt"], record["image"], record["objects"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError(f"{where}: 'prompt' must be a non-empty string.")
    if not isinstance(image, str) or not image.strip():
        raise InputError(f"{where}: 'image' must be a file's path (a non-empty string).")
    if not isinstance(objects, list) or not all(isinstance(o, str) for o in objects):
        raise InputError(f"{where}: 'objects' must list the image's object names.")
    unknown = sorted({o.lower() for o in objects} - known)
    if unknown:
        raise InputError(f"{where}: object {unknown[0]!r} is not in the task's vocabulary.")
    return CaptionItem(
        prompt, str(folder / Path(image).expanduser()), frozenset(o.lower() for o in objects)
    )


def mentioned_objects(caption: str, vocabulary: Sequence[str]) -> frozenset[str]:
    """The vocabulary objects a caption names (whole words, any case, plural "s" allowed)."""
    return frozenset(name.lower() for name in vocabulary if _pattern(name).search(caption))


def _pattern(name: str) -> re.Pattern[str]:
    words = r"\s+".join(re.escape(word) for word in name.split())
    return re.compile(rf"\b{words}s?\b", re.IGNORECASE)


def caption_objects(
    captions: Sequence[str], truths: Sequence[frozenset[str]], vocabulary: Sequence[str]
) -> pd.DataFrame:
    """Per caption: objects mentioned, hallucinated (mentioned, absent), found, and present.

    `mentioned` and `hallucinated` count distinct objects; `mentions` and
    `hallucinated_mentions` every occurrence (the reference's CHAIR_i counts).

    Raises:
        InputError: the two lists differ in length or are empty.
    """
    if len(captions) != len(truths) or not captions:
        raise InputError(
            f"CHAIR needs one object set per caption; got {len(captions)} captions and"
            f" {len(truths)} object sets."
        )
    rows = []
    for caption, present in zip(captions, truths, strict=True):
        named = mentioned_objects(caption, vocabulary)
        each = {name.lower(): len(_pattern(name).findall(caption)) for name in vocabulary}
        rows.append(
            {
                "mentions": sum(each.values()),
                "hallucinated_mentions": sum(n for o, n in each.items() if o not in present),
                "mentioned": len(named),
                "hallucinated": len(named - present),
                "found": len(named & present),
                "present": len(present),
            }
        )
    return pd.DataFrame(rows)


def chair(
    captions: Sequence[str],
    truths: Sequence[frozenset[str]],
    vocabulary: Sequence[str],
    count: Literal["mentions", "distinct"] = "mentions",
) -> dict[str, float]:
    """CHAIR_s, CHAIR_i and object recall of captions against their images' objects.

    CHAIR_i = hallucinated / all mentions, every occurrence counted (`count="mentions"`,
    the reference code) or each object once per caption (`"distinct"`).

    Returns:
        {"chair_s", "chair_i", "recall", "mentions_per_caption"}; CHAIR_i is NaN when no
        caption mentions an object.

    Raises:
        InputError: the two lists differ in length or are empty.
    """
    if count not in ("mentions", "distinct"):
        raise InputError(f"CHAIR count must be 'mentions' or 'distinct', got {count!r}.")
    counts = caption_objects(captions, truths, vocabulary)
    total, bad = (
        ("mentions", "hallucinated_mentions")
        if count == "mentions"
        else ("mentioned", "hallucinated")
    )
    mentions = int(counts[total].sum())
    return {
        "chair_s": float((counts.hallucinated > 0).mean()),
        "chair_i": counts[bad].sum() / mentions if mentions else float("nan"),
        "recall": counts.found.sum() / max(int(counts.present.sum()), 1),
        "mentions_per_caption": mentions / len(counts),
    }


def captions(model: Model, task: CaptionTask, batch_size: int = 16) -> list[str]:
    """Greedy captions of every item, each prompt with its image."""
    config = GenerationConfig(max_new_tokens=task.max_new_tokens)
    out = generate(
        model,
        [item.prompt for item in task.items],
        config,
        images=[item.image for item in task.items],
        batch_size=batch_size,
    )
    return [g.text for g in out]


def caption_effects(
    model: Model,
    tasks: Sequence[CaptionTask],
    intervention: Intervention | Sequence[Intervention],
    config: EffectsConfig | None = None,
    *,
    values: Sequence[object] | None = None,
    folder: WorkFolder | None = None,
) -> Effects:
    """An intervention's effect on CHAIR: per caption, paired, with 95% intervals.

    Measured by `interp.effects.measure_arms`, one work batch per task (`folder` records
    finished tasks); a list of interventions with their `values` is a sweep.

    Returns:
        `Effects`: one table row per (task, metric) (`interp.effects.compare` columns plus
        `task` and `lower_is_better`), and per item and metric both captions and scores.
    """
    config = config or EffectsConfig()
    if not tasks:
        raise InputError("caption_effects needs at least one caption task.")
    arms, provenance = arms_provenance(
        model,
        ANALYZER,
        intervention,
        config.to_dict(),
        [[t.name, t.vocabulary, t.items, image_digests(i.image for i in t.items)] for t in tasks],
        sum(len(t.items) for t in tasks),
    )
    log = open_log(folder, provenance)
    summaries, items = [], []
    for t, task in enumerate(tasks):

        def scored(
            batch: list[CaptionItem], arm: Intervention, task: CaptionTask = task
        ) -> list[dict[str, Any]]:
            with arm.applied(model):
                said = captions(model, replace(task, items=tuple(batch)), config.batch_size)
            counts = caption_objects(said, [item.objects for item in batch], task.vocabulary)
            counts["chair_s"] = (counts.hallucinated > 0).astype(float)
            return [
                {"caption": text, **{m: float(row[m]) for m, _ in METRICS}}
                for text, (_, row) in zip(said, counts.iterrows(), strict=True)
            ]

        measured = measure_arms(
            [Item(f"caption/{t}/{task.name}/{i}", item) for i, item in enumerate(task.items)],
            arms,
            scored,
            [Score(metric, lower_is_better=lower) for metric, lower in METRICS],
            config,
            values=values,
            batch_size=len(task.items),
            folder=log,
        )
        summaries.append(measured.summary.assign(task=task.name))
        items.append(_per_metric(measured.per_item).assign(task=task.name))
    return Effects(
        EffectTable(_task_first(setting_major(summaries)), provenance),
        ItemTable(_task_first(setting_major(items)), provenance),
    )


def _per_metric(per_item: pd.DataFrame) -> pd.DataFrame:
    """The wide per-item layout as one row per (item, metric): captions and that score."""
    captions = ["baseline_caption", "intervened_caption"]
    extra = ["parameter"] if "parameter" in per_item else []
    parts = [
        per_item.assign(metric=m, baseline_score=per_item[f"baseline_{m}"])
        .assign(intervened_score=per_item[f"intervened_{m}"])
        .loc[:, ["item", "metric", *captions, "baseline_score", "intervened_score", *extra]]
        for m, _ in METRICS
    ]
    return setting_major(parts)


def _task_first(table: pd.DataFrame) -> pd.DataFrame:
    """The table with its `task` column first, where the earlier layout had it."""
    return table[["task", *(c for c in table if c != "task")]]
