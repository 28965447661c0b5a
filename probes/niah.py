"""Needle-in-a-haystack (NIAH) tests: needles, haystacks, the length x depth grid, ROUGE-1.

Builds the tests of Wu et al. 2024 (arXiv 2404.15574, §2; code nightdessert/Retrieval_Head
@3ac171a): a haystack cut so that the whole prompt has `length` tokens, a needle inserted at
`depth` of the context and snapped back to the previous sentence end, then the question
`Based on the content of the book, Question: {q}\\nAnswer:`; chat models get their chat
template with the context wrapped in `<book>...</book>`.

Snapping and span finding work on characters, through the tokenizer's offset mapping, so
they are tokenizer-agnostic (the reference code hard-codes LLaMA period ids) and the needle
is never re-encoded on its own (no stray BOS mid-context). Shipped sets live in
`data/needles/*.jsonl` (fields `needle`, `question`, `answer`; the answer must occur in the
needle) and `data/haystacks/*.txt` (original prose written for this project; all files of
a set are joined into one haystack).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from interp.errors import InputError, UnsupportedModelError
from interp.generation import GenerationConfig, default_batch_size
from interp.models import Model
from interp.prefill import PrefixTree, supports_prefix_sharing
from interp.prompts import data_path, read_jsonl, read_text
from interp.runs import WorkLog
from interp.work import Item, Row, Work

QUESTION = "Based on the content of the book, Question: {question}\nAnswer:"
LengthRule = Literal["prompt", "reference"]
REFERENCE_QUESTION_ROOM = 200  # Wu et al.'s code: haystack + needle to length - 200 tokens
# A sentence ends with . ! or ?, optionally closing quotes/brackets, then whitespace.
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s+")
_WORD = re.compile(r"\w+")
# Prompts batched together are at most this many times as long as the batch's shortest.
SIMILAR = 1.1


@dataclass(frozen=True)
class Needle:
    """A fact to hide, the question that asks for it, and the answer phrase within it."""

    needle: str
    question: str
    answer: str

    def __post_init__(self) -> None:
        fields = (self.needle, self.question, self.answer)
        if not all(isinstance(f, str) for f in fields):
            raise InputError(f"Needle fields must be strings, got {self!r}.")
        if not all(f.strip() for f in fields):
            raise InputError(f"Needle fields must be non-empty, got {self!r}.")
        if self.answer.lower() not in self.needle.lower():
            raise InputError(
                f"The answer {self.answer!r} does not occur in the needle {self.needle!r};"
                " the answer span is located inside the needle, so write it there verbatim."
            )


@dataclass(frozen=True)
class NeedleTest:
    """One NIAH test: a tokenized prompt and where the needle and answer lie in it.

    Attributes:
        needle_index: index of the needle in its set.
        length: requested prompt length in tokens (the grid value).
        depth: requested needle depth in [0, 1] (0 = start of the context).
        input_ids: [pos] the tokenized prompt.
        needle_span: (start, stop) token positions of the needle.
        answer_span: (start, stop) token positions of the answer phrase inside the needle.
        answer: the reference answer for ROUGE-1.
    """

    needle_index: int
    length: int
    depth: float
    input_ids: torch.Tensor
    needle_span: tuple[int, int]
    answer_span: tuple[int, int]
    answer: str

    def key(self) -> dict[str, object]:
        """What identifies a test across runs (for merging per-test tables)."""
        return {"needle": self.needle_index, "length": self.length, "depth": self.depth}


def load_needles(path: str | Path | None = None) -> list[Needle]:
    """Needles from a JSONL file (default: the shipped `data/needles/scoring.jsonl`)."""
    path = Path(path) if path is not None else data_path("needles", "scoring.jsonl")
    needles = []
    for where, record in read_jsonl(path, "Needle"):
        if not isinstance(record, dict) or not {"needle", "question", "answer"} <= set(record):
            raise InputError(f"{where}: expected an object with 'needle', 'question', 'answer'.")
        try:
            needles.append(Needle(record["needle"], record["question"], record["answer"]))
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from exc
    if not needles:
        raise InputError(f"Needle file {path} holds no needles.")
    return needles


def load_haystack(paths: str | Path | Sequence[str | Path] | None = None) -> str:
    """One haystack text from .txt files joined by blank lines (default: data/haystacks).

    One path (a string or Path) is one file, never a sequence of characters.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    files = [Path(p) for p in paths] if paths else sorted(data_path("haystacks").glob("*.txt"))
    if not files:
        raise InputError("No haystack files given.")
    texts = [read_text(p, "Haystack").strip() for p in files]
    empty = [str(p) for p, text in zip(files, texts, strict=True) if not text]
    if empty:
        raise InputError(f"Haystack files hold no text: {empty}.")
    return "\n\n".join(texts)


@dataclass(frozen=True, kw_only=True)
class NiahInputs:
    """Where a NIAH workflow's tests come from, and how many run per forward.

    Attributes:
        needles: a needle JSONL file; None = the workflow's shipped set in data/needles.
        haystack: haystack .txt files, joined in order; empty = data/haystacks/*.txt.
        length_rule: how a grid length is measured (see `build_tests`).
        batch_size: tests per forward (None: what suits the device). Tables do not depend
            on it.
    """

    needles: Path | None = None
    haystack: tuple[Path, ...] = ()
    length_rule: LengthRule = "prompt"
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {self.batch_size}.")

    def files(self, shipped: str) -> list[Path]:
        """The needle file (`shipped` in data/needles by default), then the haystack files."""
        haystack = self.haystack or tuple(sorted(data_path("haystacks").glob("*.txt")))
        return [self.needles or data_path("needles", shipped), *haystack]

    def tests(
        self,
        model: Model,
        shipped: str,
        lengths: Sequence[int],
        n_depths: int,
        max_new_tokens: int,
    ) -> list[NeedleTest]:
        """Every needle at every (length, depth), tokenized for `model` (`build_tests`)."""
        needle_file, *haystack = self.files(shipped)
        return build_tests(
            model,
            load_needles(needle_file),
            load_haystack(haystack),
            lengths,
            n_depths,
            max_new_tokens,
            length_rule=self.length_rule,
        )


def grid(lengths: Sequence[int], n_depths: int) -> list[tuple[int, float]]:
    """All (length, depth) pairs, depths linspace(0, 1, n_depths) (paper: 0..100%)."""
    if n_depths < 1 or not lengths or min(lengths) < 1:
        raise InputError(
            f"A NIAH grid needs lengths >= 1 and at least one depth, got lengths"
            f" {list(lengths)} and {n_depths} depths."
        )
    depths = np.linspace(0.0, 1.0, n_depths) if n_depths > 1 else np.array([0.5])
    return [(int(n), round(float(d), 4)) for n in lengths for d in depths]


def build_tests(
    model: Model,
    needles: Sequence[Needle],
    haystack: str,
    lengths: Sequence[int],
    n_depths: int,
    max_new_tokens: int,
    *,
    length_rule: LengthRule = "prompt",
) -> list[NeedleTest]:
    """Every needle at every (length, depth) of the grid, tokenized for `model`.

    `length_rule="prompt"` (toolkit): the whole prompt has `length` tokens.
    `"reference"` (Wu et al.'s code): haystack + needle have `length - 200` tokens and the
    template and question follow, so prompts are shorter by about 200 minus the question's
    tokens at the same grid value.

    Raises:
        InputError: a length plus the generation budget exceeds the model's context, or the
            haystack is too short for a length.
    """
    limit = model.context_length
    if limit and max_new_tokens >= limit:
        raise InputError(
            f"A generation budget of {max_new_tokens} tokens leaves no room for a prompt in the"
            f" model's context of {limit}; use max_new_tokens < {limit}."
        )
    if length_rule not in ("prompt", "reference"):
        raise InputError(f"length_rule must be 'prompt' or 'reference', got {length_rule!r}.")
    for length in lengths:
        if length_rule == "prompt" and limit and length + max_new_tokens > limit:
            raise InputError(
                f"A {length}-token NIAH prompt plus {max_new_tokens} generated tokens exceeds"
                f" the model's context of {limit}; use lengths <= {limit - max_new_tokens}."
            )
    hay_offsets = _offsets(model, haystack)
    return [
        _build(
            model, index, needle, haystack, hay_offsets, length, depth, max_new_tokens, length_rule
        )
        for index, needle in enumerate(needles)
        for length, depth in grid(lengths, n_depths)
    ]


def _offsets(model: Model, text: str) -> np.ndarray:
    """[token, 2] character offsets of `text` (needs a fast tokenizer)."""
    if not getattr(model.tokenizer, "is_fast", False):
        raise UnsupportedModelError(
            "NIAH tests need a fast tokenizer (offset mapping) to place the needle."
        )
    encoded = model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return np.asarray(encoded["offset_mapping"], dtype=np.int64).reshape(-1, 2)


def _prompt(model: Model, context: str, question: str) -> tuple[str, int, bool]:
    """(prompt text, character offset of the context in it, whether it has special tokens)."""
    query = QUESTION.format(question=question)
    if getattr(model.tokenizer, "chat_template", None):
        marker = "\x00CONTEXT\x00"
        message = [{"role": "user", "content": f"<book>{marker}</book>\n{query}"}]
        text = model.tokenizer.apply_chat_template(
            message, tokenize=False, add_generation_prompt=True
        )
        start = text.index(marker)
        return text.replace(marker, context), start, True
    return f"{context}\n\n{query}", 0, False


def _build(
    model: Model,
    index: int,
    needle: Needle,
    haystack: str,
    hay_offsets: np.ndarray,
    length: int,
    depth: float,
    max_new_tokens: int,
    length_rule: LengthRule,
) -> NeedleTest:
    needle_tokens = len(_offsets(model, " " + needle.needle))
    if length_rule == "reference":
        n_context = length - REFERENCE_QUESTION_ROOM - needle_tokens
    else:
        shell, _, _ = _prompt(model, "", needle.question)
        n_context = length - len(_encode(model, shell, True)) - needle_tokens
    if n_context < 1:
        raise InputError(f"Length {length} leaves no room for a haystack around the needle.")
    if n_context > len(hay_offsets):
        raise InputError(
            f"The haystack has {len(hay_offsets)} tokens, fewer than the {n_context} a"
            f" {length}-token test needs; give longer or more haystack files."
        )
    context = haystack[: hay_offsets[n_context - 1, 1]]
    # Needle at depth * context, snapped back to the previous sentence end (or the start).
    target = round(depth * len(context))
    ends = [m.end() for m in _SENTENCE_END.finditer(context, 0, target + 1) if m.end() <= target]
    at = ends[-1] if ends else 0
    inserted = f"{context[:at]}{needle.needle} {context[at:]}"
    text, offset, specials = _prompt(model, inserted, needle.question)
    encoded = model.tokenizer(
        text, add_special_tokens=not specials, return_offsets_mapping=True, return_tensors="pt"
    )
    ids = encoded["input_ids"][0]
    model.check_length(len(ids) + max_new_tokens, what="NIAH prompt plus generation budget")
    offsets = encoded["offset_mapping"][0].numpy()
    start = offset + at
    answer_at = start + needle.needle.lower().index(needle.answer.lower())
    return NeedleTest(
        needle_index=index,
        length=length,
        depth=depth,
        input_ids=ids,
        needle_span=_token_span(offsets, start, start + len(needle.needle)),
        answer_span=_token_span(offsets, answer_at, answer_at + len(needle.answer)),
        answer=needle.answer,
    )


def _encode(model: Model, text: str, specials: bool) -> list[int]:
    return model.tokenizer(text, add_special_tokens=not specials)["input_ids"]


def _token_span(offsets: np.ndarray, begin: int, end: int) -> tuple[int, int]:
    """Token positions [start, stop) whose characters overlap [begin, end)."""
    overlap = (offsets[:, 0] < end) & (offsets[:, 1] > begin) & (offsets[:, 1] > offsets[:, 0])
    hit = np.flatnonzero(overlap)
    if len(hit) == 0:
        raise InputError(f"No token covers characters {begin}..{end} of the prompt.")
    return int(hit[0]), int(hit[-1]) + 1


def decoding(max_new_tokens: int) -> GenerationConfig:
    """Wu et al.'s NIAH decoding: greedy, at most `max_new_tokens`, ending at a newline or EOS."""
    return GenerationConfig(max_new_tokens=max_new_tokens, stop=("\n",))


def batch_size_for(
    model: Model, tests: Sequence[NeedleTest], max_new_tokens: int, shared: bool = False
) -> int:
    """The default tests per forward on `model`'s device, for the longest of `tests`
    (`shared`: their prefill comes from `shared_prefixes`)."""
    longest = max((len(t.input_ids) for t in tests), default=1)
    shared = shared and supports_prefix_sharing(model)
    return default_batch_size(model, longest + max_new_tokens, shared_prefill=shared)


def shared_prefixes(model: Model, tests: Sequence[NeedleTest]) -> PrefixTree | None:
    """A prefix tree over the tests' prompts, so the haystack they share is prefilled once.

    Tests of one length and depth share the context before their needles, and a longer
    test's haystack extends a shorter one's. None where the model does not support it
    (`interp.prefill.supports_prefix_sharing`): prefill each batch on its own.
    """
    if not supports_prefix_sharing(model):
        return None
    return PrefixTree(model, [t.input_ids for t in tests])


def run_tests(
    model: Model,
    tests: Sequence[NeedleTest],
    process: Callable[[list[NeedleTest], PrefixTree | None], Sequence[list[Row]]],
    batch_size: int,
    *,
    share_prefix: bool,
    log: WorkLog | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[list[Row]]:
    """Each test's rows from `process(batch, tree)`, through the work driver (`interp.work`).

    Tests of similar prompt length share a batch (at most `SIMILAR` times as long as the
    batch's shortest, so padding wastes at most that share of a prefill, and the grid's
    lengths fall into separate batches); with `log`, batches it holds are skipped and each
    finished batch is recorded. With `share_prefix`, `tree` is one prefix tree over the
    tests still to run (`shared_prefixes`), so the context they share is prefilled once.
    """
    work = Work(needle_items(tests), log, batch_size, similar=SIMILAR)
    todo = work.todo
    tree = shared_prefixes(model, todo) if share_prefix and todo else None
    return work.run(lambda batch: process(batch, tree), progress)


def needle_items(tests: Sequence[NeedleTest]) -> list[Item[NeedleTest]]:
    """The tests as work items: keyed by needle, length and depth, batched by prompt length
    and, among similar lengths, by depth (tests of one depth share the haystack before their
    needle), with their prompts, so a split counts what a prefix tree computes."""
    return [
        Item(
            "/".join(str(value) for value in t.key().values()),
            t,
            len(t.input_ids),
            order=t.needle_index,
            prompt=t.input_ids.cpu(),
        )
        for t in tests
    ]


@functools.cache
def _rouge1() -> Any:
    from rouge_score.rouge_scorer import RougeScorer  # imports nltk: about a second

    return RougeScorer(["rouge1"], use_stemmer=True)


def rouge1_recall(reference: str, response: str) -> float:
    """ROUGE-1 recall of the reference in the response, as Wu et al.'s code scores NIAH.

    `rouge_score`'s `RougeScorer(["rouge1"], use_stemmer=True)` (their
    needle_in_haystack_with_mask.py): lower-cased, split on anything but ASCII letters and
    digits, words longer than 3 letters Porter-stemmed, so "ferries" matches "ferry" and a
    non-ASCII letter splits a word.
    """
    return float(_rouge1().score(reference, response)["rouge1"].recall)


def answer_match(reference: str, response: str) -> float:
    """1.0 if the reference's words occur, in order and contiguously, in the response.

    Case and punctuation are ignored. Unlike ROUGE-1 recall it gives no credit for the
    function words ("the", "in", "a") of a wrong answer.
    """
    ref = " ".join(_WORD.findall(reference.lower()))
    got = " ".join(_WORD.findall(response.lower()))
    return float(bool(ref) and f" {ref} " in f" {got} ")


@dataclass(frozen=True)
class Answers:
    """One run of NIAH tests as a metric sees it: per test, the reference and the response."""

    references: tuple[str, ...]
    responses: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.references) != len(self.responses):
            raise InputError("Answers needs one response per reference.")


def answer_match_scores(run: Answers) -> np.ndarray:
    """[test] `answer_match` of each response (an `interp.effects.Metric`)."""
    return np.array(
        [answer_match(r, g) for r, g in zip(run.references, run.responses, strict=True)]
    )


def rouge1_recall_scores(run: Answers) -> np.ndarray:
    """[test] `rouge1_recall` of each response (an `interp.effects.Metric`)."""
    return np.array(
        [rouge1_recall(r, g) for r, g in zip(run.references, run.responses, strict=True)]
    )
