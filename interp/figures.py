"""Figures from results, with one house style.

Every figure is built from a result table (never the other way round); `interp.figure_export`
writes them (HTML, and PNG/SVG/PDF for papers). Sizes, paper presets and the notebook
renderer: docs/methods.md §7.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from interp.errors import ConfigError, did_you_mean
from interp.figure_export import PAPER
from interp.heads import HeadGeometry
from interp.results import EffectTable, HeadScores

FONT = {"family": "Helvetica, Arial, sans-serif", "size": 13}
COLORSCALE = "Viridis"


def style(figure: go.Figure, title: str) -> go.Figure:
    """Apply the house style: white background, one font, a title, tight margins."""
    figure.update_layout(
        template="simple_white",
        title={"text": title, "x": 0.02},
        font=FONT,
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
    )
    return figure


# Colour-bar labels of the columns the toolkit's analyzers write, by (analyzer, column).
COLUMN_LABELS = {
    ("sinks", "score"): "attention share on sinks",
    ("sinks", "first_token_share"): "attention share on token 0",
    ("sinks", "hidden_sink_share"): "attention share on hidden sinks",
    ("sinks", "n_sinks"): "sinks per prompt",
    ("sinks", "first_token_dominant"): "share of prompts with token 0 top",
    ("retrieval", "score"): "retrieval score",
    ("retrieval", "activation"): "activation frequency",
    ("retrieval", "retrieval_head"): "retrieval head",
    ("act_search", "score"): "calibration gain",
    ("act_search", "metric_value"): "calibration metric with ACT",
    ("act_search", "selected"): "selected",
}


def column_label(analyzer: str, column: str) -> str:
    """A human label for a result column: the known ones', else the name without underscores."""
    return COLUMN_LABELS.get((analyzer, column), column.replace("_", " "))


def head_heatmap(
    scores: HeadScores,
    column: str = "score",
    title: str | None = None,
    geometry: HeadGeometry | None = None,
    *,
    label: str | None = None,
    zmin: float | None = None,
    zmax: float | None = None,
    width: int | None = None,
    height: int | None = None,
    font_size: float | None = None,
    paper: Literal["one-column", "two-column"] | None = None,
    kv_groups: bool = False,
) -> go.Figure:
    """Layer x head heatmap of one column of a HeadScores (mean over examples).

    Args:
        scores: the result to draw.
        column: the column to colour by.
        title: figure title (default: analyzer, column label and model).
        geometry: the model's head geometry; needed for `kv_groups`, and to draw heads the
            table lacks as blanks.
        label: colour-bar title (default: a human label for known columns, see
            `column_label`).
        zmin, zmax: colour range (default: the data's range). Fix it to compare figures.
        width, height: size in CSS pixels (default: from the number of layers and heads,
            or from `paper`).
        font_size: font size in CSS pixels (default 13, or from `paper`).
        paper: "one-column" (3.25 in, 8 pt) or "two-column" (6.75 in, 9 pt), see `PAPER`;
            export PNGs with `scale=PAPER[paper].scale` for 300 dpi.
        kv_groups: draw a separator between groups of query heads that share a KV head.

    Raises:
        ConfigError: `kv_groups` without a geometry, or an unknown `paper`.

    Example:
        >>> figure = head_heatmap(result.heads, "hidden_sink_share", paper="one-column",
        ...                       geometry=model.geometry, kv_groups=True)  # doctest: +SKIP
    """
    if paper is not None and paper not in PAPER:
        raise ConfigError(f"Unknown paper size {paper!r}." + did_you_mean(paper, PAPER))
    if kv_groups and geometry is None:
        raise ConfigError("head_heatmap(kv_groups=True) needs the model's geometry.")
    analyzer = scores.provenance.analyzer
    label = label or column_label(analyzer, column)
    matrix = scores.matrix(geometry, column=column)
    n_layers, n_heads = matrix.shape
    labels = np.array([[f"L{i}H{h}" for h in range(n_heads)] for i in range(n_layers)])
    figure = go.Figure(
        go.Heatmap(
            z=matrix,
            x=list(range(n_heads)),
            y=list(range(n_layers)),
            zmin=zmin,
            zmax=zmax,
            customdata=labels,
            colorscale=COLORSCALE,
            colorbar={"title": {"text": label, "side": "right"}},
            hovertemplate="%{customdata}<br>" + label + ": %{z:.3f}<extra></extra>",
        )
    )
    figure.update_xaxes(title="head", dtick=1)
    figure.update_yaxes(title="layer", autorange="reversed")
    if kv_groups:
        _mark_kv_groups(figure, geometry, n_layers)  # type: ignore[arg-type]
    size = PAPER[paper] if paper else None
    default_width = size.width_px if size else max(420, 40 * n_heads + 200)
    default_height = (
        round(size.width_px * min(1.5, max(0.6, n_layers / (2 * n_heads))))
        if size
        else max(320, 18 * n_layers + 120)
    )
    figure.update_layout(width=width or default_width, height=height or default_height)
    default = f"{analyzer}: {label} ({scores.provenance.model})"
    style(figure, default if title is None else title)
    if size:
        figure.update_layout(margin={"l": 45, "r": 10, "t": 30 if title != "" else 10, "b": 35})
        figure.update_traces(colorbar_thickness=12)
    if font_size or size:
        figure.update_layout(font={"size": font_size or size.font_px})  # type: ignore[union-attr]
    return figure


def _mark_kv_groups(figure: go.Figure, geometry: HeadGeometry, n_layers: int) -> None:
    """Thin white lines between groups of query heads that read the same KV head."""
    group = geometry.group_size
    for boundary in range(group, geometry.n_heads, group):
        figure.add_shape(
            type="line",
            x0=boundary - 0.5,
            x1=boundary - 0.5,
            y0=-0.5,
            y1=n_layers - 0.5,
            line={"color": "white", "width": 1.5},
        )


def effects_bars(effects: EffectTable, title: str | None = None) -> go.Figure:
    """Baseline vs intervened accuracy per task, with bootstrap intervals as error bars.

    The hover text gives the difference and its paired interval, which is narrower than
    the two arms' intervals suggest because both arms score the same items.
    """
    table = effects.data
    figure = go.Figure()
    for arm, colour in (("baseline", "#7f7f7f"), ("intervened", "#1f77b4")):
        figure.add_bar(
            name=arm,
            x=table["task"],
            y=table[arm],
            marker_color=colour,
            error_y={
                "type": "data",
                "symmetric": False,
                "array": table[f"{arm}_high"] - table[arm],
                "arrayminus": table[arm] - table[f"{arm}_low"],
            },
            customdata=np.stack(
                [table["difference"], table["ci_low"], table["ci_high"], table["n"]], axis=-1
            ),
            hovertemplate="%{x}: %{y:.3f}<br>difference %{customdata[0]:+.3f}"
            " [%{customdata[1]:+.3f}, %{customdata[2]:+.3f}], n=%{customdata[3]}<extra></extra>",
        )
    figure.update_layout(barmode="group", height=380, width=max(420, 110 * len(table) + 200))
    figure.update_yaxes(title="accuracy", range=[0, 1.05])
    figure.update_xaxes(title="task")
    default = f"Effect of the intervention ({effects.provenance.model})"
    return style(figure, title or default)


def ablation_curve(curve: pd.DataFrame, title: str) -> go.Figure:
    """Accuracy vs number of masked heads: top-K heads and K random heads (every seed).

    Args:
        curve: one row per (condition, k, seed) with `accuracy`; condition is "none" (k=0),
            "top" or "random".
        title: the figure title.
    """
    figure = go.Figure()
    top = curve[curve.condition != "random"].sort_values("k")
    rand = curve[curve.condition == "random"]
    baseline = curve[curve.condition == "none"]
    if not rand.empty:
        stats = rand.groupby("k")["accuracy"].agg(["median", "min", "max"]).reset_index()
        stats = pd.concat(
            [
                baseline.assign(
                    median=baseline.accuracy, min=baseline.accuracy, max=baseline.accuracy
                )[["k", "median", "min", "max"]],
                stats,
            ]
        ).sort_values("k")
        figure.add_scatter(
            x=[*stats.k, *stats.k[::-1]],
            y=[*stats["max"], *stats["min"][::-1]],
            fill="toself",
            fillcolor="rgba(99, 110, 250, 0.15)",
            line={"width": 0},
            name="random: min-max over seeds",
            hoverinfo="skip",
        )
        figure.add_scatter(
            x=rand.k,
            y=rand.accuracy,
            mode="markers",
            marker={"size": 5, "opacity": 0.5},
            name="random: one seed",
            marker_color="rgb(99, 110, 250)",
        )
        figure.add_scatter(
            x=stats.k,
            y=stats["median"],
            mode="lines+markers",
            name="random heads (median)",
            line={"color": "rgb(99, 110, 250)"},
        )
    figure.add_scatter(
        x=top.k,
        y=top.accuracy,
        mode="lines+markers",
        name="top-K retrieval heads",
        line={"color": "rgb(239, 85, 59)"},
    )
    figure.update_xaxes(title="heads masked (K)")
    figure.update_yaxes(title="NIAH accuracy (%)", range=[0, 105])
    figure.update_layout(width=640, height=420)
    return style(figure, title)


def circuit_heatmaps(
    scores: Mapping[str, HeadScores],
    circuits: Mapping[str, Sequence[str]],
    title: str,
    column: str = "score",
    label: str = "score",
) -> go.Figure:
    """Side-by-side layer x head maps of several tasks' head scores, circuits marked.

    One panel per task on a shared, symmetric colour range (scores of either sign, such as
    patching effects, compare across panels). Heads in a task's circuit get an open square;
    heads in every task's circuit (the shared ones) a filled dot inside it.

    Args:
        scores: task name -> its per-head scores (e.g. path patching to the logits).
        circuits: task name -> head labels of its circuit ("L12H3"); same keys as `scores`.
        title: the figure title.
        column: the column to colour by.
        label: colour-bar title.

    Raises:
        ConfigError: the two mappings name different tasks, or there are none.
    """
    if not scores or list(scores) != list(circuits):
        raise ConfigError(
            f"circuit_heatmaps needs the same tasks in scores and circuits, got {list(scores)}"
            f" and {list(circuits)}."
        )
    from plotly.subplots import make_subplots

    from interp.heads import HeadSet

    matrices = {task: table.matrix(column=column) for task, table in scores.items()}
    bound = max(float(np.nanmax(np.abs(m))) for m in matrices.values()) or 1.0
    shared = set.intersection(*(set(c) for c in circuits.values()))
    figure = make_subplots(rows=1, cols=len(scores), subplot_titles=list(scores), shared_yaxes=True)
    for col, (task, matrix) in enumerate(matrices.items(), start=1):
        n_layers, n_heads = matrix.shape
        names = np.array([[f"L{i}H{h}" for h in range(n_heads)] for i in range(n_layers)])
        figure.add_trace(
            go.Heatmap(
                z=matrix,
                x=list(range(n_heads)),
                y=list(range(n_layers)),
                zmin=-bound,
                zmax=bound,
                zmid=0,
                colorscale="RdBu_r",
                showscale=col == 1,
                colorbar={"title": {"text": label, "side": "right"}},
                customdata=names,
                hovertemplate=f"{task} %{{customdata}}<br>{label}: %{{z:.3f}}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        for kind, heads in (("circuit", circuits[task]), ("shared", shared)):
            marked = list(HeadSet(heads))
            figure.add_scatter(
                x=[h.head for h in marked],
                y=[h.layer for h in marked],
                mode="markers",
                marker={
                    "symbol": "square-open" if kind == "circuit" else "circle",
                    "size": 12 if kind == "circuit" else 5,
                    "color": "black",
                    "line": {"width": 2},
                },
                name=f"{kind} heads",
                legendgroup=kind,
                showlegend=col == 1,
                hoverinfo="skip",
                row=1,
                col=col,
            )
        figure.update_xaxes(title="head", dtick=1, row=1, col=col)
    figure.update_yaxes(title="layer", autorange="reversed", row=1, col=1)
    figure.update_yaxes(autorange="reversed")
    n_layers, n_heads = next(iter(matrices.values())).shape
    figure.update_layout(
        width=len(scores) * max(320, 34 * n_heads + 80) + 120,
        height=max(360, 18 * n_layers + 140),
        legend={"orientation": "h", "y": -0.12},
    )
    return style(figure, title)


# ----------------------------------------------------------------------------------------
# Vision-language models (issue 12)


def sink_patch_figure(image: np.ndarray, patches: pd.DataFrame, title: str) -> go.Figure:
    """An image as the vision tower saw it, its visual-sink patches outlined.

    Args:
        image: [height, width, 3] uint8, one view (`interp.image_patches.view_image`).
        patches: that view's rows of `probes.visual_sinks.sink_patches`; patches with
            `n_layers` > 0 are outlined, the line the wider the more layers mark them.
        title: the figure's title.
    """
    figure = go.Figure(go.Image(z=image, hoverinfo="skip"))
    marked = patches[(patches.n_layers > 0) & (patches.top >= 0)]  # CLS, newlines: no box
    most = max(int(marked.n_layers.max()), 1) if len(marked) else 1
    for patch in marked.itertuples():
        figure.add_shape(
            type="rect",
            x0=patch.left - 0.5,
            x1=patch.right - 0.5,
            y0=patch.top - 0.5,
            y1=patch.bottom - 0.5,
            line={"color": "#ff2d2d", "width": 1 + 3 * patch.n_layers / most},
        )
    figure.add_scatter(  # hover targets at the marked patches' centres
        x=(marked.left + marked.right) / 2 - 0.5,
        y=(marked.top + marked.bottom) / 2 - 0.5,
        mode="markers",
        marker={"size": 6, "color": "#ff2d2d", "opacity": 0.6},
        customdata=np.stack([marked.position, marked.n_layers, marked.max_phi], axis=-1),
        hovertemplate="token %{customdata[0]}: visual sink in %{customdata[1]} layers,"
        " max phi %{customdata[2]:.1f}<extra></extra>",
        showlegend=False,
    )
    height, width = image.shape[:2]
    scale = 360 / max(height, width)
    figure.update_layout(width=int(width * scale) + 80, height=int(height * scale) + 110)
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    return style(figure, title)


# ----------------------------------------------------------------------------------------
# Sparse autoencoders (issue 10)


def roc_curves(curves: pd.DataFrame, title: str) -> go.Figure:
    """ROC curves of head rankings against a reference circuit, one line per run.

    Args:
        curves: one row per point with `run` (e.g. "seed 3"), `fpr`, `tpr` and the run's
            `auc` (`circuits.sae_circuits.roc_points`, `roc_auc`).
        title: the figure title.
    """
    figure = go.Figure()
    figure.add_scatter(
        x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "gray"}, name="chance"
    )
    for run, points in curves.groupby("run", sort=False):
        figure.add_scatter(
            x=points.fpr,
            y=points.tpr,
            mode="lines",
            line={"shape": "linear", "width": 1.5},
            opacity=0.8,
            name=f"{run} (AUC {points.auc.iloc[0]:.2f})",
        )
    figure.update_xaxes(title="false positive rate (heads outside the circuit)", range=[0, 1])
    figure.update_yaxes(title="true positive rate (circuit heads)", range=[0, 1.02])
    figure.update_layout(width=560, height=480)
    return style(figure, title)


def effect_sweep(rows: pd.DataFrame, parameter: str, title: str) -> go.Figure:
    """An effect's difference over an intervention parameter, with its paired 95% interval.

    Args:
        rows: one effect row (`interp.effects.compare` columns) per value, with the value in
            a `parameter` column; with a `series` column, one line per series.
        parameter: the axis title, e.g. "VHR alpha".
    """
    figure = go.Figure()
    series = rows.groupby("series", sort=False) if "series" in rows else [(None, rows)]
    for name, line in series:
        figure.add_scatter(
            x=line["parameter"],
            y=line["difference"],
            name=name,
            mode="lines+markers",
            error_y={
                "type": "data",
                "symmetric": False,
                "array": line["ci_high"] - line["difference"],
                "arrayminus": line["difference"] - line["ci_low"],
            },
        )
    figure.add_hline(y=0, line_dash="dot")
    figure.update_layout(xaxis_title=parameter, yaxis_title="difference (95% CI)")
    return style(figure, title)
