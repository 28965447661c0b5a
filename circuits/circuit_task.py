"""The circuit task type: clean and corrupted prompt pairs with answers and named positions.

A `CircuitTask` is what every circuit method runs on: a left-padded clean batch and a
corrupted batch of the same shape (each row's two prompts have the same token length, so a
position means the same slot in both), the answer and wrong-answer token ids, the candidate
answers, and named positions per row in padded coordinates (the last column is "END").
`assemble` tokenizes rows built by a task (`circuits.tasks`) and checks those invariants.
Memory: four [batch, pos] int64 tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from circuits.templates import locate
from interp.encoding import Encoding
from interp.errors import InputError
from interp.models import Model
from interp.results import hash_inputs


@dataclass(frozen=True, eq=False)
class CircuitTask:
    """Clean/corrupted prompt pairs of one task, tokenized, with answers and positions.

    Attributes:
        name: the task ("ioi", "colored_objects", "name_recall").
        clean: [batch, pos] left-padded clean prompts.
        corrupted: [batch, pos] corrupted prompts, same shape; row i has the same length.
        answer_ids: [batch] the clean answer's token id.
        wrong_ids: [batch] the token id the logit difference subtracts (IOI: S; Colored
            Objects: the corrupted prompt's answer).
        choice_ids: [batch, choice] candidate answers, column 0 the answer; `accuracy`
            compares the answer with the others (IOI: IO vs S; Colored Objects: the three
            listed colours).
        positions: name -> [batch] token index in padded coordinates, the same in clean and
            corrupted ("END" is always the last column).
        prompts: the clean texts.
        corrupted_prompts: the corrupted texts.
        templates: per row, the template text it was filled from.
        families: per row, the template family ("BABA"/"ABBA" for IOI).
        config: the parameters that made the task (task name, n, seed, corruption, filler
            counts), recorded in results' provenance.

    The two Encodings are on the model's device; ids and positions are CPU tensors.
    """

    name: str
    clean: Encoding
    corrupted: Encoding
    answer_ids: Int[Tensor, " batch"]
    wrong_ids: Int[Tensor, " batch"]
    choice_ids: Int[Tensor, "batch choice"]
    positions: Mapping[str, Int[Tensor, " batch"]]
    prompts: tuple[str, ...]
    corrupted_prompts: tuple[str, ...]
    templates: tuple[str, ...]
    families: tuple[str, ...]
    config: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompts)

    def select(self, rows: slice | Sequence[int]) -> CircuitTask:
        """The task restricted to some rows (a batch, one family), padding columns trimmed."""
        index = torch.arange(len(self))[rows] if isinstance(rows, slice) else torch.tensor(rows)
        if index.numel() == 0:
            raise InputError("A task selection needs at least one row.")
        lengths = self.clean.attention_mask[index].sum(-1)
        drop = self.clean.input_ids.shape[1] - int(lengths.max())

        def _enc(batch: Encoding) -> Encoding:
            return Encoding(batch.input_ids[index, drop:], batch.attention_mask[index, drop:])

        picked = index.tolist()
        return CircuitTask(
            name=self.name,
            clean=_enc(self.clean),
            corrupted=_enc(self.corrupted),
            answer_ids=self.answer_ids[index],
            wrong_ids=self.wrong_ids[index],
            choice_ids=self.choice_ids[index],
            positions={k: v[index] - drop for k, v in self.positions.items()},
            prompts=tuple(self.prompts[i] for i in picked),
            corrupted_prompts=tuple(self.corrupted_prompts[i] for i in picked),
            templates=tuple(self.templates[i] for i in picked),
            families=tuple(self.families[i] for i in picked),
            config=dict(self.config),
        )

    def inputs_hash(self) -> str:
        """SHA-256 of the prompts and answers, for results' provenance."""
        return hash_inputs(
            [
                self.prompts,
                self.corrupted_prompts,
                self.answer_ids.tolist(),
                self.wrong_ids.tolist(),
            ]
        )


@dataclass(frozen=True)
class PromptPair:
    """One row before tokenization: texts, located slot spans and their expected token ids."""

    template: str
    family: str
    clean: str
    corrupted: str
    clean_spans: list[tuple[int, int]]
    corrupted_spans: list[tuple[int, int]]
    clean_ids: list[int]
    corrupted_ids: list[int]
    choices: list[int]  # answer first
    wrong: int


def assemble(
    model: Model,
    name: str,
    pairs: Sequence[PromptPair],
    located: Sequence[str],
    derived: Mapping[str, tuple[str, int]],
    config: dict[str, Any],
) -> CircuitTask:
    """Tokenize prompt pairs into a CircuitTask, checking lengths and slot positions.

    Args:
        model: its tokenizer encodes the prompts (`Model.encode`, left-padded).
        name: the task name.
        pairs: the rows.
        located: the position name of each located span, in span order.
        derived: extra positions as offsets of located ones, {"S1+1": ("S1", 1)}.
        config: the task's parameters.
    """
    clean_texts = [p.clean for p in pairs]
    corrupted_texts = [p.corrupted for p in pairs]
    clean, corrupted = model.encode(clean_texts), model.encode(corrupted_texts)
    for i, (a, b) in enumerate(zip(clean.lengths, corrupted.lengths, strict=True)):
        if a != b:
            raise InputError(
                f"Row {i}: the clean prompt has {a} tokens and the corrupted one {b}; they must"
                f" match ({clean_texts[i]!r} vs {corrupted_texts[i]!r})."
            )
    here = locate(
        model.tokenizer, clean_texts, [p.clean_spans for p in pairs], [p.clean_ids for p in pairs]
    )
    there = locate(
        model.tokenizer,
        corrupted_texts,
        [p.corrupted_spans for p in pairs],
        [p.corrupted_ids for p in pairs],
    )
    if here != there:
        row = next(i for i, (a, b) in enumerate(zip(here, there, strict=True)) if a != b)
        raise InputError(
            f"Row {row}: slots sit at different tokens in the clean and corrupted prompts"
            f" ({clean_texts[row]!r} vs {corrupted_texts[row]!r})."
        )
    width = clean.input_ids.shape[1]
    pad = torch.tensor([width - n for n in clean.lengths])
    spots = torch.tensor(here).reshape(len(pairs), len(located))
    positions = {}
    for k, slot in enumerate(located):
        positions[slot] = spots[:, k] + pad
        for extra, (base, offset) in derived.items():  # right after its base: S1, S1+1, S2
            if base == slot:
                positions[extra] = positions[slot] + offset
    positions["END"] = torch.full((len(pairs),), width - 1)
    return CircuitTask(
        name=name,
        clean=clean,
        corrupted=corrupted,
        answer_ids=torch.tensor([p.choices[0] for p in pairs]),
        wrong_ids=torch.tensor([p.wrong for p in pairs]),
        choice_ids=torch.tensor([p.choices for p in pairs]),
        positions=positions,
        prompts=tuple(clean_texts),
        corrupted_prompts=tuple(corrupted_texts),
        templates=tuple(p.template for p in pairs),
        families=tuple(p.family for p in pairs),
        config=config,
    )


# Most prompts a task is built with. Prompts are drawn one by one (distinct ones, by
# rejection) and held with their corruptions as padded id tensors, and each path-patching
# stage runs a forward per head over all of them: at 100k prompts the default model needs
# days of CPU, so a larger n is a typo, refused before any work.
MAX_PROMPTS = 100_000


def check_n(n: Any, distinct: int, what: str) -> int:
    """n as an int, or an InputError when it is not in 1..MAX_PROMPTS or exceeds the
    distinct prompts the templates and fillers can give."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise InputError(f"A {what} task needs a whole number of prompts n >= 1, got {n!r}.")
    if n > MAX_PROMPTS:
        raise InputError(
            f"n={n} {what} prompts asked; a task takes at most {MAX_PROMPTS} (each is built,"
            " held and patched per head: more would run for days)."
        )
    if n > distinct:
        raise InputError(
            f"n={n} {what} prompts asked, but the templates and fillers allow only {distinct}"
            " distinct ones; lower n or give more fillers or templates."
        )
    return int(n)


def check_seed(seed: Any, what: str) -> int:
    """A sampling seed as an int >= 0 (numpy's generators take no negative seed)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"A {what} task needs a whole-number seed >= 0, got {seed!r}.")
    return int(seed)


def balanced_templates(rng: np.random.Generator, capacity: Sequence[int], n: int) -> list[int]:
    """A template index per row: templates take turns, in a new shuffled order each round.

    A template drops out once it has `capacity[t]` rows (all its distinct prompts), so any
    n up to the sum of capacities is reachable.
    """
    used, order = [0] * len(capacity), []
    while len(order) < n:
        for t in rng.permutation(len(capacity)).tolist():
            if used[t] < capacity[t] and len(order) < n:
                used[t] += 1
                order.append(t)
    return order
