"""Prompt templates with named slots, single-token fillers, and slot positions in tokens.

A template is text with slots in braces, `"Then, {S} and {IO} went to the {PLACE}."`.
Rendering fills each slot with a word and records the character span of every slot
occurrence; `locate` turns those spans into token indices with the tokenizer's offset
mapping, and checks that each located slot is exactly its filler's single token (a name
that merges with the next character would silently shift every position). Slots whose
position a task needs must follow a space, so the filler is the single token " Mary" as
it appears mid-sentence. Pure text and tokenizer code: no model, no tensors.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from interp.errors import InputError, did_you_mean
from interp.prompts import as_texts, data_path, read_jsonl

_SLOT = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class Template:
    """A parsed template: its text and its slot names in order of occurrence."""

    text: str
    slots: tuple[str, ...]

    @classmethod
    def parse(
        cls,
        text: str,
        *,
        counts: Mapping[str, int],
        optional: Iterable[str] = (),
        spaced: Iterable[str] = (),
        what: str = "template",
    ) -> Template:
        """Check a template against the slots a task fills.

        Args:
            text: the template, slots written `{NAME}`.
            counts: slots that must occur, with how many times each.
            optional: slots that may occur (once or more) or not at all.
            spaced: slots that must follow a space (their position is located as one token).
            what: how the error message names the template.

        Raises:
            InputError: a stray brace, an unknown slot, a required slot missing or occurring
                the wrong number of times, or a located slot not after a space.
        """
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"Expected {what} to be non-empty text, got {text!r}.")
        if "{" in _SLOT.sub("", text) or "}" in _SLOT.sub("", text):
            raise InputError(f"{what} {text!r} has an unmatched brace; slots are written {{NAME}}.")
        slots = tuple(_SLOT.findall(text))
        known = set(counts) | set(optional)
        for slot in slots:
            if slot not in known:
                raise InputError(
                    f"{what} {text!r} has an unknown slot {{{slot}}}." + did_you_mean(slot, known)
                )
        found = Counter(slots)
        for slot, count in counts.items():
            if found[slot] != count:
                raise InputError(
                    f"{what} {text!r} has slot {{{slot}}} {found[slot]} time(s); it needs"
                    f" exactly {count}."
                )
        spaced = set(spaced)
        for match in _SLOT.finditer(text):
            if match.group(1) in spaced and text[match.start() - 1 : match.start()] != " ":
                raise InputError(
                    f"{what} {text!r}: slot {{{match.group(1)}}} must follow a space, so its"
                    " filler is one token with a leading space."
                )
        return cls(text, slots)

    def fill(self, words: Mapping[str, str]) -> list[str]:
        """One word per slot occurrence, each slot filled with `words[slot]`."""
        return [words[slot] for slot in self.slots]

    def render(self, values: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
        """The filled text and the (start, end) character span of each slot occurrence.

        Args:
            values: one word per slot occurrence (`fill` gives them from a mapping), so two
                occurrences of a slot can differ (IOI's ABC corruption changes S2 alone).

        A span starts at the space before the slot when there is one, as the token " Mary"
        does in byte-level BPE offsets.
        """
        out, spans, cursor = "", [], 0
        for match, word in zip(_SLOT.finditer(self.text), values, strict=True):
            out += self.text[cursor : match.start()]
            start = len(out) - 1 if out.endswith(" ") else len(out)
            out += word
            spans.append((start, len(out)))
            cursor = match.end()
        return out + self.text[cursor:], spans


def load_templates(path: Any, what: str = "Template") -> tuple[str, ...]:
    """Template texts from a JSONL file, one `{"template": str}` per line."""
    texts = []
    for where, record in read_jsonl(path, what):
        if not isinstance(record, dict) or not isinstance(record.get("template"), str):
            raise InputError(f"{where}: expected an object with a string 'template' field.")
        texts.append(record["template"])
    if not texts:
        raise InputError(f"{what} file {path} holds no templates.")
    return tuple(texts)


def shipped(*parts: str) -> Any:
    """The parsed JSON of a file in `data/circuits/`."""
    return json.loads(data_path("circuits", *parts).read_text(encoding="utf-8"))


def token_ids(tokenizer: Any, words: Sequence[str], *, what: str, strict: bool) -> dict[str, int]:
    """The single token id of " word" for each word.

    Args:
        tokenizer: the model's tokenizer.
        words: fillers, written without the leading space.
        what: what the words are ("IOI name"), for the error message.
        strict: raise on a word that is not one token (the user's own fillers); otherwise
            leave it out (the shipped candidate lists, filtered per tokenizer).

    Raises:
        InputError: a word is not a non-empty string without spaces, is repeated, or (when
            strict) is not a single token.
    """
    ids: dict[str, int] = {}
    for word in words:
        if not isinstance(word, str) or not word or word != word.strip() or " " in word:
            raise InputError(
                f"Expected each {what} to be one word without spaces, got {word!r}"
                " (the leading space is added for you)."
            )
        if word in ids:
            raise InputError(f"The {what} {word!r} is listed twice; fillers must be distinct.")
        pieces = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        if len(pieces) == 1:
            ids[word] = pieces[0]
        elif strict:
            shown = [tokenizer.decode([piece]) for piece in pieces]
            raise InputError(
                f"The {what} {word!r} is {len(pieces)} tokens for this tokenizer ({shown});"
                " fillers must be one token with their leading space. Drop or replace it."
            )
    return ids


def fillers(
    tokenizer: Any, given: Sequence[str] | None, default: Sequence[str], what: str, least: int
) -> dict[str, int]:
    """Word -> single token id: the shipped list `default` filtered, or the user's list checked.

    Raises:
        InputError: a given word is not one token, or fewer than `least` words remain.
    """
    words = default if given is None else as_texts(given, what)
    ids = token_ids(tokenizer, words, what=what, strict=given is not None)
    if len(ids) < least:
        raise InputError(
            f"The task needs at least {least} distinct single-token {what}s for this tokenizer,"
            f" got {len(ids)}; pass more with the {what.split()[-1]}s argument."
        )
    return ids


def locate(
    tokenizer: Any,
    texts: Sequence[str],
    spans: Sequence[Sequence[tuple[int, int]]],
    expected: Sequence[Sequence[int]],
    *,
    add_special_tokens: bool = True,
) -> list[list[int]]:
    """Token index (in each text's own, unpadded tokens) of each span.

    Args:
        tokenizer: a fast tokenizer (offset mapping).
        texts: the prompts.
        spans: per text, the (start, end) character spans to locate.
        expected: per text, the token id each span must be.
        add_special_tokens: as the prompts are encoded (a BOS shifts every index).

    Raises:
        InputError: a span is not exactly one token of the expected id in context.
    """
    encoded = tokenizer(
        list(texts), add_special_tokens=add_special_tokens, return_offsets_mapping=True
    )
    located = []
    for text, ids, offsets, row_spans, row_ids in zip(
        texts, encoded["input_ids"], encoded["offset_mapping"], spans, expected, strict=True
    ):
        row = []
        for (start, end), want in zip(row_spans, row_ids, strict=True):
            hits = [
                i
                for i, (a, b) in enumerate(offsets)
                if b == end and a in (start, start + 1) and ids[i] == want
            ]
            if len(hits) != 1:
                raise InputError(
                    f"{text[start:end]!r} in {text!r} is not one token in context; the"
                    " template must separate it from its neighbours (a space before,"
                    " punctuation or a space after)."
                )
            row.append(hits[0])
        located.append(row)
    return located
