"""Circuit tasks: IOI, Colored Objects and name recall as `CircuitTask`s, with their metrics.

The public face of the tasks every circuit method runs on (`CircuitTask`,
`circuits.circuit_task`): clean and corrupted prompt pairs of equal token length,
left-padded so "END" is the last column, with answer, wrong and candidate token ids and
named positions per row in padded coordinates.

- `ioi` (Wang et al. 2022, arXiv 2211.00593), here: "When Mary and John arrived at the
  store, John gave a drink to" -> " Mary". Answer IO, wrong S; positions "IO", "S1",
  "S1+1", "S2", "END". Corruptions: "abc" (Wang's p_ABC: IO, S1 and S2 become three other
  names) and "s2_io" (Merullo et al. 2024's flip: S2 becomes IO, so S is now the answer).
- `colored_objects` (`circuits.colored_objects`): one-shot, "mindiff" corruption.
- `name_recall` (`circuits.name_recall`): the reuse study's second task on the default
  model, an induction-style copy of a surname.

Templates and fillers are data in `data/circuits/` (see its README). The shipped filler
lists are filtered to words that are one token (with their leading space) for the model's
tokenizer; fillers the user passes must be one token, or the task is refused naming the
word. Sampling is seeded (numpy `default_rng`); the rows are distinct clean prompts, and
templates take turns (each round in a shuffled order), so families and templates are
balanced where Wang et al. draw a template per prompt at random.
Metrics (`logit_difference`, `accuracy`, `last_logits`, `logit_differences`, `prompt_metrics`)
live in `circuits.metrics` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from circuits.circuit_task import (
    CircuitTask,
    PromptPair,
    assemble,
    balanced_templates,
    check_n,
    check_seed,
)
from circuits.colored_objects import colored_objects
from circuits.metrics import (
    accuracy,
    last_logits,
    logit_difference,
    logit_differences,
    prompt_metrics,
)
from circuits.name_recall import name_recall
from circuits.templates import Template, fillers, load_templates, shipped
from interp.errors import InputError, check_choice
from interp.models import Model
from interp.prompts import as_texts, data_path

__all__ = [
    "CircuitTask",
    "accuracy",
    "colored_objects",
    "ioi",
    "ioi_templates",
    "last_logits",
    "logit_difference",
    "logit_differences",
    "name_recall",
    "prompt_metrics",
]

Corruption = Literal["abc", "s2_io"]
Split = Literal["main", "heldout"]
_IOI_FILES = {"main": "ioi_templates.jsonl", "heldout": "ioi_heldout_templates.jsonl"}


def ioi_templates(split: Split = "main") -> tuple[str, ...]:
    """The shipped IOI templates: "main" (15 BABA + 15 ABBA) or "heldout" (6 more).

    The held-out ones are for checking a discovered circuit on unseen templates only;
    discovery and tests of other methods use "main".
    """
    check_choice(split, tuple(_IOI_FILES), "IOI template split")
    return load_templates(data_path("circuits", _IOI_FILES[split]), "IOI template")


def parse_ioi_templates(texts: Sequence[str]) -> list[Template]:
    """Check IOI templates (distinct; {IO} once, {S} twice, optional {PLACE}, {OBJECT})
    without a model, so a command can refuse a bad file before loading one.

    Raises:
        InputError: a repeated template, an unknown or missing slot, a stray brace.
    """
    texts = as_texts(texts, "IOI template")
    if not texts:
        raise InputError("No IOI templates given.")
    if len(set(texts)) != len(texts):
        raise InputError("An IOI template is listed twice; templates must be distinct.")
    return [
        Template.parse(
            text,
            counts={"IO": 1, "S": 2},
            optional=("PLACE", "OBJECT"),
            spaced=("IO", "S"),
            what="IOI template",
        )
        for text in texts
    ]


def ioi(
    model: Model,
    n: int,
    *,
    templates: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    places: Sequence[str] | None = None,
    objects: Sequence[str] | None = None,
    corruption: Corruption = "abc",
    seed: int = 0,
) -> CircuitTask:
    """Indirect object identification prompts with their corruption.

    Args:
        model: its tokenizer encodes the prompts.
        n: number of distinct clean prompts.
        templates: template texts with slots {IO} once, {S} twice, optional {PLACE} and
            {OBJECT}, ending before the answer (default `ioi_templates("main")`). A
            template's family is "BABA" when S comes first, else "ABBA".
        names, places, objects: fillers, written without the leading space (default: the
            shipped lists, filtered to the tokenizer's single tokens).
        corruption: "abc" (default, Wang et al.) or "s2_io" (Merullo et al.).
        seed: seeds template and filler sampling.

    Raises:
        InputError: a bad template (unknown or missing slot), a filler that is not one
            token, too few fillers, or n above the number of distinct prompts.

    Example:
        >>> from interp.models import load_model
        >>> model = load_model()  # the default model; the tiny test model's bytes are no names
        >>> task = ioi(model, 8)
        >>> task.prompts[0]
        'When Gerald and Louis arrived at the hospital, Gerald gave a drink to'
        >>> list(task.positions), task.clean.input_ids.shape
        (['IO', 'S1', 'S1+1', 'S2', 'END'], torch.Size([8, 18]))
        >>> logit_differences(model, task).shape  # IO - S at the last position, per row
        torch.Size([8])
    """
    check_choice(corruption, ("abc", "s2_io"), "IOI corruption")
    texts = ioi_templates() if templates is None else as_texts(templates, "IOI template")
    parsed = parse_ioi_templates(texts)
    data = shipped("ioi_fillers.json")
    name_ids = fillers(
        model.tokenizer, names, data["names"], "IOI name", 5 if corruption == "abc" else 2
    )
    place_ids = fillers(model.tokenizer, places, data["places"], "IOI place", 1)
    object_ids = fillers(model.tokenizer, objects, data["objects"], "IOI object", 1)
    pool, places_, objects_ = list(name_ids), list(place_ids), list(object_ids)
    per_names = len(pool) * (len(pool) - 1)
    capacity = [
        per_names
        * (len(places_) if "PLACE" in t.slots else 1)
        * (len(objects_) if "OBJECT" in t.slots else 1)
        for t in parsed
    ]
    n = check_n(n, sum(capacity), "IOI")
    rng = np.random.default_rng(check_seed(seed, "IOI"))
    seen: set[tuple[int, ...]] = set()
    pairs = []
    for t in balanced_templates(rng, capacity, n):
        template = parsed[t]
        while True:  # draw fillers until this template's prompt is new
            io, s = (int(k) for k in rng.choice(len(pool), 2, replace=False))
            place, obj = int(rng.integers(len(places_))), int(rng.integers(len(objects_)))
            key = (
                t,
                io,
                s,
                place if "PLACE" in template.slots else -1,
                obj if "OBJECT" in template.slots else -1,
            )
            if key not in seen:
                break
        seen.add(key)
        pairs.append(
            _ioi_pair(
                template, pool, name_ids, io, s, places_[place], objects_[obj], corruption, rng
            )
        )
    config = {
        "task": "ioi",
        "n": n,
        "seed": seed,
        "corruption": corruption,
        "templates": list(texts),
        "n_names": len(pool),
        "n_places": len(places_),
        "n_objects": len(objects_),
    }
    return assemble(model, "ioi", pairs, ("IO", "S1", "S2"), {"S1+1": ("S1", 1)}, config)


def _ioi_pair(
    template: Template,
    pool: list[str],
    ids: dict[str, int],
    io: int,
    s: int,
    place: str,
    obj: str,
    corruption: str,
    rng: np.random.Generator,
) -> PromptPair:
    """One IOI row: the clean prompt and its corruption, with IO, S1, S2 spans and ids."""
    io_name, s_name = pool[io], pool[s]
    values = template.fill({"IO": io_name, "S": s_name, "PLACE": place, "OBJECT": obj})
    at_io = template.slots.index("IO")
    at_s1, at_s2 = (i for i, slot in enumerate(template.slots) if slot == "S")
    bad = list(values)
    if corruption == "abc":
        others = [k for k in range(len(pool)) if k not in (io, s)]
        a, b, c = (pool[k] for k in rng.choice(others, 3, replace=False))
        bad[at_io], bad[at_s1], bad[at_s2] = a, b, c
    else:
        bad[at_s2] = io_name
    clean, spans = template.render(values)
    corrupted, bad_spans = template.render(bad)
    located = (at_io, at_s1, at_s2)
    return PromptPair(
        template=template.text,
        family="BABA" if at_s1 < at_io else "ABBA",
        clean=clean,
        corrupted=corrupted,
        clean_spans=[spans[i] for i in located],
        corrupted_spans=[bad_spans[i] for i in located],
        clean_ids=[ids[values[i]] for i in located],
        corrupted_ids=[ids[bad[i]] for i in located],
        choices=[ids[io_name], ids[s_name]],
        wrong=ids[s_name],
    )
