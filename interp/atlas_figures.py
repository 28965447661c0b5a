"""Figures of a head atlas: one layer x head grid per method, and the methods' relations.

An atlas is one per-head table (`layer`, `head`, `kv_group`, then each method's score columns,
intervals as `<column>_low`/`<column>_high`) and a relations table (`method_a`, `method_b`,
`spearman`, `jaccard`, `k`, `n`). The grids are `interp.figures.head_heatmap`s, so they share
the house style and paper presets; `write_atlas_figures` exports them through
`interp.figure_export` for papers. The interactive page is `interp.atlas_page`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from interp.errors import InputError
from interp.figure_export import PAPER, STATIC_FORMATS, export
from interp.figures import COLUMN_LABELS, head_heatmap, style
from interp.heads import HeadGeometry
from interp.results import HeadScores, Provenance

INDEX_COLUMNS = ("layer", "head", "kv_group", "label")
RELATION_COLUMNS = ("method_a", "method_b", "spearman", "jaccard", "k", "n")


def method_columns(heads: pd.DataFrame) -> list[str]:
    """The columns a grid can be coloured by: numeric or boolean scores, not their intervals.

    Raises:
        InputError: the table lacks `layer`/`head`, or has no score column.
    """
    missing = [c for c in ("layer", "head") if c not in heads.columns]
    if missing:
        raise InputError(f"The atlas table needs the columns {missing}; got {list(heads.columns)}.")
    bounds = {f"{c}_{side}" for c in heads.columns for side in ("low", "high")}
    columns = [
        c
        for c in heads.columns
        if c not in INDEX_COLUMNS
        and c not in bounds
        and (pd.api.types.is_numeric_dtype(heads[c]) or pd.api.types.is_bool_dtype(heads[c]))
    ]
    if not columns:
        raise InputError("The atlas table has no numeric score column to draw.")
    return columns


def atlas_label(column: str) -> str:
    """A human label for an atlas column: its analyzer's label when known ("sinks_score")."""
    for (analyzer, name), label in COLUMN_LABELS.items():
        if column == f"{analyzer}_{name}":
            return label
    return column.replace("_", " ")


def geometry_of_table(heads: pd.DataFrame) -> HeadGeometry:
    """The grid's layout (layers, heads, KV groups) read from the table.

    Only the layout fields are known here; the head and model widths are left at 0, which
    no figure reads.
    """
    n_heads = int(heads["head"].max()) + 1
    n_kv = int(heads["kv_group"].max()) + 1 if "kv_group" in heads else n_heads
    return HeadGeometry(
        n_layers=int(heads["layer"].max()) + 1,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        d_head=0,
        d_model=0,
    )


def atlas_heatmap(
    heads: pd.DataFrame,
    column: str,
    provenance: Provenance,
    *,
    title: str | None = None,
    paper: Literal["one-column", "two-column"] | None = None,
) -> go.Figure:
    """The layer x head grid of one atlas column, KV groups marked when heads share them."""
    table = heads.assign(
        label=[f"L{i}H{h}" for i, h in zip(heads["layer"], heads["head"], strict=True)],
        score=heads[column].astype(float),
    )
    geometry = geometry_of_table(heads)
    return head_heatmap(
        HeadScores(table, provenance),
        column="score",
        title=title,
        geometry=geometry,
        label=atlas_label(column),
        paper=paper,
        kv_groups=geometry.group_size > 1,
    )


def relations_figure(
    relations: pd.DataFrame, title: str = "Relations between methods"
) -> go.Figure:
    """Spearman rank correlation of every pair of methods; the top-k Jaccard overlap on hover.

    The matrix is symmetric; the diagonal (a method with itself) is left blank.

    Raises:
        InputError: the table lacks a column of `RELATION_COLUMNS`.
    """
    missing = [c for c in RELATION_COLUMNS if c not in relations.columns]
    if missing:
        raise InputError(f"The relations table needs the columns {missing}.")
    methods = list(dict.fromkeys([*relations["method_a"], *relations["method_b"]]))
    index = {m: i for i, m in enumerate(methods)}
    spearman = np.full((len(methods), len(methods)), np.nan)
    hover = np.full((len(methods), len(methods), 3), np.nan)  # jaccard, k, n
    for row in relations.itertuples():
        for a, b in ((row.method_a, row.method_b), (row.method_b, row.method_a)):
            spearman[index[a], index[b]] = row.spearman
            hover[index[a], index[b]] = (row.jaccard, row.k, row.n)
    labels = [atlas_label(m) for m in methods]
    figure = go.Figure(
        go.Heatmap(
            z=spearman,
            x=labels,
            y=labels,
            zmin=-1,
            zmax=1,
            zmid=0,
            colorscale="RdBu_r",
            customdata=hover,
            texttemplate="%{z:.2f}",
            colorbar={"title": {"text": "Spearman ρ", "side": "right"}},
            hovertemplate="%{y} vs %{x}<br>Spearman ρ %{z:.2f}<br>Jaccard of the top"
            " %{customdata[1]}: %{customdata[0]:.2f}<br>n = %{customdata[2]} heads<extra></extra>",
        )
    )
    side = max(420, 34 * len(methods) + 260)
    figure.update_layout(width=side + 80, height=side)
    figure.update_yaxes(autorange="reversed")
    return style(figure, title)


def write_atlas_figures(
    folder: str | Path,
    heads: pd.DataFrame,
    relations: pd.DataFrame,
    provenance: Provenance,
    formats: str | Sequence[str] = STATIC_FORMATS,
    paper: Literal["one-column", "two-column"] | None = None,
) -> list[Path]:
    """Write each method's grid (`grid_<column>`) and the relations figure (`relations`).

    HTML always, and `formats` when a Chromium exists (`interp.figure_export.export`); with
    `paper`, grids use that preset and PNGs are written at its 300 dpi.

    Returns the written paths.
    """
    figures = {
        f"grid_{column}": atlas_heatmap(heads, column, provenance, paper=paper)
        for column in method_columns(heads)
    }
    figures["relations"] = relations_figure(relations)
    scale = PAPER[paper].scale if paper else 1.0
    return export(figures, folder, formats, scale=scale)
