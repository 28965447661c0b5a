"""Colored Objects (Merullo et al. 2024, arXiv 2310.08744; from BIG-bench) as a CircuitTask.

One-shot prompts: a solved exemplar, then "Q: On the desk, I see a red cup, a blue pen, and
a green bowl. What color is the cup?\nA:" -> " Red" (capitalised colour, leading space).
The query's three colours are disjoint from the exemplar's; the asked object is uniform
over the three. Corruption "mindiff": the same prefix asks about another listed object,
and the wrong answer is that object's colour. Positions "C1", "C2", "C3" (the query's
listed colours, onto which the repair intervention moves attention), "OBJ" (the asked
object) and "END". The template and fillers are `data/circuits/colored_objects.json`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from circuits.circuit_task import CircuitTask, PromptPair, assemble, check_n, check_seed
from circuits.templates import Template, fillers, shipped, token_ids
from interp.errors import InputError
from interp.models import Model


def colored_objects(
    model: Model,
    n: int,
    *,
    colors: Sequence[str] | None = None,
    objects: Sequence[str] | None = None,
    seed: int = 42,
) -> CircuitTask:
    """One-shot Colored Objects prompts with the "mindiff" corruption (METHODS: Merullo).

    Each prompt is a solved exemplar ("Q: ... What color is the pen?\\nA: Blue\\n") and a
    query whose three listed colours are disjoint from the exemplar's; the asked object is
    uniform over the three. The label is the capitalised colour with a leading space
    (" Blue"). The corrupted prompt asks about another listed object (uniform over the other
    two), and `wrong_ids` is its colour. `choice_ids` holds the three listed colours' labels,
    the answer first, so the default `accuracy` is "the asked colour among the three".

    Args:
        model: its tokenizer encodes the prompts.
        n: number of distinct clean prompts (Merullo et al.: 1000, seed 42).
        colors: lower-case colours; " red" and " Red" must each be one token (default:
            the shipped eight, filtered).
        objects: objects, one token each (default: the shipped list, filtered).
        seed: seeds sampling.

    Raises:
        InputError: a multi-token colour or object, fewer than 6 colours or 3 objects, or
            n above the number of distinct prompts.
    """
    data = shipped("colored_objects.json")
    slots = ("SURFACE", "OPENER", "A1", "C1", "O1", "A2", "C2", "O2", "A3", "C3", "O3", "OBJ")
    template = Template.parse(
        data["template"],
        counts=dict.fromkeys(slots, 1),
        spaced=("C1", "C2", "C3", "OBJ"),
        what="Colored Objects template",
    )
    color_ids = fillers(model.tokenizer, colors, data["colors"], "Colored Objects color", 6)
    label_ids = token_ids(
        model.tokenizer,
        [c.capitalize() for c in color_ids],
        what="Colored Objects label",
        strict=colors is not None,
    )
    color_ids = {c: i for c, i in color_ids.items() if c.capitalize() in label_ids}
    object_ids = fillers(model.tokenizer, objects, data["objects"], "Colored Objects object", 3)
    hues, things = list(color_ids), list(object_ids)
    if len(hues) < 6:
        raise InputError(
            f"Colored Objects needs 6 colours whose name and capitalised label are one token"
            f" each, got {len(hues)}; pass more with the colors argument."
        )
    surfaces, openers = data["surfaces"], data["openers"]
    distinct = (
        (len(surfaces) * len(openers)) ** 2
        * math.perm(len(hues), 6)
        * math.perm(len(things), 3) ** 2
        * 9
    )
    n = check_n(n, distinct, "Colored Objects")
    rng = np.random.default_rng(check_seed(seed, "Colored Objects"))
    seen: set[tuple[int, ...]] = set()
    pairs = []
    while len(pairs) < n:
        draw = (
            *rng.integers(len(surfaces), size=2),
            *rng.integers(len(openers), size=2),
            *rng.choice(len(hues), 6, replace=False),
            *rng.choice(len(things), 3, replace=False),
            *rng.choice(len(things), 3, replace=False),
            *rng.integers(3, size=2),
        )
        key = tuple(int(k) for k in draw)
        if key in seen:
            continue
        seen.add(key)
        swap = int((key[-1] + 1 + rng.integers(2)) % 3)  # another listed object
        pairs.append(_colored_pair(template, key, swap, data, hues, things, color_ids,
                                   label_ids, object_ids))  # fmt: skip
    config = {
        "task": "colored_objects",
        "n": n,
        "seed": seed,
        "corruption": "mindiff",
        "colors": hues,
        "objects": things,
    }
    return assemble(model, "colored_objects", pairs, ("C1", "C2", "C3", "OBJ"), {}, config)


def _colored_pair(
    template: Template,
    key: tuple[int, ...],
    swap: int,
    data: dict,
    hues: list[str],
    things: list[str],
    color_ids: dict[str, int],
    label_ids: dict[str, int],
    object_ids: dict[str, int],
) -> PromptPair:
    """One Colored Objects row from its sampled indices (see `colored_objects`)."""
    surface, opener = key[0:2], key[2:4]
    colours = [hues[k] for k in key[4:10]]
    sets = ([things[k] for k in key[10:13]], [things[k] for k in key[13:16]])
    asked = key[16:18]

    def words(part: int, obj: int) -> dict[str, str]:
        listed = colours[3 * part : 3 * part + 3]
        fill = {"SURFACE": data["surfaces"][surface[part]], "OPENER": data["openers"][opener[part]]}
        for k, (colour, thing) in enumerate(zip(listed, sets[part], strict=True), start=1):
            fill |= {f"A{k}": "an" if colour[0] in "aeiou" else "a", f"C{k}": colour}
            fill[f"O{k}"] = thing
        return fill | {"OBJ": sets[part][obj]}

    exemplar, _ = template.render(template.fill(words(0, asked[0])))
    exemplar += f" {colours[asked[0]].capitalize()}\n"
    query = colours[3:]
    located = [template.slots.index(slot) for slot in ("C1", "C2", "C3", "OBJ")]

    def side(obj: int) -> tuple[str, list[tuple[int, int]], list[int]]:
        values = template.fill(words(1, obj))
        text, spans = template.render(values)
        shift = len(exemplar)
        ids = [color_ids[c] for c in query] + [object_ids[sets[1][obj]]]
        return (
            exemplar + text,
            [(a + shift, b + shift) for a, b in (spans[i] for i in located)],
            ids,
        )

    clean, clean_spans, clean_ids = side(asked[1])
    corrupted, bad_spans, bad_ids = side(swap)
    labels = [label_ids[c.capitalize()] for c in query]
    return PromptPair(
        template=template.text,
        family=f"C{asked[1] + 1}",
        clean=clean,
        corrupted=corrupted,
        clean_spans=clean_spans,
        corrupted_spans=bad_spans,
        clean_ids=clean_ids,
        corrupted_ids=bad_ids,
        choices=[labels[asked[1]]] + [x for k, x in enumerate(labels) if k != asked[1]],
        wrong=labels[swap],
    )
