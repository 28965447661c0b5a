"""Retrieval heads: heads that copy-paste needle tokens from the context into the output.

Wu et al. 2024, "Retrieval Head Mechanistically Explains Long-Context Factuality" (arXiv
2404.15574, Eq. 1; code nightdessert/Retrieval_Head @3ac171a). In a needle-in-a-haystack
test decoded greedily, at a step that generates token w, head h *hits* iff w is a needle
token, the head's top-1 attended key j* lies in the needle span and x_{j*} = w. A test's
score is |g_h| / |k|, g_h the distinct needle tokens hit and |k| the span's distinct
tokens (`count="set"`, paper: k is a set); the reference code adds 1/(span length) per hit
event (`count="events"`).
The span is the answer phrase (`span="answer"`, as the released score files) or the whole
needle. Scores are averaged over the tests whose response has ROUGE-1 recall > 0.5
(the code's filter; `failed_as_zero` keeps failed tests with their scores set to 0, and
`all` keeps them as scored). A head with mean score > 0.1 is a retrieval head.

Speed and memory: tests of similar length run as one left-padded batch through the
generation driver (`interp.generation`): the prompts minus their last token are prefilled
with the fused kernel; the last prompt token and every generated token then run as decode
steps in which an attention hook computes one [batch, head, key] row per layer and keeps
only its argmax, so the extra memory per step is O(batch x heads x keys) for one layer at
a time and the result is [batch, layer, head] int64 indices, shifted by each row's padding
into positions of that row. Each row stops on its own (newline or EOS) and only its own
steps count, so a test scores the same in any batch. Hits are computed for all layers and
heads at once; there is no per-head loop and one host sync per step (the stop test).

Method notes, defaults and pitfalls: docs/methods.md §3.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor

from interp.config import Config, check_range
from interp.errors import ConfigError, InputError
from interp.generation import Step, decode
from interp.heads import HeadSet
from interp.hooks import AttentionRows, attention_hooks
from interp.models import Model
from interp.prefill import PrefixTree, prefill
from interp.results import Bundle, HeadScores, ItemTable, Provenance, hash_inputs, head_frame
from interp.work import WorkFolder, open_log
from probes.niah import NeedleTest, NiahInputs, batch_size_for, decoding, rouge1_recall, run_tests

ANALYZER = "retrieval"


@dataclass(frozen=True, kw_only=True)
class RetrievalConfig(Config):
    """Parameters of the retrieval-head analyzer; defaults are Wu et al.'s.

    Attributes:
        lengths: prompt lengths in tokens. None = the paper's linspace(1K, 50K, 20), capped
            at the model's context minus `max_new_tokens` (duplicates dropped).
        n_depths: needle depths linspace(0, 100%, n_depths) (paper: 10).
        max_new_tokens: greedy decoding budget (paper: 50; decoding also stops at a newline).
        count: "set" (paper: distinct needle tokens hit) or "events" (code: every hit).
        span: "answer" (code's answer phrase; the released scores use it) or "needle".
        average: "successful" (code: tests with ROUGE-1 recall > success_recall),
            "failed_as_zero" or "all".
        success_recall: the ROUGE-1 recall a test needs to count as successful (0.5).
        threshold: a retrieval head has mean score > threshold (0.1).
    """

    lengths: tuple[int, ...] | None = None
    n_depths: int = 10
    max_new_tokens: int = 50
    count: Literal["set", "events"] = "set"
    span: Literal["answer", "needle"] = "answer"
    average: Literal["successful", "failed_as_zero", "all"] = "successful"
    success_recall: float = 0.5
    threshold: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "n_depths", 1)
        check_range(self, "max_new_tokens", 1)
        check_range(self, "success_recall", 0.0, 1.0)
        check_range(self, "threshold", 0.0, 1.0)
        if self.lengths is not None and (not self.lengths or min(self.lengths) < 1):
            raise ConfigError(f"RetrievalConfig.lengths must be positive, got {self.lengths}.")

    def grid_lengths(self, model: Model) -> tuple[int, ...]:
        """The lengths to test on `model` (the paper's grid capped at its context)."""
        if self.lengths is not None:
            return self.lengths
        cap = 50_000
        if model.context_length:
            cap = min(cap, model.context_length - self.max_new_tokens)
        return tuple(dict.fromkeys(int(n) for n in np.linspace(min(1000, cap), cap, 20)))


@dataclass(frozen=True)
class RetrievalResult(Bundle):
    """What `run` returns; `save(folder)` writes scores.parquet and tests.parquet.

    Attributes:
        scores: per (layer, head) mean score over the kept tests, with `activation`
            (share of kept tests with >= 1 hit) and `retrieval_head` (score > threshold).
        tests: one row per test: needle, length, depth, prompt tokens, response, recall,
            success, kept, and the [layer, head] scores as a flat `head_scores` list.
    """

    scores: HeadScores
    tests: ItemTable = field(repr=False)

    def retrieval_heads(self) -> pd.DataFrame:
        """The heads scoring above the run's threshold, highest first."""
        table = self.scores.data
        threshold = self.scores.provenance.config["threshold"]
        return table[table.score > threshold].sort_values("score", ascending=False)

    def summary_lines(self) -> list[str]:
        """How many tests succeeded, and the retrieval heads (the first 15), for a console."""
        tests, found = self.tests.data, self.retrieval_heads()
        threshold = self.scores.provenance.config["threshold"]
        listed = ", ".join(f"{r.label} ({r.score:.2f})" for r in found.head(15).itertuples())
        return [
            f"{len(tests)} tests ({int(tests.success.sum())} successful)",
            f"{len(found)} of {len(self.scores.data)} heads score > {threshold}: {listed}",
        ]

    def figures(self) -> dict[str, object]:
        """The layer x head map of the retrieval scores."""
        from interp.figures import head_heatmap

        title = f"Retrieval score ({self.scores.provenance.model})"
        return {"retrieval_scores": head_heatmap(self.scores, "score", title)}


def needle_scores(
    argmaxes: Int[Tensor, "step layer head"],
    tokens: Sequence[int],
    input_ids: Int[Tensor, " pos"],
    span: tuple[int, int],
    count: Literal["set", "events"],
) -> np.ndarray:
    """One test's [layer, head] scores from its per-step argmax indices.

    `set`: distinct needle token ids hit / distinct token ids of the span (paper's
    |g_h ∩ k| / |k| with k a set, so a perfect copy scores 1 even when the answer repeats a
    token); `events`: hits / span length (reference code, can exceed 1).
    """
    start, stop = span
    n_span = stop - start
    steps, n_layers, n_heads = argmaxes.shape
    if steps == 0:
        return np.zeros((n_layers, n_heads))
    ids = input_ids.to(argmaxes.device)
    token_tensor = torch.as_tensor(list(tokens), device=argmaxes.device)
    in_span = (argmaxes >= start) & (argmaxes < stop)
    same = ids[argmaxes.clamp(0, len(ids) - 1)] == token_tensor[:, None, None]
    hits = in_span & same  # [step, layer, head]
    if count == "events":
        return (hits.sum(0).double() / n_span).cpu().numpy()
    # Distinct token ids: index each hit by the id's rank among the span's unique ids.
    unique, inverse = torch.unique(ids[start:stop], return_inverse=True)
    rank = inverse[(argmaxes - start).clamp(0, n_span - 1)]  # [step, layer, head]
    seen = torch.zeros(n_layers, n_heads, len(unique), dtype=torch.bool, device=hits.device)
    layer_idx = torch.arange(n_layers, device=hits.device)[None, :, None].expand_as(rank)
    head_idx = torch.arange(n_heads, device=hits.device)[None, None, :].expand_as(rank)
    seen[layer_idx[hits], head_idx[hits], rank[hits]] = True
    return (seen.sum(-1).double() / len(unique)).cpu().numpy()


class _ArgmaxHook:
    """Attention hook: at decode steps, keep each layer's per-row, per-head argmax key."""

    def __init__(self, n_layers: int) -> None:
        self.argmax: list[Tensor | None] = [None] * n_layers

    def wants(self, layer: int, n_queries: int) -> bool:
        return n_queries == 1

    def __call__(self, rows: AttentionRows) -> None:
        # [batch, head, query=1, key] -> [batch, head]. A decode row's block holds every
        # key, so an index on it is a key index of the padded batch.
        self.argmax[rows.layer] = rows.probs[:, :, -1].argmax(-1)


class _Argmaxes:
    """`on_step` callback: each row's argmax key positions at the steps that keep a token."""

    def __init__(self, n_layers: int) -> None:
        self.hook = _ArgmaxHook(n_layers)
        self.n_layers = n_layers
        self.kept: dict[int, list[Tensor]] = {}  # prompt -> per kept step [layer, head]

    def __call__(self, step: Step) -> None:
        device = step.padding.device  # layers may live on several devices
        stacked = torch.stack([a.to(device) for a in self.hook.argmax], dim=1)  # type: ignore[union-attr]
        positions = stacked - step.padding[:, None, None]  # [row, layer, head] in each row
        for prompt in step.rows:
            self.kept.setdefault(prompt, [])
        for row in step.kept.nonzero()[:, 0].tolist():
            self.kept[step.rows[row]].append(positions[row])

    def of(self, prompt: int) -> Int[Tensor, "step layer head"]:
        """The argmax positions of prompt `prompt` at each step that produced a kept token."""
        steps = self.kept[prompt]
        if steps:
            return torch.stack(steps)
        n_heads = self.hook.argmax[0].shape[-1]  # type: ignore[union-attr]
        return torch.zeros((0, self.n_layers, n_heads), dtype=torch.long)


def score_tests(
    model: Model,
    tests: Sequence[NeedleTest],
    config: RetrievalConfig,
    prefixes: PrefixTree | None = None,
) -> list[tuple[np.ndarray, str]]:
    """Decode `tests` as one left-padded batch with the argmax hook: ([layer, head], text) each.

    Every decode step's argmax keys are shifted by each row's left padding into positions
    of that row's own prompt-then-response sequence, and only the steps whose token joins
    the row's response count, so each test scores as it would alone; a finished row leaves
    the batch. With `prefixes` (a tree holding the tests' prompts) the prompt caches come
    from it; the hook sees the same decode steps either way.
    """
    prompts = [t.input_ids for t in tests]
    prefilled = prefixes.prefill(prompts) if prefixes else prefill(model, prompts)
    argmaxes = _Argmaxes(model.geometry.n_layers)
    with attention_hooks(model.hf, argmaxes.hook):
        generations = decode(
            model, prefilled, decoding(config.max_new_tokens), argmaxes, drop_finished=True
        )
    out = []
    for index, (test, generation) in enumerate(zip(tests, generations, strict=True)):
        span = test.answer_span if config.span == "answer" else test.needle_span
        tokens = generation.response_ids.tolist()
        scores = needle_scores(argmaxes.of(index), tokens, test.input_ids, span, config.count)
        out.append((scores, generation.text))
    return out


def result_row(
    test: NeedleTest, scores: np.ndarray, response: str, config: RetrievalConfig
) -> dict[str, object]:
    """The per-test table row for one scored test."""
    recall = rouge1_recall(test.answer, response)
    return {
        **test.key(),
        "n_tokens": len(test.input_ids),
        "response": response,
        "recall": recall,
        "success": recall > config.success_recall,
        "head_scores": scores.ravel().tolist(),
    }


def run(
    model: Model,
    tests: Sequence[NeedleTest],
    config: RetrievalConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    batch_size: int | None = None,
    share_prefix: bool = True,
    folder: WorkFolder | None = None,
) -> RetrievalResult:
    """Score every head of `model` on NIAH `tests` (see `probes.niah.build_tests`).

    Args:
        model: a loaded model (any HF causal LM; GQA is handled per query head).
        tests: the tests to run.
        config: scoring options; defaults are the paper's.
        progress: called as progress(done, total) tests, before the work and after each
            batch.
        batch_size: tests per forward, grouped by prompt length (default: what suits the
            device, `interp.generation.default_batch_size`). The tables do not depend on it.
        share_prefix: prefill the prompts through one prefix tree over the tests to run,
            so the context they share is computed once (`probes.niah.shared_prefixes`;
            skipped where the model does not support it). Scoring reads decode steps only,
            so the tables are the unshared run's unless float rounding flips an argmax.
        folder: record each finished test there (`interp.work`); run again with the same
            folder to resume a stopped run. A folder of another run (model, config or
            tests) is refused.

    Example:
        >>> from interp.tiny_models import tiny_llama
        >>> from probes import niah
        >>> model = tiny_llama()
        >>> needles, haystack = niah.load_needles()[:1], niah.load_haystack()
        >>> tests = niah.build_tests(model, needles, haystack, [200], 2, 8)
        >>> result = run(model, tests, RetrievalConfig(max_new_tokens=8))
        >>> len(result.tests), result.scores.data["label"].tolist()[:2]
        (2, ['L0H0', 'L0H1'])
    """
    config = config or RetrievalConfig()
    if not tests:
        raise InputError("No NIAH tests given: build some with probes.niah.build_tests.")
    size = batch_size_for(model, tests, config.max_new_tokens, share_prefix)
    size = size if batch_size is None else batch_size
    provenance = retrieval_provenance(model, tests, config)
    per_test = run_tests(
        model,
        tests,
        lambda batch, tree: [[row] for row in scored_rows(model, batch, config, tree)],
        size,
        share_prefix=share_prefix,
        log=open_log(folder, provenance),
        progress=progress,
    )
    table = pd.DataFrame([row for rows in per_test for row in rows])
    return aggregate(table, model.geometry.n_layers, model.geometry.n_heads, config, provenance)


def run_niah(
    model: Model,
    config: RetrievalConfig | None = None,
    inputs: NiahInputs | None = None,
    progress: Callable[[int, int], None] | None = None,
    folder: WorkFolder | None = None,
) -> RetrievalResult:
    """`interp score retrieval` in one call: build the scoring tests of `inputs` on the
    config's length grid (shipped needles: data/needles/scoring.jsonl), then `run` them.

    Example:
        >>> result = run_niah(model, RetrievalConfig(lengths=(1000,)))  # doctest: +SKIP
        >>> result.retrieval_heads()  # doctest: +SKIP
    """
    config = config or RetrievalConfig()
    inputs = inputs or NiahInputs()
    lengths = config.grid_lengths(model)
    tests = inputs.tests(model, "scoring.jsonl", lengths, config.n_depths, config.max_new_tokens)
    return run(model, tests, config, progress, inputs.batch_size, folder=folder)


def scored_rows(
    model: Model,
    tests: Sequence[NeedleTest],
    config: RetrievalConfig,
    prefixes: PrefixTree | None = None,
) -> list[dict[str, object]]:
    """Score a batch of tests; one per-test table row each (the unit of a resumable run)."""
    scored = score_tests(model, tests, config, prefixes)
    return [
        result_row(test, scores, response, config)
        for test, (scores, response) in zip(tests, scored, strict=True)
    ]


def retrieval_provenance(
    model: Model, tests: Sequence[NeedleTest], config: RetrievalConfig
) -> Provenance:
    """The provenance of a run of `tests` (known before it starts, so a run can resume)."""
    return Provenance(
        **model.provenance_fields(),
        analyzer=ANALYZER,
        config=config.to_dict(),
        inputs_hash=hash_inputs([[*t.key().values(), t.input_ids.tolist()] for t in tests]),
        n_inputs=len(tests),
    )


def aggregate(
    tests: pd.DataFrame,
    n_layers: int,
    n_heads: int,
    config: RetrievalConfig,
    provenance: Provenance,
) -> RetrievalResult:
    """Per-head scores from a per-test table (so tables from several runs can be merged)."""
    per_test = np.stack([np.asarray(s) for s in tests["head_scores"]]).reshape(
        -1, n_layers, n_heads
    )
    success = tests["success"].to_numpy(dtype=bool)
    kept = success if config.average == "successful" else np.ones_like(success)
    if config.average == "failed_as_zero":
        per_test = per_test * success[:, None, None]
    chosen = per_test[kept]
    score = chosen.mean(0) if len(chosen) else np.zeros((n_layers, n_heads))
    activation = (chosen > 0).mean(0) if len(chosen) else np.zeros((n_layers, n_heads))
    table = head_frame(
        {"score": score, "activation": activation, "retrieval_head": score > config.threshold}
    )
    table["n_tests"] = int(kept.sum())
    rows = tests.assign(kept=kept).reset_index(drop=True)
    return RetrievalResult(HeadScores(table, provenance), ItemTable(rows, provenance))


def load_scores(path: str | Path) -> HeadScores:
    """The per-head scores `interp score retrieval` saved (scores.parquet); InputError for
    another analyzer's scores."""
    scores = HeadScores.load(path)
    if scores.provenance.analyzer != ANALYZER:
        raise InputError(
            f"{path} holds {scores.provenance.analyzer!r} scores; --scores takes the"
            " scores.parquet of `interp score retrieval`."
        )
    return scores


def retrieval_heads(scores: HeadScores, threshold: float = 0.1) -> HeadSet:
    """The heads whose mean retrieval score is above `threshold` (paper: 0.1)."""
    return scores.above(threshold)
