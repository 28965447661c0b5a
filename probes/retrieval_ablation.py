"""The causal test of retrieval heads: NIAH accuracy with top-K vs K random heads masked.

Wu et al. 2024 (arXiv 2404.15574, §4, Fig. 1 and 7; code nightdessert/Retrieval_Head
@3ac171a): masking the top-K retrieval heads breaks needle retrieval, while masking K random
non-retrieval heads barely changes it. Accuracy is, by default, the share of tests whose
greedy response contains the answer phrase (`metric="match"`), x 100; `metric="rouge1"` is
the paper's NIAH score, ROUGE-1 recall of the answer x 100. Both are stored per test. On a
small model that answers in full sentences ROUGE-1 credits the function words of a wrong
answer ("found in the bakery" scores 2/7 against "in a yellow tent near Falcon Ridge"),
which puts a floor under the masked curve.

Masking computes what the toolkit's interventions compute, per batch row: `masking="zero"`
is `HeadScale(alpha=0)` (the head's output z is 0), `masking="uniform"` is
`uniform_attention` (the paper's query zeroing: the head outputs the mean of V). Like with
like: under "uniform" every condition, the unmasked K = 0 included, runs the explicit
attention kernel in every layer, so no arm differs from another by kernel rounding (zeroing
z needs no other kernel). Tests run through `interp.effects.measure_arms` in left-padded
batches (`interp.generation`), one batch per condition, each row masking its own heads
(a `probes.retrieval_masks.Condition` is the `Mask` of each batch's tests: random draws
differ per test), so the tables equal a batch-of-one run; K = 0 is every arm's identity.
`positions="decode"` (default, as the reference code) masks the decode steps only, from
the step that yields the first answer token; the prompts' KV cache is then the same for
every condition, so it is built once per batch and each condition decodes from a copy.
`positions="all"` also masks the prefill (the cache is rebuilt under the mask for each
condition; slower).

Random controls draw K heads from those that are neither retrieval heads (score above the
threshold) nor among the top K, per test (`random_draw="per_test"`, paper) or once per seed
(`"per_seed"`), for `n_seeds` seeds; the curve reports each seed's accuracy, so the spread
over seeds is visible.

Effects: every K is compared with the unmasked baseline (K = 0, always run) on the same
tests through `interp.effects.compare`: top-K per test, and random-K as each test's mean
over seeds, each with a paired bootstrap interval of the accuracy difference. The summary
puts them on one row per K, in percent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from interp.config import Config, check_range
from interp.effects import EffectsConfig, Metric, compare, measure_arms
from interp.errors import ConfigError, InputError
from interp.generation import decode
from interp.heads import HeadSet, RowHeads
from interp.interventions.base import Intervention
from interp.models import Model
from interp.prefill import Prefilled, PrefixTree, prefill
from interp.results import Bundle, EffectTable, HeadScores, ItemTable, Provenance, hash_inputs
from interp.runs import WorkLog
from interp.work import Row, WorkFolder, open_log
from probes.niah import (
    SIMILAR,
    Answers,
    NeedleTest,
    NiahInputs,
    answer_match,
    answer_match_scores,
    batch_size_for,
    decoding,
    needle_items,
    rouge1_recall,
    rouge1_recall_scores,
    shared_prefixes,
)
from probes.retrieval_masks import Condition, Mask

ANALYZER = "retrieval-ablation"
METRICS: dict[str, Metric[Answers]] = {"match": answer_match_scores, "rouge1": rouge1_recall_scores}
KEY = ["needle", "length", "depth"]
RESPONSE = ("response", "recall", "match")  # what a test's decode under one condition gives


@dataclass(frozen=True, kw_only=True)
class AblationConfig(Config):
    """Parameters of the masking experiment.

    Attributes:
        ks: numbers of heads to mask (paper: 0, 2, 5, 10, 15, 20, 30, 50, 100). K = 0 (no
            mask) always runs: it is the baseline every K is paired with.
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
class AblationResult(Bundle):
    """What `run_ablation` returns; every table carries the run's provenance.

    Attributes:
        tests: one row per (test, condition): needle, length, depth, answer, condition
            ("none", "top" or "random"), k, seed, masked heads, response, recall, match.
        curve: one row per (condition, k, seed): accuracy (mean metric x 100).
        effects: one row per (condition, k > 0): the metric's paired effect against K = 0
            (`interp.effects.compare`, fractions, not percent).
        summary: one row per k, in percent: top_k and random_mean with their difference
            from the baseline and its interval, random median, min and max over seeds.
    """

    tests: ItemTable
    curve: ItemTable
    effects: EffectTable
    summary: ItemTable

    def summary_lines(self) -> list[str]:
        """The tests and conditions run, then the per-K summary and its warnings."""
        n_tests = self.tests.data.condition.eq("none").sum()
        head = f"{n_tests} tests x {len(self.curve.data)} conditions"
        return [head, *self.summary.console_lines("K={k}", float_format="{:.1f}".format)]

    def figures(self) -> dict[str, object]:
        """Accuracy against K, top-K and random heads masked."""
        from interp.figures import ablation_curve

        provenance = self.tests.provenance
        title = f"Masking retrieval heads ({provenance.model}, {provenance.config['masking']})"
        return {"ablation_curve": ablation_curve(self.curve.data, title)}


def masked(model: Model, heads: RowHeads, config: AblationConfig) -> AbstractContextManager[None]:
    """The context that masks `heads[row]` in each batch row (nothing where a set is empty)."""
    return Mask(heads, config.masking).applied(model)


def conditions(scores: HeadScores, config: AblationConfig) -> list[Condition]:
    """Every curve point, K = 0 (the unmasked baseline) first and always."""
    ranked = scores.ranked()
    retrieval = set(scores.above(config.threshold))
    out: list[Condition] = []
    for k in sorted({0, *config.ks}):
        if k > len(ranked):
            raise InputError(f"Cannot mask {k} heads: the model has {len(ranked)}.")
        top = HeadSet(ranked[:k])
        out.append(Condition("top", k, 0, top, (), config.masking, config.random_draw))
        if k == 0:
            continue
        pool = tuple(h for h in ranked[k:] if h not in retrieval)
        if len(pool) < k:
            raise InputError(f"Only {len(pool)} non-retrieval heads to draw {k} random ones.")
        out.extend(
            Condition("random", k, seed, top, pool, config.masking, config.random_draw)
            for seed in range(config.n_seeds)
        )
    return out


def ablate_tests(
    model: Model,
    tests: Sequence[NeedleTest],
    grid: Sequence[Condition],
    config: AblationConfig,
    batch_size: int,
    *,
    share_prefix: bool = True,
    log: WorkLog | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Row]:
    """Every test's rows, test by test: its greedy response under each condition of `grid`.

    Through `interp.effects.measure_arms`, K = 0 (`grid[0]`) being every condition's
    identity arm. Tests of similar prompt length run as one left-padded batch per condition,
    each row masked with its own heads (random draws differ per test); with `log`, batches
    it holds are skipped. With `positions="decode"` a batch's unmasked prompt cache is built
    once (with `share_prefix`, from one prefix tree over the tests to run) and every
    condition decodes from a copy of it.
    """
    tree: list[PrefixTree | None] = [None]
    cache: dict[tuple[object, ...], Prefilled] = {}  # the running batch's unmasked prefill

    def prepare(todo: list[NeedleTest]) -> None:
        tree[0] = shared_prefixes(model, todo) if share_prefix and todo else None

    def respond(batch: list[NeedleTest], mask: Intervention) -> list[Row]:
        if config.positions == "all":
            return masked_responses(model, batch, mask, config, None)
        key = tuple(tuple(t.key().values()) for t in batch)
        if key not in cache:  # the batch's first arm
            prompts = [t.input_ids for t in batch]
            cache.clear()
            cache[key] = tree[0].prefill(prompts) if tree[0] else prefill(model, prompts)
        return masked_responses(model, batch, mask, config, cache[key])

    measured = measure_arms(
        needle_items(tests),
        grid[1:] or grid[:1],  # K = 0 alone: its own identity
        respond,
        (),  # paired by `summarize`: random K is each test's mean over seeds
        EffectsConfig(),
        batch_size=batch_size,
        similar=SIMILAR,
        prepare=prepare,
        folder=log,
        progress=progress,
    )
    arms = measured.per_item.to_dict("records")  # setting-major: grid[1:] in order
    rows = []
    for index, test in enumerate(tests):
        for setting, condition in enumerate(grid):
            arm = "intervened" if setting else "baseline"
            measured_row = arms[max(setting - 1, 0) * len(tests) + index]
            rows.append(condition.row(test) | {f: measured_row[f"{arm}_{f}"] for f in RESPONSE})
    return rows


def masked_responses(
    model: Model,
    tests: Sequence[NeedleTest],
    mask: Intervention,
    config: AblationConfig,
    prompts: Prefilled | None,
) -> list[Row]:
    """Each test's greedy response under `mask` (one batch), its ROUGE-1 recall and match.

    Decoded from a copy of `prompts`, the tests' unmasked prompt cache; None: the prompts
    are prefilled under the mask (`positions="all"`).
    """
    with mask.applied(model):
        if prompts is None:
            prefilled = prefill(model, [t.input_ids for t in tests])
        else:
            prefilled = prompts.select(range(len(tests)))
        out = decode(model, prefilled, decoding(config.max_new_tokens))
    return [
        {
            "response": g.text,
            "recall": rouge1_recall(t.answer, g.text),
            "match": answer_match(t.answer, g.text),
        }
        for t, g in zip(tests, out, strict=True)
    ]


def ablation_provenance(
    model: Model,
    tests: Sequence[NeedleTest],
    scores: HeadScores,
    config: AblationConfig,
    effects: EffectsConfig,
) -> Provenance:
    """The provenance every table of an ablation run carries."""
    return Provenance(
        **model.provenance_fields(),
        analyzer=ANALYZER,
        config={
            **config.to_dict(),
            "scores_inputs_hash": scores.provenance.inputs_hash,
            "effects": effects.to_dict(),
        },
        inputs_hash=hash_inputs([[*t.key().values(), t.input_ids.tolist()] for t in tests]),
        n_inputs=len(tests),
    )


def run_ablation(
    model: Model,
    tests: Sequence[NeedleTest],
    scores: HeadScores,
    config: AblationConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    effects: EffectsConfig | None = None,
    batch_size: int | None = None,
    share_prefix: bool = True,
    folder: WorkFolder | None = None,
) -> AblationResult:
    """NIAH accuracy with no heads, the top-K heads and K random heads masked.

    Args:
        model: a loaded model.
        tests: NIAH tests, ideally with needles not used to compute `scores`.
        scores: per-head retrieval scores (`probes.retrieval.run(...).scores`).
        config: the K grid, seeds and masking mode.
        progress: called as progress(done, total) tests, before the work and after each
            batch.
        effects: bootstrap settings of the intervals against K = 0.
        batch_size: tests per forward, grouped by prompt length (default: what suits the
            device). The tables do not depend on it.
        share_prefix: with `positions="decode"`, prefill the unmasked prompts through one
            prefix tree over the tests to run (`probes.niah.shared_prefixes`), so the
            context they share is computed once.
        folder: record each finished test's rows there (`interp.work`); run again with
            the same folder to resume a stopped run. A folder of another run is refused.

    Example:
        >>> result = run_ablation(model, heldout_tests, scored.scores)  # doctest: +SKIP
        >>> result.summary.data  # doctest: +SKIP
    """
    config = config or AblationConfig()
    effects = effects or EffectsConfig()
    if not tests:
        raise InputError("No NIAH tests given for the ablation.")
    grid = conditions(scores, config)
    share = share_prefix and config.positions == "decode"
    size = batch_size_for(model, tests, config.max_new_tokens, share)
    size = size if batch_size is None else batch_size
    provenance = ablation_provenance(model, tests, scores, config, effects)
    log = open_log(folder, provenance)
    rows = ablate_tests(
        model, tests, grid, config, size, share_prefix=share, log=log, progress=progress
    )
    return summarize(pd.DataFrame(rows), config, provenance, effects)


def run_niah_ablation(
    model: Model,
    scores: HeadScores,
    lengths: Sequence[int],
    n_depths: int,
    config: AblationConfig | None = None,
    inputs: NiahInputs | None = None,
    effects: EffectsConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    folder: WorkFolder | None = None,
) -> AblationResult:
    """`interp ablate retrieval` in one call: build held-out tests (shipped needles:
    data/needles/heldout.jsonl) at `lengths` x `n_depths`, then `run_ablation` them."""
    config = config or AblationConfig()
    inputs = inputs or NiahInputs()
    tests = inputs.tests(model, "heldout.jsonl", lengths, n_depths, config.max_new_tokens)
    return run_ablation(
        model, tests, scores, config, progress, effects, inputs.batch_size, folder=folder
    )


def summarize(
    tests: pd.DataFrame,
    config: AblationConfig,
    provenance: Provenance,
    effects: EffectsConfig | None = None,
) -> AblationResult:
    """Curve, paired effects against K = 0, and summary from the per-test rows."""
    effects = effects or EffectsConfig()
    metric = METRICS[config.metric]
    scored = tests.assign(score=metric(Answers(tuple(tests.answer), tuple(tests.response))))
    curve = (
        scored.groupby(["condition", "k", "seed"], as_index=False)["score"]
        .mean()
        .rename(columns={"score": "accuracy"})
    )
    curve["accuracy"] *= 100
    baseline = scored[scored.condition == "none"].set_index(KEY)["score"].sort_index()
    if baseline.empty or baseline.index.has_duplicates:
        raise InputError("The ablation table needs exactly one unmasked (K = 0) row per test.")
    rows = []
    for (condition, k), group in scored[scored.condition != "none"].groupby(["condition", "k"]):
        arm = group.groupby(KEY)["score"].mean().reindex(baseline.index)  # random: seed mean
        if arm.isna().any():
            raise InputError(f"Condition {condition} K={k} lacks rows for some tests.")
        seeds = int(group.groupby(KEY).size().min()) if condition == "random" else None
        row = compare(baseline.to_numpy(), arm.to_numpy(), metric.__name__, effects, seeds=seeds)
        rows.append({"condition": condition, "k": int(k), **row})
    columns = ["condition", "k", *EffectTable.required, "warnings"]
    table = pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns)
    return AblationResult(
        ItemTable(tests.reset_index(drop=True), provenance),
        ItemTable(curve, provenance),
        EffectTable(table, provenance),
        ItemTable(_summary(curve, table), provenance),
    )


def _summary(curve: pd.DataFrame, effects: pd.DataFrame) -> pd.DataFrame:
    """One row per K in percent: both arms, their difference from K = 0 and its interval.

    `warnings` gathers both arms' caveats (`interp.effects.caveats`), each named by its arm.
    """
    rand = curve[curve.condition == "random"].groupby("k")["accuracy"]
    parts = [curve[curve.condition != "random"].set_index("k")["accuracy"].rename("top_k")]
    for condition, name in (("top", "top_k"), ("random", "random_mean")):
        arm = effects[effects.condition == condition].set_index("k")
        if condition == "random":
            parts.append((arm["intervened"] * 100).rename(name))
        parts.extend(
            (arm[c] * 100).rename(f"{name}_{c}") for c in ("difference", "ci_low", "ci_high")
        )
    parts += [
        rand.median().rename("random_median"),
        rand.min().rename("random_min"),
        rand.max().rename("random_max"),
        rand.size().rename("n_seeds"),
    ]
    flagged = effects[effects.warnings != ""]
    notes = (flagged.condition + ": " + flagged.warnings).groupby(flagged.k).agg("; ".join)
    summary = pd.concat(parts, axis=1).rename_axis("k").reset_index()
    return summary.assign(warnings=summary.k.map(notes).fillna(""))
