"""The paper's analysis statistics on a per-token table, peaks against random tokens.

Li et al. (arXiv 2510.13554, §4) report that a FAI peak tends to follow a WAAD peak (52.53%
of FAI peaks vs 36.87% of random tokens, Qwen3-4B-Base on GSM8K) and that tokens at WAAD
peaks have higher predictive entropy (0.3608 vs 0.2386 at random tokens). The paper does not
say how peaks are detected; here [I] a WAAD peak is a preplan token (top-q ΔWAAD) and a FAI
peak an anchor (top-q FAI) of `probes.anchors`, and "follows" means a preplan token lies
among the `lookback` tokens before the anchor (default 1, the token just before).

Each statistic is a per-trace pair: the peaks' value and the same value at as many random
response tokens (drawn uniformly without replacement, averaged over `n_seeds` draws). The
pairs go through `interp.effects.compare`, so the table has both means, the paired
difference (peaks − random) and bootstrap intervals. Entropy is that of the distribution
the token was drawn from (`entropy` column, nats).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from interp.config import Config, check_range
from interp.effects import EffectsConfig, compare
from interp.errors import InputError
from interp.results import EffectTable, Provenance, TokenScores


@dataclass(frozen=True, kw_only=True)
class PeakStatsConfig(Config):
    """Attributes:
    lookback: a FAI peak "follows" a WAAD peak within this many tokens (1: the token
        just before; [I], the paper does not say).
    n_seeds: random draws per trace for the random arm.
    seed: seed of the first draw.
    """

    lookback: int = 1
    n_seeds: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "lookback", 1)
        check_range(self, "n_seeds", 1)
        check_range(self, "seed", 0)


def _follows(preplan: np.ndarray, chosen: np.ndarray, lookback: int) -> float:
    """Share of `chosen` response indices with a preplan token among the `lookback` before."""
    hits = [preplan[max(0, i - lookback) : i].any() for i in chosen]
    return float(np.mean(hits)) if hits else float("nan")


def _per_trace(trace: pd.DataFrame, config: PeakStatsConfig) -> dict[str, float]:
    preplan = trace.is_preplan.to_numpy(bool)
    anchors = np.flatnonzero(trace.is_anchor.to_numpy(bool))
    entropy = trace.entropy.to_numpy(float)
    peaks = np.flatnonzero(preplan)
    n = len(trace)
    follow_random, entropy_random = [], []
    for seed in range(config.seed, config.seed + config.n_seeds):
        rng = np.random.default_rng([seed, n])
        follow_random.append(
            _follows(preplan, rng.choice(n, len(anchors), replace=False), config.lookback)
        )
        entropy_random.append(float(entropy[rng.choice(n, len(peaks), replace=False)].mean()))
    return {
        "follow_peaks": _follows(preplan, anchors, config.lookback),
        "follow_random": float(np.mean(follow_random)),
        "entropy_peaks": float(entropy[peaks].mean()),
        "entropy_random": float(np.mean(entropy_random)),
    }


def why_no_statistics(tokens: TokenScores, h_lo: int) -> str | None:
    """Why the statistics are empty, or None when a trace has both kinds of peak.

    A run can legitimately find none (every response ended before it was longer than
    `h_lo`, FAI's nearest query offset); it then still writes its tables and says this.
    """
    data = tokens.data
    flags = data.groupby("trace", sort=False)[["is_preplan", "is_anchor"]].any()
    if bool((flags.is_preplan & flags.is_anchor).any()):
        return None
    longest = int(data.groupby("trace", sort=False).size().max()) if len(data) else 0
    return (
        f"no trace has both preplan and anchor tokens: the longest response has {longest}"
        f" tokens, and an anchor needs more than h_lo={h_lo} (FAI reads queries h_lo tokens"
        " later)"
    )


def peak_statistics(
    tokens: TokenScores,
    config: PeakStatsConfig | None = None,
    effects: EffectsConfig | None = None,
) -> EffectTable:
    """Both statistics with intervals, one row each (baseline = random, intervened = peaks).

    Raises:
        InputError: no trace has both preplan and anchor tokens.
    """
    config = config or PeakStatsConfig()
    effects = effects or EffectsConfig()
    per_trace = pd.DataFrame(
        [_per_trace(trace, config) for _, trace in tokens.data.groupby("trace", sort=False)]
    ).dropna()
    if per_trace.empty:
        raise InputError("No trace has preplan and anchor tokens to compare with random ones.")
    rows = [
        {
            "statistic": "fai_peak_after_waad_peak",
            **compare(per_trace.follow_random, per_trace.follow_peaks, "share", effects),
        },
        {
            "statistic": "entropy_at_waad_peaks",
            **compare(per_trace.entropy_random, per_trace.entropy_peaks, "entropy_nats", effects),
        },
    ]
    base = tokens.provenance
    provenance = Provenance(
        model=base.model,
        weights_hash=base.weights_hash,
        dtype=base.dtype,
        placement=base.placement,
        analyzer="anchors.peak_statistics",
        config={**base.config, **config.to_dict(), **effects.to_dict()},
        inputs_hash=base.inputs_hash,
        n_inputs=base.n_inputs,
    )
    return EffectTable(pd.DataFrame(rows), provenance)
