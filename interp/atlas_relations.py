"""Relations between the atlas's methods: rank correlation, top-k overlap, shared flags.

Over the atlas's per-head table (`interp.atlas`), a *score column* is a numeric column of a
method (not a boolean, not an interval bound `<col>_low`/`<col>_high`) that has a value for
every head: a column defined on a few heads only (the masking effect of the top retrieval
heads) cannot be ranked against the others. For every pair of score columns, `relations`
gives Spearman's rank correlation over all heads and the Jaccard overlap |A ∩ B| / |A ∪ B|
of their top-k heads; `flagged` lists the heads in the top k of some score column of at
least two methods, with how many methods and which columns flag them. The top k of a
column are its k highest values, ties broken by (layer, head), so the sets are stable;
heads at the column's minimum are never among them (a column that is 0 on all but three
heads has a top set of three, a constant column an empty one, whose Jaccard is NaN).

Everything here is a pure function of the table: no model, a few milliseconds.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

# method_a/method_b name the two score columns ("retrieval_score"); k: the top-k size; n:
# the heads compared; shared_top: heads in both top-k sets; same_method: one method's columns.
RELATION_COLUMNS = (
    "method_a",
    "method_b",
    "spearman",
    "jaccard",
    "k",
    "n",
    "shared_top",
    "same_method",
)


def score_columns(heads: pd.DataFrame, methods: Sequence[str]) -> dict[str, str]:
    """Each score column of `heads` (module doc) -> its method, in column order.

    A column belongs to the method whose name prefixes it (`retrieval_score`: retrieval).
    """
    found = {}
    for column in heads.columns:
        owner = next((m for m in methods if column.startswith(f"{m}_")), None)
        values = heads[column]
        if (
            owner is None
            or column.endswith(("_low", "_high"))
            or pd.api.types.is_bool_dtype(values)
            or not pd.api.types.is_numeric_dtype(values)
            or values.isna().any()
        ):
            continue
        found[column] = owner
    return found


def ranked(heads: pd.DataFrame, column: str, k: int) -> pd.DataFrame:
    """The rows of the k highest values of `column` above its minimum, highest first, ties
    by (layer, head)."""
    above = heads[heads[column] > heads[column].min()]
    order = above.sort_values([column, "layer", "head"], ascending=[False, True, True])
    return order.head(k)


def top_heads(heads: pd.DataFrame, column: str, k: int) -> set[tuple[int, int]]:
    """The (layer, head) of `ranked`'s rows."""
    top = ranked(heads, column, k)
    return set(zip(top.layer.tolist(), top["head"].tolist(), strict=True))


def relations(heads: pd.DataFrame, methods: Sequence[str], k: int) -> pd.DataFrame:
    """One row per pair of score columns (`RELATION_COLUMNS`): Spearman's rho over all
    heads and the Jaccard overlap of their top-k heads; rho is NaN where a column is
    constant."""
    columns = score_columns(heads, methods)
    tops = {column: top_heads(heads, column, k) for column in columns}
    rows = []
    for a, b in itertools.combinations(columns, 2):
        constant = heads[a].nunique() < 2 or heads[b].nunique() < 2
        rho = np.nan if constant else float(spearmanr(heads[a], heads[b]).statistic)
        shared = len(tops[a] & tops[b])
        union = len(tops[a] | tops[b])
        same = columns[a] == columns[b]
        jaccard = shared / union if union else np.nan
        rows.append((a, b, rho, jaccard, k, len(heads), shared, same))
    return pd.DataFrame(rows, columns=list(RELATION_COLUMNS)).astype(
        {
            "spearman": float,
            "jaccard": float,
            "k": int,
            "n": int,
            "shared_top": int,
            "same_method": bool,
        }
    )


def flagged(heads: pd.DataFrame, methods: Sequence[str], k: int) -> pd.DataFrame:
    """The heads in the top k of a score column of at least two methods, most methods first:
    layer, head, label, n_methods, methods and columns (lists, in column order)."""
    by_head: dict[tuple[int, int], list[str]] = {}
    columns = score_columns(heads, methods)
    for column in columns:
        for head in top_heads(heads, column, k):
            by_head.setdefault(head, []).append(column)
    rows = []
    for (layer, head), flagging in by_head.items():
        owners = list(dict.fromkeys(columns[c] for c in flagging))
        if len(owners) >= 2:
            rows.append((layer, head, f"L{layer}H{head}", len(owners), owners, flagging))
    table = pd.DataFrame(
        rows, columns=["layer", "head", "label", "n_methods", "methods", "columns"]
    ).astype({"layer": "int64", "head": "int64", "n_methods": "int64"})
    order = table.sort_values(["n_methods", "layer", "head"], ascending=[False, True, True])
    return order.reset_index(drop=True)
