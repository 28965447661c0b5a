"""The causal test of retrieval heads: NIAH accuracy with top-K vs K random heads masked.

Wu et al. 2024 (arXiv 2404.15574, §4, Fig. 1 and 7; code nightdessert/Retrieval_Head
@3ac171a): masking the top-K retrieval heads breaks needle retrieval, while masking K random
non-retrieval heads barely changes it. Accuracy is, by default, the share of tests whose
greedy response contains the answer phrase (`metric="match"`), x 100; `metric="rouge1"` is
the paper's NIAH score, ROUGE-1 recall of the answer x 100. Both are stored per test. On a
small model that answers in full sentences ROUGE-1 credits the function words of a wrong
answer ("found in the bakery" scores 2/7 against "in a yellow tent near Falcon Ridge"),
which puts a floor under the masked curve.

Masking uses the toolkit's interventions: `masking="zero"` is `HeadScale(alpha=0)` (the
head's output z is 0), `masking="uniform"` is `uniform_attention` (the paper's query
zeroing: the head outputs the mean of V). `positions="decode"` (default, as the reference
code) masks the decode steps only, from the step that yields the first answer token; the
prompt's KV cache is then the same for every condition, so it is built once per test and
cropped back after each condition. `positions="all"` also masks the prefill (the cache is
rebuilt under the mask for each condition; slower).

Random controls draw K heads from those that are neither retrieval heads (score above the
threshold) nor among the top K, per test (`random_draw="per_test"`, paper) or once per seed
(`"per_seed"`), for `n_seeds` seeds; the table reports each seed's accuracy, so the spread
over seeds is visible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from interp.config import Config, check_range
from interp.errors import ConfigError, InputError
from interp.heads import Head, HeadSet
from interp.interventions import HeadScale, uniform_attention
from interp.models import Model
from interp.results import HeadScores, Provenance, hash_inputs
from probes.niah import NeedleTest, answer_match, rouge1_recall
from probes.retrieval import decode, prefill

ANALYZER = "retrieval-ablation"


@dataclass(frozen=True, kw_only=True)
class AblationConfig(Config):
    """Parameters of the masking experiment.

    Attributes:
        ks: numbers of heads to mask (paper: 0, 2, 5, 10, 15, 20, 30, 50, 100).
        n_seeds: random control draws per K.
        masking: "zero" (HeadScale alpha=0) or "uniform" (paper's uniform attention).
        positions: "decode" (reference code) or "all" (prefill too).
        random_draw: "per_test" (paper) or "per_seed".
        metric: accuracy per test: "match" (1 if the answer phrase is in the response) or
            "rouge1" (paper: ROUGE-1 recall of the answer). Both are stored per test.
        threshold: heads scoring above it are retrieval heads, never random controls.
        max_new_tokens: greedy budget (paper: 50; stops at a newline).
    """

    ks: tuple[int, ...] = (0, 2, 5, 10, 15, 20, 30, 50, 100)
    n_seeds: int = 5
    masking: Literal["zero", "uniform"] = "zero"
    positions: Literal["decode", "all"] = "decode"
    random_draw: Literal["per_test", "per_seed"] = "per_test"
    metric: Literal["match", "rouge1"] = "match"
    threshold: float = 0.1
    max_new_tokens: int = 50

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "n_seeds", 0)
        check_range(self, "threshold", 0.0, 1.0)
        check_range(self, "max_new_tokens", 1)
        if not self.ks or min(self.ks) < 0:
            raise ConfigError(f"AblationConfig.ks must be non-negative counts, got {self.ks}.")


@dataclass(frozen=True)
class AblationResult:
    """What `run_ablation` returns.

    Attributes:
        tests: one row per (test, condition): needle, length, depth, condition ("top" or
            "random"), k, seed, masked heads, response, recall.
        curve: one row per (condition, k, seed): accuracy (mean recall x 100).
        summary: one row per k: top-K accuracy, random median, min, max over seeds.
        provenance: model, config, inputs.
    """

    tests: pd.DataFrame
    curve: pd.DataFrame
    summary: pd.DataFrame
    provenance: Provenance


def masked(model: Model, heads: HeadSet, config: AblationConfig) -> AbstractContextManager[None]:
    """The context that masks `heads` (nothing when the set is empty)."""
    if not len(heads):
        return nullcontext()
    if config.masking == "zero":
        return HeadScale(heads, alpha=0.0).applied(model)
    return uniform_attention(heads, phase="all").applied(model)


def _conditions(
    scores: HeadScores, config: AblationConfig
) -> Iterator[tuple[str, int, int, HeadSet, list[Head]]]:
    """(condition, k, seed, top-k heads, random pool) for every curve point."""
    ranked = scores.ranked()
    retrieval = set(scores.above(config.threshold))
    for k in sorted(set(config.ks)):
        if k > len(ranked):
            raise InputError(f"Cannot mask {k} heads: the model has {len(ranked)}.")
        top = HeadSet(ranked[:k])
        yield "top", k, 0, top, []
        if k == 0:
            continue
        pool = [h for h in ranked[k:] if h not in retrieval]
        if len(pool) < k:
            raise InputError(f"Only {len(pool)} non-retrieval heads to draw {k} random ones.")
        for seed in range(config.n_seeds):
            yield "random", k, seed, top, pool


def run_ablation(
    model: Model,
    tests: Sequence[NeedleTest],
    scores: HeadScores,
    config: AblationConfig | None = None,
    progress: Callable[[int, int, list[dict[str, object]]], None] | None = None,
) -> AblationResult:
    """NIAH accuracy with no heads, the top-K heads and K random heads masked.

    Args:
        model: a loaded model.
        tests: NIAH tests, ideally with needles not used to compute `scores`.
        scores: per-head retrieval scores (`probes.retrieval.run(...).scores`).
        config: the K grid, seeds and masking mode.
        progress: called as progress(done, total, rows) after each test with its rows.

    Example:
        >>> result = run_ablation(model, heldout_tests, scored.scores)  # doctest: +SKIP
        >>> result.summary  # doctest: +SKIP
    """
    config = config or AblationConfig()
    if not tests:
        raise InputError("No NIAH tests given for the ablation.")
    conditions = list(_conditions(scores, config))
    rows: list[dict[str, object]] = []
    for done, test in enumerate(tests, start=1):
        test_rows = []
        shared = prefill(model, test.input_ids) if config.positions == "decode" else None
        for condition, k, seed, top, pool in conditions:
            heads = top
            if condition == "random":
                # Seeded by (seed, k[, test]), so runs are reproducible and their tables merge.
                where = [test.needle_index, test.length, round(test.depth * 1e4)]
                key = [seed, k] if config.random_draw == "per_seed" else [seed, k, *where]
                chosen = np.random.default_rng(key).choice(len(pool), size=k, replace=False)
                heads = HeadSet(pool[i] for i in chosen)
            response = _respond(model, test, heads, config, shared)
            test_rows.append(
                {
                    **test.key(),
                    "condition": "none" if k == 0 else condition,
                    "k": k,
                    "seed": seed,
                    "heads": ",".join(heads.labels),
                    "response": response,
                    "recall": rouge1_recall(test.answer, response),
                    "match": answer_match(test.answer, response),
                }
            )
        rows.extend(test_rows)
        if progress is not None:
            progress(done, len(tests), test_rows)
    provenance = Provenance(
        model=model.spec,
        weights_hash=model.weights_hash,
        analyzer=ANALYZER,
        config={**config.to_dict(), "scores_inputs_hash": scores.provenance.inputs_hash},
        inputs_hash=hash_inputs([[*t.key().values(), t.input_ids.tolist()] for t in tests]),
        n_inputs=len(tests),
    )
    table = pd.DataFrame(rows)
    curve, summary = summarize(table, config.metric)
    return AblationResult(table, curve, summary, provenance)


def _respond(
    model: Model, test: NeedleTest, heads: HeadSet, config: AblationConfig, shared: object
) -> str:
    last = int(test.input_ids[-1])
    if shared is None:  # positions="all": build the cache under the mask
        with masked(model, heads, config):
            cache = prefill(model, test.input_ids)
            tokens = decode(model, cache, last, config.max_new_tokens)
    else:
        n_prefill = len(test.input_ids) - 1
        with _cropped(shared, n_prefill), masked(model, heads, config):
            tokens = decode(model, shared, last, config.max_new_tokens)  # type: ignore[arg-type]
    return model.tokenizer.decode(tokens, skip_special_tokens=True)


@contextmanager
def _cropped(cache: object, length: int) -> Iterator[None]:
    """Give the shared prompt cache back at `length` tokens after a condition decodes."""
    try:
        yield
    finally:
        cache.crop(length - cache.get_seq_length())  # type: ignore[attr-defined]


def summarize(
    tests: pd.DataFrame, metric: Literal["match", "rouge1"] = "match"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curve, summary) from the per-test table: accuracy = mean of the metric x 100."""
    column = "match" if metric == "match" else "recall"
    curve = (
        tests.groupby(["condition", "k", "seed"], as_index=False)[column]
        .mean()
        .rename(columns={column: "accuracy"})
    )
    curve["accuracy"] *= 100
    top = curve[curve.condition != "random"].set_index("k")["accuracy"].rename("top_k")
    rand = curve[curve.condition == "random"].groupby("k")["accuracy"]
    summary = pd.concat(
        [
            top,
            rand.median().rename("random_median"),
            rand.min().rename("random_min"),
            rand.max().rename("random_max"),
            rand.size().rename("n_seeds"),
        ],
        axis=1,
    ).reset_index()
    return curve, summary
