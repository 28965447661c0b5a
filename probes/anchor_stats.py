"""The paper's analysis statistics on a per-token table, peaks against random tokens.

Li et al. (arXiv 2510.13554, §4, Table 2) report that a FAI peak coincides with or
immediately follows a WAAD peak (52.53% of FAI peaks vs 36.87% of random tokens,
Qwen3-4B-Base on GSM8K) and that tokens at WAAD peaks have higher predictive entropy (0.3608
vs 0.2386 at random tokens). A FAI peak is an anchor (top-q FAI) of `probes.anchors`. The
paper does not say how WAAD peaks are detected, and the choice moves the statistic, so it is
explicit: `waad_peaks="waad"` (default [I]) takes each response's top `peak_fraction` (0.25)
of WAAD, a share the paper's random baseline implies (about 20-25% of tokens are peaks);
`"delta_waad"` the top `peak_fraction` of ΔWAAD (with 0.4: the preplan tokens, the paper's RL
selector). `rule="coincide_or_follow"` (paper) counts an anchor when a WAAD peak lies at it
or among the `lookback` tokens before it; `"follow"` (the toolkit's earlier rule) only
before it. `EARLIER` is the earlier definition: follow, top 0.4 of ΔWAAD.

Each statistic is a per-trace pair: the peaks' value and the same value at as many random
response tokens (drawn uniformly without replacement, averaged over `n_seeds` draws). The
pairs go through `interp.effects.compare`, so the table has both means, the paired
difference (peaks − random) and bootstrap intervals. Entropy is that of the distribution
the token was drawn from (`entropy` column, nats).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from interp.config import Config, check_range
from interp.effects import EffectsConfig, compare
from interp.errors import InputError
from interp.results import EffectTable, Provenance, TokenScores
from probes.anchors import top_q


@dataclass(frozen=True, kw_only=True)
class PeakStatsConfig(Config):
    """Attributes:
    rule: "coincide_or_follow" (paper): a WAAD peak at the anchor or among the `lookback`
        tokens before it; "follow": only before it (earlier toolkit rule).
    waad_peaks: "waad": top `peak_fraction` of WAAD per response [I]; "delta_waad": of
        ΔWAAD (0.4: the preplan tokens).
    peak_fraction: share of each response's tokens that are WAAD peaks.
    lookback: tokens before the anchor that count (1: the token just before, "immediately").
    n_seeds: random draws per trace for the random arm.
    seed: seed of the first draw.
    """

    rule: Literal["coincide_or_follow", "follow"] = "coincide_or_follow"
    waad_peaks: Literal["waad", "delta_waad"] = "waad"
    peak_fraction: float = 0.25
    lookback: int = 1
    n_seeds: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "peak_fraction", 0.0, 1.0, strict_low=True)
        check_range(self, "lookback", 1)
        check_range(self, "n_seeds", 1)
        check_range(self, "seed", 0)


EARLIER: dict[str, Any] = {"rule": "follow", "waad_peaks": "delta_waad", "peak_fraction": 0.4}


def _follows(peak: np.ndarray, chosen: np.ndarray, config: PeakStatsConfig) -> float:
    """Share of `chosen` response indices with a WAAD peak in the rule's window."""
    last = 1 if config.rule == "coincide_or_follow" else 0  # the anchor itself counts
    hits = [peak[max(0, i - config.lookback) : i + last].any() for i in chosen]
    return float(np.mean(hits)) if hits else float("nan")


def waad_peaks(trace: pd.DataFrame, config: PeakStatsConfig) -> np.ndarray:
    """Boolean mask of a response's WAAD peaks under `config` (module docstring)."""
    column = "waad" if config.waad_peaks == "waad" else "delta_waad"
    return top_q(trace[column].to_numpy(float), config.peak_fraction)


def _per_trace(trace: pd.DataFrame, config: PeakStatsConfig) -> dict[str, float]:
    peak = waad_peaks(trace, config)
    anchors = np.flatnonzero(trace.is_anchor.to_numpy(bool))
    entropy = trace.entropy.to_numpy(float)
    peaks = np.flatnonzero(peak)
    n = len(trace)
    follow_random, entropy_random = [], []
    for seed in range(config.seed, config.seed + config.n_seeds):
        rng = np.random.default_rng([seed, n])
        follow_random.append(_follows(peak, rng.choice(n, len(anchors), replace=False), config))
        entropy_random.append(float(entropy[rng.choice(n, len(peaks), replace=False)].mean()))
    return {
        "follow_peaks": _follows(peak, anchors, config),
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
        InputError: no trace has both WAAD peaks and anchor tokens.
    """
    config = config or PeakStatsConfig()
    effects = effects or EffectsConfig()
    per_trace = pd.DataFrame(
        [_per_trace(trace, config) for _, trace in tokens.data.groupby("trace", sort=False)]
    ).dropna()
    if per_trace.empty:
        raise InputError("No trace has WAAD peaks and anchors to compare with random ones.")
    where = "at_or_after" if config.rule == "coincide_or_follow" else "after"
    definition = f"{config.rule}, top {config.peak_fraction:g} of {config.waad_peaks}"
    rows = [
        {
            "statistic": f"fai_peak_{where}_waad_peak",
            "definition": definition,
            **compare(per_trace.follow_random, per_trace.follow_peaks, "share", effects),
        },
        {
            "statistic": "entropy_at_waad_peaks",
            "definition": definition,
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
