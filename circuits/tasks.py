"""Circuit tasks: IOI, Colored Objects and name recall as `CircuitTask`s, with their metrics.

- `ioi` (Wang et al. 2022, arXiv 2211.00593): "When Mary and John arrived at the store,
  John gave a drink to" -> " Mary". Answer IO, wrong S; positions "IO", "S1", "S1+1", "S2",
  "END". Corruptions: "abc" (Wang's p_ABC: IO, S1 and S2 become three other names) and
  "s2_io" (Merullo et al. 2024's flip: S2 becomes IO, so S is now the answer).
- `colored_objects` (Merullo et al. 2024, arXiv 2310.08744, from BIG-bench): one solved
  exemplar, then "Q: On the desk, I see a red cup, ... What color is the cup?\\nA:" ->
  " Red". Corruption "mindiff": the same prefix asks about another listed object; wrong is
  that object's colour. Positions "C1", "C2", "C3" (the query's listed colours, which the
  repair intervention edits attention onto), "OBJ" (the asked object), "END".
- `name_recall`: the second task of the reuse study on the default model (see its docstring).

Templates and fillers are data in `data/circuits/` (see its README). The shipped filler
lists are filtered to words that are one token (with their leading space) for the model's
tokenizer; fillers the user passes must be one token, or the task is refused naming the
word. Sampling is seeded (numpy `default_rng`); the rows are distinct clean prompts.
Metrics (`logit_difference`, `accuracy`, `evaluate`) are in `circuits.metrics`,
re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from circuits.circuit_task import CircuitTask, PromptPair, assemble, check_choice, check_n
from circuits.metrics import accuracy, evaluate, last_logits, logit_difference, logit_differences
from circuits.templates import Template, load_templates, shipped, token_ids
from interp.errors import InputError
from interp.models import Model
from interp.prompts import as_texts, data_path

__all__ = [
    "CircuitTask",
    "accuracy",
    "colored_objects",
    "evaluate",
    "ioi",
    "ioi_templates",
    "last_logits",
    "logit_difference",
    "logit_differences",
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


def _fillers(
    model: Model, given: Sequence[str] | None, default: Sequence[str], what: str, least: int
) -> dict[str, int]:
    """Word -> single token id: the shipped list filtered, or the user's list checked."""
    words = default if given is None else as_texts(given, what)
    ids = token_ids(model.tokenizer, words, what=what, strict=given is not None)
    if len(ids) < least:
        raise InputError(
            f"The task needs at least {least} distinct single-token {what}s for this tokenizer,"
            f" got {len(ids)}; pass more with the {what.split()[-1]}s argument."
        )
    return ids


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
        >>> task = ioi(load_model(), 8)  # doctest: +SKIP
        >>> task.clean.input_ids.shape, sorted(task.positions)  # doctest: +SKIP
    """
    check_choice(corruption, ("abc", "s2_io"), "IOI corruption")
    texts = ioi_templates() if templates is None else as_texts(templates, "IOI template")
    if len(set(texts)) != len(texts):
        raise InputError("An IOI template is listed twice; templates must be distinct.")
    parsed = [
        Template.parse(
            text,
            counts={"IO": 1, "S": 2},
            optional=("PLACE", "OBJECT"),
            spaced=("IO", "S"),
            what="IOI template",
        )
        for text in texts
    ]
    data = shipped("ioi_fillers.json")
    name_ids = _fillers(model, names, data["names"], "IOI name", 5 if corruption == "abc" else 2)
    place_ids = _fillers(model, places, data["places"], "IOI place", 1)
    object_ids = _fillers(model, objects, data["objects"], "IOI object", 1)
    pool, places_, objects_ = list(name_ids), list(place_ids), list(object_ids)
    per_names = len(pool) * (len(pool) - 1)
    distinct = sum(
        per_names
        * (len(places_) if "PLACE" in t.slots else 1)
        * (len(objects_) if "OBJECT" in t.slots else 1)
        for t in parsed
    )
    n = check_n(n, distinct, "IOI")
    rng = np.random.default_rng(seed)
    seen: set[tuple[int, ...]] = set()
    pairs = []
    while len(pairs) < n:
        t, (io, s) = int(rng.integers(len(parsed))), rng.choice(len(pool), 2, replace=False)
        place, obj = int(rng.integers(len(places_))), int(rng.integers(len(objects_)))
        template = parsed[t]
        key = (
            t,
            int(io),
            int(s),
            place if "PLACE" in template.slots else -1,
            obj if "OBJECT" in template.slots else -1,
        )
        if key in seen:
            continue
        seen.add(key)
        pairs.append(
            _ioi_pair(
                template, pool, name_ids, int(io), int(s), places_[place], objects_[obj],
                corruption, rng,
            )
        )  # fmt: skip
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
    color_ids = _fillers(model, colors, data["colors"], "Colored Objects color", 6)
    label_ids = token_ids(
        model.tokenizer,
        [c.capitalize() for c in color_ids],
        what="Colored Objects label",
        strict=colors is not None,
    )
    color_ids = {c: i for c, i in color_ids.items() if c.capitalize() in label_ids}
    object_ids = _fillers(model, objects, data["objects"], "Colored Objects object", 3)
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
    rng = np.random.default_rng(seed)
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
