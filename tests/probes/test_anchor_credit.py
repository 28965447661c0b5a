"""Credit rules, the credit JSONL and the peak statistics, on hand-made token tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from interp.errors import ConfigError
from interp.results import Provenance, TokenScores
from probes import anchor_credit as credit
from probes.anchor_stats import PeakStatsConfig, peak_statistics

PROVENANCE = Provenance("m", "w", "anchors", {}, "h", 1)


def _table(traces: dict[str, dict[str, list]]) -> TokenScores:
    frames = []
    for index, (name, columns) in enumerate(traces.items()):
        n = len(columns["waad"])
        frames.append(
            pd.DataFrame(
                {
                    "example": index,
                    "trace": name,
                    "position": np.arange(5, 5 + n),
                    "token": ["x"] * n,
                    "token_id": np.arange(10, 10 + n),
                    **columns,
                }
            )
        )
    return TokenScores(pd.concat(frames, ignore_index=True), PROVENANCE)


# Trace "a": anchors at 3 and 5; Δ is given (median 0), WAAD varies by test.
WAAD = [0.0, 1.0, 1.0, 5.0, 5.0, 5.0]
DELTA = [1.0, 0.0, 4.0, 0.0, 0.0, np.nan]


def _trace_a(waad=WAAD) -> TokenScores:
    return _table(
        {
            "a": {
                "waad": waad,
                "delta_waad": DELTA,
                "fai": [0.1, 0.2, 0.1, 0.9, 0.1, 0.8],
                "is_preplan": [True, False, True, False, False, False],
                "is_anchor": [False, False, False, True, False, True],
                "entropy": [1.0] * 6,
            }
        }
    )


def test_global_and_local_rules() -> None:
    tokens = _trace_a()
    (glob,) = credit.credit_records(tokens, credit.CreditConfig(rule="global"))
    assert glob["gamma"] == [1.0, 1.0, 1.0, 1.5, 1.0, 1.5]
    (local,) = credit.credit_records(tokens, credit.CreditConfig(rule="local", gamma_amp=2.0))
    assert local["gamma"] == [2.0, 1.0, 2.0, 1.0, 1.0, 1.0]
    assert glob["token_ids"] == [10, 11, 12, 13, 14, 15] and glob["prompt_length"] == 5


def test_coupled_rule_moves_credit_from_dominated_anchors_to_their_intro() -> None:
    # WAAD at the anchors (1) is below its median (3): anchor 3 sees Δ 4 at u=2 (>= the
    # median 0) -> D, intro = argmax Δ over [0, 2] = 2; anchor 5 sees Δ[2..4] = 4, 0, 0 -> D,
    # intro 2 again.
    low = [3.0, 3.0, 3.0, 1.0, 5.0, 1.0]
    (record,) = credit.credit_records(_trace_a(low), credit.CreditConfig(alpha=0.25))
    assert record["roles"]["dominated"] == [0, 0, 0, 1, 0, 1]
    assert record["roles"]["intro"] == [0, 0, 1, 0, 0, 0]
    np.testing.assert_allclose(record["gamma"], [1, 1, 1.125, 1.375, 1, 1.375])
    # WAAD at the anchors (5) above its median (3): nothing is dominated, the global γ.
    (plain,) = credit.credit_records(_trace_a(), credit.CreditConfig())
    assert plain["roles"]["dominated"] == [0] * 6
    assert plain["gamma"] == [1.0, 1.0, 1.0, 1.5, 1.0, 1.5]


def test_credit_file_round_trip(tmp_path) -> None:
    path = credit.write_credit(tmp_path / "credit.jsonl", _trace_a(), credit.CreditConfig())
    (record,) = credit.read_credit(path)
    assert set(record) >= {"trace", "token_ids", "gamma", "roles", "rule", "parameters"}
    assert json.loads(path.read_text().splitlines()[0])["trace"] == "a"
    with pytest.raises(ConfigError):
        credit.CreditConfig(alpha=1.5)


def test_peak_statistics_find_planted_structure() -> None:
    rng = np.random.default_rng(0)
    traces = {}
    for name in "abcdefgh":
        n = 60
        preplan = np.zeros(n, bool)
        preplan[rng.choice(np.arange(0, n - 1), 12, replace=False)] = True
        anchor = np.roll(preplan, 1)  # every anchor right after a preplan token
        entropy = np.where(preplan, 2.0, 0.5)
        traces[name] = {
            "waad": rng.random(n),
            "delta_waad": np.where(preplan, 1.0 + rng.random(n), rng.random(n)),
            "fai": rng.random(n),
            "is_preplan": preplan,
            "is_anchor": anchor,
            "entropy": entropy,
        }
    config = PeakStatsConfig(n_seeds=5, waad_peaks="delta_waad", peak_fraction=0.2)
    table = peak_statistics(_table(traces), config).data
    follow, entropy = table.iloc[0], table.iloc[1]
    assert follow.statistic == "fai_peak_at_or_after_waad_peak" and follow.intervened == 1.0
    assert follow.baseline < 0.5 and follow.ci_low > 0
    assert entropy.intervened == 2.0 and entropy.baseline < 1.0 and entropy.ci_low > 0


def test_fai_peak_at_or_after_a_waad_peak_by_hand() -> None:
    """Ten tokens; the top 0.25 of WAAD (round(2.5) = 3 tokens) are 0, 3 and 7.

    Anchors 1 (after 0), 3 (at 3), 4 (after 3), 9 (neither). Paper (coincide or follow):
    3 of 4 = 0.75; "follow": 1 and 4, 2 of 4 = 0.5. Entropy at 0, 3, 7: (3 + 6 + 9) / 3 = 6.
    With ΔWAAD peaks (top 0.2 of 9 defined values, round(1.8) = 2: tokens 5 and 8), follow:
    anchor 9 only, 1 of 4 = 0.25; entropy there 0.
    """
    anchor = np.zeros(10, bool)
    anchor[[1, 3, 4, 9]] = True
    columns = {
        "waad": [9.0, 0, 0, 8, 0, 0, 0, 7, 0, 0],
        "delta_waad": [0.0, 0, 0, 0, 0, 5, 0, 0, 4, np.nan],
        "fai": np.zeros(10),
        "is_preplan": np.zeros(10, bool),
        "is_anchor": anchor,
        "entropy": [3.0, 0, 0, 6, 0, 0, 0, 9, 0, 0],
    }
    table = _table({"a": columns, "b": columns})

    def peaks(**options: object) -> pd.DataFrame:
        return peak_statistics(table, PeakStatsConfig(n_seeds=2, **options)).data

    paper = peaks()
    assert paper.statistic.tolist() == ["fai_peak_at_or_after_waad_peak", "entropy_at_waad_peaks"]
    assert paper.intervened.tolist() == [0.75, 6.0]
    assert peaks(rule="follow").intervened.tolist() == [0.5, 6.0]
    delta = peaks(rule="follow", waad_peaks="delta_waad", peak_fraction=0.2)
    assert delta.intervened.tolist() == [0.25, 0.0]
    with pytest.raises(ConfigError):
        PeakStatsConfig(rule="before")  # type: ignore[arg-type]
