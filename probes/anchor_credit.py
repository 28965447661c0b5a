"""Per-token credit weights γ from the preplan/anchor table, as JSONL an RL trainer reads.

Li et al. (arXiv 2510.13554) scale each response token's advantage by γ_t:

* `rule="global"`: γ_t = 1 + (γ_amp − 1)·1[t ∈ T_glob] (anchors, top-q FAI);
* `rule="local"`: the same with T_loc (preplan tokens, top-q ΔWAAD);
* `rule="coupled"`: an anchor t is *locally dominated* (t ∈ D) iff WAAD_t ≤ τ_waad and
  max_{u∈[t−k, t−1]} Δ_u ≥ τ_Δ; then γ_t = 1 + (γ_amp − 1)[1(t ∈ T_glob \\ D)
  + (1 − α)·1(t ∈ D) + α·1(t ∈ I(D))], where I(D) holds each dominated anchor's
  introductory token intro(s).

γ_amp = 1.5 is the paper's. The coupled rule's τ_waad, τ_Δ, α, k and intro(·) are not
published; the defaults are this toolkit's placeholders, named options, not the paper's:
per-response medians of WAAD and Δ, α = 0.5, k = 3, intro(s) = argmax_{u∈[s−k, s−1]} Δ_u
(positions before the response start are skipped).

The JSONL file holds one record per trace (schema in docs/methods.md §9): `trace`,
`prompt_length`, `token_ids` (response), `gamma`, `roles` (per-token 0/1 lists: anchor,
preplan, dominated, intro), `rule` and the parameters. Memory: one trace's arrays.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from interp.config import Config, check_range
from interp.errors import InputError
from interp.results import TokenScores


@dataclass(frozen=True, kw_only=True)
class CreditConfig(Config):
    """Which credit rule, and its parameters (see the module doc for which are the paper's).

    Attributes:
        rule: "coupled" (the paper's full method), "global" (anchors) or "local" (preplan).
        gamma_amp: amplification of credited tokens (paper: 1.5).
        alpha: coupled rule's split between a dominated anchor and its intro (placeholder 0.5).
        k: coupled rule's look-back in tokens, 1..3 in the paper (placeholder 3).
        tau: "median" (placeholder: per-response medians of WAAD and Δ).
    """

    rule: Literal["coupled", "global", "local"] = "coupled"
    gamma_amp: float = 1.5
    alpha: float = 0.5
    k: int = 3
    tau: Literal["median"] = "median"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "gamma_amp", 0.0)
        check_range(self, "alpha", 0.0, 1.0)
        check_range(self, "k", 1)


def roles(trace: pd.DataFrame, config: CreditConfig) -> dict[str, np.ndarray]:
    """Per-token 0/1 roles of one trace's rows (in response order): anchor, preplan,
    dominated (anchors in D), intro (I(D))."""
    waad = trace.waad.to_numpy(float)
    delta = trace.delta_waad.to_numpy(float)
    anchor = trace.is_anchor.to_numpy(bool)
    n = len(trace)
    tau_waad, tau_delta = np.nanmedian(waad), np.nanmedian(delta)
    dominated = np.zeros(n, dtype=bool)
    intro = np.zeros(n, dtype=bool)
    for t in np.flatnonzero(anchor):
        window = np.arange(max(0, t - config.k), t)
        before = delta[window]
        if not len(window) or not np.isfinite(before).any():
            continue
        if waad[t] <= tau_waad and np.nanmax(before) >= tau_delta:
            dominated[t] = True
            intro[window[int(np.nanargmax(before))]] = True
    return {
        "anchor": anchor.astype(int),
        "preplan": trace.is_preplan.to_numpy(bool).astype(int),
        "dominated": dominated.astype(int),
        "intro": intro.astype(int),
    }


def gamma(role: dict[str, np.ndarray], config: CreditConfig) -> np.ndarray:
    """γ per token from its roles, by `config.rule`."""
    lift = config.gamma_amp - 1.0
    if config.rule == "global":
        return 1.0 + lift * role["anchor"]
    if config.rule == "local":
        return 1.0 + lift * role["preplan"]
    undominated = role["anchor"] * (1 - role["dominated"])
    weight = undominated + (1 - config.alpha) * role["dominated"] + config.alpha * role["intro"]
    return 1.0 + lift * weight


def credit_records(tokens: TokenScores, config: CreditConfig) -> list[dict[str, Any]]:
    """One JSON-ready record per trace of the per-token table (see the module doc)."""
    table = tokens.data
    records = []
    for name, trace in table.groupby("trace", sort=False):
        trace = trace.sort_values("position")
        role = roles(trace, config)
        records.append(
            {
                "trace": str(name),
                "prompt_length": int(trace.position.iloc[0]),
                "token_ids": trace.token_id.astype(int).tolist(),
                "gamma": [float(g) for g in gamma(role, config)],
                "roles": {key: value.tolist() for key, value in role.items()},
                "rule": config.rule,
                "parameters": config.to_dict(),
            }
        )
    return records


def write_credit(path: str | Path, tokens: TokenScores, config: CreditConfig) -> Path:
    """Write the credit JSONL (one record per trace); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r, ensure_ascii=False) for r in credit_records(tokens, config)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_credit(path: str | Path) -> list[dict[str, Any]]:
    """Read a credit JSONL back; InputError if a record lacks a field or lengths differ."""
    records = []
    for number, line in enumerate(Path(path).read_text("utf-8").splitlines(), start=1):
        record = json.loads(line)
        fields = ("trace", "token_ids", "gamma", "roles")
        missing = [f for f in fields if f not in record]
        if missing or len(record["gamma"]) != len(record["token_ids"]):
            raise InputError(
                f"{path}:{number}: not a credit record (fields {fields}, equal lengths)."
            )
        records.append(record)
    return records
