"""Figures from results, with one house style, and static export for papers.

Every figure is built from a result table (never the other way round). `export` writes HTML
always, and PNG/SVG/PDF through kaleido when a Chromium is installed, reusing one browser
for all figures (about 2.5 s per figure saved against launching one per call).
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from interp.heads import HeadGeometry
from interp.results import EffectTable, HeadScores

STATIC_FORMATS = ("png", "svg", "pdf")
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


def head_heatmap(
    scores: HeadScores,
    column: str = "score",
    title: str | None = None,
    geometry: HeadGeometry | None = None,
) -> go.Figure:
    """Layer x head heatmap of one column of a HeadScores (mean over examples)."""
    matrix = scores.matrix(geometry, column=column)
    n_layers, n_heads = matrix.shape
    labels = np.array([[f"L{i}H{h}" for h in range(n_heads)] for i in range(n_layers)])
    figure = go.Figure(
        go.Heatmap(
            z=matrix,
            x=list(range(n_heads)),
            y=list(range(n_layers)),
            customdata=labels,
            colorscale=COLORSCALE,
            colorbar={"title": {"text": column, "side": "right"}},
            hovertemplate="%{customdata}<br>" + column + "=%{z:.3f}<extra></extra>",
        )
    )
    figure.update_xaxes(title="head", dtick=1)
    figure.update_yaxes(title="layer", autorange="reversed")
    height = max(320, 18 * n_layers + 120)
    figure.update_layout(height=height, width=max(420, 40 * n_heads + 200))
    default = f"{scores.provenance.analyzer}: {column} ({scores.provenance.model})"
    return style(figure, title or default)


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


def chromium_path() -> str | None:
    """The Chromium kaleido will use: $BROWSER_PATH, else chromium/chrome on PATH."""
    if os.environ.get("BROWSER_PATH"):
        return os.environ["BROWSER_PATH"]
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@contextmanager
def _browser() -> Iterator[None]:
    import kaleido

    kaleido.start_sync_server(n=1, silence_warnings=True)
    try:
        yield
    finally:
        kaleido.stop_sync_server(silence_warnings=True)


def export(
    figures: Mapping[str, go.Figure],
    folder: str | Path,
    formats: Sequence[str] = STATIC_FORMATS,
) -> list[Path]:
    """Write each figure as `<name>.html` and, if a Chromium exists, in `formats`.

    Returns the written paths. Without a Chromium only HTML is written; callers check
    `chromium_path()` to tell the user why.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, figure in figures.items():
        path = folder / f"{name}.html"
        pio.write_html(figure, path, include_plotlyjs=True)  # offline: bundle plotly.js
        written.append(path)
    if not formats or chromium_path() is None:
        return written
    with _browser(), warnings.catch_warnings():
        # plotly warns that per-call options are ignored by a shared server; we pass none.
        warnings.filterwarnings("ignore", message="The kopts argument is ignored")
        for name, figure in figures.items():
            for fmt in formats:
                path = folder / f"{name}.{fmt}"
                pio.write_image(figure, path, format=fmt)
                written.append(path)
    return written


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
