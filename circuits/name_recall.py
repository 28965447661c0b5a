"""Name recall: the reuse study's second task, an induction-style copy of a name from context.

"Yesterday Chris Hall called Daniel Moore about the meeting. Then Chris" -> " Hall".
Two people are introduced by first name and surname; the prompt ends with one of the first
names again, and the model completes that person's surname. Answer: the asked person's
surname; wrong: the other's. Corruption "flip": the prompt asks about the other person, so
the answers swap (as IOI's S2->IO flip and Colored Objects' mindiff do). Either person is
asked with probability 1/2, so neither recency nor primacy solves it.

Why this task: on the default model (SmolLM2-135M-Instruct) it is solved well, where
questions that need binding a role to a name ("The teacher is") are at chance once the
asked person is balanced; and it needs the two operations IOI's circuit is made of: at the
last token, attend to a name earlier in the context (induction: the token after the
previous occurrence of the query name) and copy that name token into the output, which is
what IOI's name movers do. Positions: "F1", "L1", "F2", "L2" (first names and surnames in
order), "ANS" (the clean answer's surname) and "END" (the query name).

Templates: `data/circuits/name_recall_templates.jsonl` (slots {F1} {L1} {F2} {L2}, the
query {Q} last, optional {PLACE}); surnames: `name_recall_fillers.json`; first names and
places are IOI's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from circuits.circuit_task import (
    CircuitTask,
    PromptPair,
    assemble,
    balanced_templates,
    check_n,
    check_seed,
)
from circuits.templates import Template, fillers, load_templates, shipped
from interp.errors import InputError
from interp.models import Model
from interp.prompts import as_texts, data_path

_NAMES = ("F1", "L1", "F2", "L2")


def name_recall(
    model: Model,
    n: int,
    *,
    templates: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    surnames: Sequence[str] | None = None,
    places: Sequence[str] | None = None,
    seed: int = 0,
) -> CircuitTask:
    """Name-recall prompts with the "flip" corruption (see the module docstring).

    Args:
        model: its tokenizer encodes the prompts.
        n: number of distinct clean prompts.
        templates: template texts with {F1} {L1} {F2} {L2} once each and the query {Q}
            last (default: the shipped ten).
        names, surnames, places: fillers without the leading space (default: the shipped
            lists filtered to the tokenizer's single tokens).
        seed: seeds sampling.

    Raises:
        InputError: a bad template, a filler that is not one token, too few fillers, or n
            above the number of distinct prompts.
    """
    if templates is None:
        texts = load_templates(data_path("circuits", "name_recall_templates.jsonl"))
    else:
        texts = as_texts(templates, "name recall template")
    parsed = []
    for text in texts:
        template = Template.parse(
            text,
            counts=dict.fromkeys((*_NAMES, "Q"), 1),
            optional=("PLACE",),
            spaced=(*_NAMES, "Q"),
            what="name recall template",
        )
        if not text.endswith("{Q}"):
            raise InputError(f"name recall template {text!r} must end with the query {{Q}}.")
        parsed.append(template)
    ioi_data = shipped("ioi_fillers.json")
    first = fillers(model.tokenizer, names, ioi_data["names"], "name recall name", 2)
    last = fillers(
        model.tokenizer,
        surnames,
        shipped("name_recall_fillers.json")["surnames"],
        "name recall surname",
        2,
    )
    place_ids = fillers(model.tokenizer, places, ioi_data["places"], "name recall place", 1)
    firsts, lasts, where = list(first), list(last), list(place_ids)
    pairs_of_names = len(firsts) * (len(firsts) - 1) * len(lasts) * (len(lasts) - 1) * 2
    capacity = [pairs_of_names * (len(where) if "PLACE" in t.slots else 1) for t in parsed]
    n = check_n(n, sum(capacity), "name recall")
    rng = np.random.default_rng(check_seed(seed, "name recall"))
    seen: set[tuple[int, ...]] = set()
    rows = []
    for t in balanced_templates(rng, capacity, n):
        while True:  # draw fillers until this template's prompt is new
            f1, f2 = (int(k) for k in rng.choice(len(firsts), 2, replace=False))
            l1, l2 = (int(k) for k in rng.choice(len(lasts), 2, replace=False))
            asked, place = int(rng.integers(2)), int(rng.integers(len(where)))
            key = (t, f1, f2, l1, l2, asked, place if "PLACE" in parsed[t].slots else -1)
            if key not in seen:
                break
        seen.add(key)
        people = ((firsts[f1], lasts[l1]), (firsts[f2], lasts[l2]))
        rows.append(_row(parsed[t], people, asked, where[place], first, last))
    config = {
        "task": "name_recall",
        "n": n,
        "seed": seed,
        "corruption": "flip",
        "templates": list(texts),
        "n_names": len(firsts),
        "n_surnames": len(lasts),
    }
    return assemble(model, "name_recall", rows, (*_NAMES, "ANS"), {}, config)


def _row(
    template: Template,
    people: tuple[tuple[str, str], tuple[str, str]],
    asked: int,
    place: str,
    first: dict[str, int],
    last: dict[str, int],
) -> PromptPair:
    """One row: asks about person `asked`; the corrupted prompt asks about the other."""
    (f1, l1), (f2, l2) = people
    words = {"F1": f1, "L1": l1, "F2": f2, "L2": l2, "PLACE": place}
    clean, spans = template.render(template.fill(words | {"Q": people[asked][0]}))
    corrupted, bad_spans = template.render(template.fill(words | {"Q": people[1 - asked][0]}))
    located = [template.slots.index(slot) for slot in (*_NAMES, f"L{asked + 1}")]
    ids = [first[f1], last[l1], first[f2], last[l2], last[people[asked][1]]]
    answer, wrong = last[people[asked][1]], last[people[1 - asked][1]]
    return PromptPair(
        template=template.text,
        family=("first", "second")[asked],
        clean=clean,
        corrupted=corrupted,
        clean_spans=[spans[i] for i in located],
        corrupted_spans=[bad_spans[i] for i in located],
        clean_ids=ids,
        corrupted_ids=ids,
        choices=[answer, wrong],
        wrong=wrong,
    )
