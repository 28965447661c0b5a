"""Reasoning traces for the preplan/anchor analysis: prompt + response token ids.

A `Trace` is one sequence of token ids with the prompt/response boundary recorded
(`n_prompt`): the analysis reads attention over the whole sequence and scores only the
response positions. Traces come from three places:

* `load_problems()`: the shipped math and logic word problems (`data/problems/`), which
  `generate_traces` turns into prompts (chat template, a request to reason step by step) and
  answers with the toolkit's generation driver (`interp.generation`), seeded, greedy or
  sampled.
* `read_traces(path, model)`: the user's JSONL, one trace per line, either text
  (`prompt`, `response`) or token ids (`prompt_ids`, `response_ids`); an optional `id`.
  The `traces.jsonl` a run writes (`name`, `ids`, `n_prompt`) reads back as it was.
  A line that is not a JSON object, lacks a field or has an empty response is an
  `InputError` naming the line.

Memory: the ids only (a few KB per trace).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interp.errors import InputError
from interp.generation import GenerationConfig, Step, encode_prompts, generate
from interp.models import Model
from interp.prompts import data_path, read_jsonl
from interp.runs import WorkLog
from interp.work import Item, Work

INSTRUCTION = "Solve the problem. Reason step by step, then give the final answer.\n\n"


@dataclass(frozen=True)
class Trace:
    """One reasoning trace: prompt ids then response ids.

    Attributes:
        name: the trace's id (a problem id, or the user's `id`, or `line-N`).
        ids: prompt and response token ids, in order.
        n_prompt: how many of `ids` are the prompt; the rest is the response.
    """

    name: str
    ids: tuple[int, ...]
    n_prompt: int

    def __post_init__(self) -> None:
        if not 0 < self.n_prompt < len(self.ids):
            raise InputError(
                f"Trace {self.name!r} needs a non-empty prompt and response; got"
                f" {self.n_prompt} prompt ids of {len(self.ids)}."
            )

    @property
    def n_response(self) -> int:
        return len(self.ids) - self.n_prompt

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ids": list(self.ids), "n_prompt": self.n_prompt}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trace:
        return cls(data["name"], tuple(data["ids"]), int(data["n_prompt"]))


def trace_work(
    stage: str, traces: Sequence[Trace], log: WorkLog | None, batch_size: int = 1
) -> Work[Trace]:
    """One work item per trace for one stage of a run, keyed `stage/name` in the log
    (`interp.work`), so the stages of one run share a log; batches keep the traces' order."""
    return Work([Item(f"{stage}/{trace.name}", trace) for trace in traces], log, batch_size)


@dataclass(frozen=True)
class Problem:
    """A shipped word problem: its id, kind ("math" or "logic"), question and answer."""

    id: str
    kind: str
    question: str
    answer: str


def load_problems(path: str | Path | None = None) -> list[Problem]:
    """The shipped problems (`data/problems/problems.jsonl`), or a JSONL file like it."""
    source = Path(path) if path is not None else data_path("problems", "problems.jsonl")
    problems = []
    for where, record in read_jsonl(source, "Problem"):
        missing = [
            k
            for k in ("id", "question", "answer")
            if not isinstance(record, dict) or not record.get(k)
        ]
        if missing:
            raise InputError(f"{where}: problem lacks {', '.join(missing)}.")
        problems.append(
            Problem(record["id"], record.get("kind", ""), record["question"], record["answer"])
        )
    return problems


def prompt_ids(model: Model, text: str, *, chat: bool) -> list[int]:
    """Token ids of a prompt, as the generation driver encodes it (chat template if `chat`)."""
    return encode_prompts(model, text, chat=chat)[0].tolist()


def problem_prompt(problem: Problem) -> str:
    return INSTRUCTION + problem.question


def generate_traces(
    model: Model,
    problems: Sequence[Problem],
    config: GenerationConfig,
    *,
    chat: bool = True,
    batch_size: int | None = None,
    on_step: Callable[[Step], None] | None = None,
) -> list[Trace]:
    """Answer each problem with the generation driver; one trace per problem.

    One driver call for all problems, so a problem's sample depends only on the seed and
    its index (not on the batch size).

    Args:
        model: the model that reasons.
        problems: the problems (`load_problems()`).
        config: budget, seed and temperature (greedy at 0).
        chat: wrap the prompt in the model's chat template.
        batch_size: prompts per generation batch (default: the driver's).
        on_step: called after every decode step (`interp.generation.Step`), for progress.

    Raises:
        InputError: a problem got an empty response.
    """
    prompts = [problem_prompt(p) for p in problems]
    outputs = generate(model, prompts, config, chat=chat, batch_size=batch_size, on_step=on_step)
    traces = []
    for problem, output in zip(problems, outputs, strict=True):
        if not len(output.response_ids):
            raise InputError(f"The model gave an empty response to problem {problem.id}.")
        ids = tuple(int(i) for i in output.token_ids.tolist())
        traces.append(Trace(problem.id, ids, output.boundary))
    return traces


def read_traces(path: str | Path, model: Model, *, chat: bool = False) -> list[Trace]:
    """The user's traces from JSONL: text (`prompt`, `response`) or ids per line, or
    the `traces.jsonl` of an earlier run (`name`, `ids`, `n_prompt`).

    Text prompts are encoded by the model's tokenizer (through its chat template when
    `chat`), responses without special tokens; id lines are used as given.

    Raises:
        InputError: a line that is not a JSON object, a missing field, an empty response,
            or token ids that are not integers in the vocabulary (message names the line).
    """
    traces = []
    vocab = len(model.tokenizer)
    for where, record in read_jsonl(path, "Trace"):
        if not isinstance(record, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(record).__name__}.")
        name = str(record.get("id", record.get("name", f"line-{where.rsplit(':', 1)[1]}")))
        prompt, response = _line_ids(record, where, model, chat, vocab)
        traces.append(Trace(name, tuple(prompt + response), len(prompt)))
    if not traces:
        raise InputError(f"{path} holds no traces.")
    names = [t.name for t in traces]
    if len(set(names)) < len(names):
        raise InputError(f"{path}: trace ids repeat; give each line a distinct 'id'.")
    return traces


def _line_ids(
    record: dict[str, Any], where: str, model: Model, chat: bool, vocab: int
) -> tuple[list[int], list[int]]:
    if "ids" in record and "n_prompt" in record:  # a run's own traces.jsonl
        ids, n_prompt = _ids(record["ids"], where, "ids", vocab), record["n_prompt"]
        if not isinstance(n_prompt, int) or isinstance(n_prompt, bool) or n_prompt < 0:
            raise InputError(f"{where}: 'n_prompt' must be a non-negative integer.")
        prompt, response = ids[:n_prompt], ids[n_prompt:]
    elif "prompt_ids" in record or "response_ids" in record:
        fields = ("prompt_ids", "response_ids")
        missing = [k for k in fields if k not in record]
        if missing:
            raise InputError(f"{where}: missing field {missing[0]!r} (ids lines need {fields}).")
        prompt, response = (_ids(record[k], where, k, vocab) for k in fields)
    else:
        missing = [k for k in ("prompt", "response") if k not in record]
        if missing:
            raise InputError(
                f"{where}: missing field {missing[0]!r} (give 'prompt' and 'response' text,"
                " or 'prompt_ids' and 'response_ids')."
            )
        if not all(isinstance(record[k], str) for k in ("prompt", "response")):
            raise InputError(f"{where}: 'prompt' and 'response' must be strings.")
        if not record["prompt"].strip():
            raise InputError(f"{where}: empty prompt.")
        prompt = prompt_ids(model, record["prompt"], chat=chat)
        response = model.tokenizer(record["response"], add_special_tokens=False)["input_ids"]
    if not response:
        raise InputError(f"{where}: empty response.")
    if not prompt:
        raise InputError(f"{where}: empty prompt.")
    model.check_length(len(prompt) + len(response), what=f"trace at {where}")
    return list(prompt), list(response)


def _ids(value: Any, where: str, field: str, vocab: int) -> list[int]:
    ok = isinstance(value, list) and all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < vocab for i in value
    )
    if not ok:
        raise InputError(f"{where}: {field!r} must be a list of token ids in 0..{vocab - 1}.")
    return value
