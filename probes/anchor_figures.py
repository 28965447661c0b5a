"""Figures of the preplan/anchor analysis, from its results.

* `token_strip`: one trace's response tokens as a strip coloured by WAAD and by FAI, with
  preplan tokens (top-q ΔWAAD) and anchors (top-q FAI) marked, token text on hover.
* `attention_map`: one head's [query, key] attention over a trace (`head_pattern`), where a
  local head shows the near-diagonal sawtooth: attention reaching back to the start of the
  current chunk, then resetting. One head of one trace is N² floats (4 MB at 1k tokens).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from interp.errors import InputError
from interp.figures import COLORSCALE, style
from interp.heads import Head
from interp.hooks import AttentionRows, attention_hooks
from interp.models import Model
from interp.results import TokenScores
from probes.anchor_traces import Trace


class _OneHead:
    def __init__(self, head: Head, n: int) -> None:
        self.head = head
        self.pattern = torch.zeros(n, n)

    def wants(self, layer: int, n_queries: int) -> bool:
        return layer == self.head.layer

    def __call__(self, rows: AttentionRows) -> None:
        block = rows.probs[0, self.head.head].cpu()
        self.pattern[rows.query_positions.cpu(), : block.shape[-1]] = block


def head_pattern(model: Model, trace: Trace, head: Head) -> np.ndarray:
    """[query, key] post-softmax attention of one head over one trace (float32)."""
    model.geometry.check(head)
    hook = _OneHead(head, len(trace.ids))
    with torch.no_grad(), attention_hooks(model.hf, hook):
        model.hf(torch.tensor([trace.ids], device=model.device), logits_to_keep=1)
    return hook.pattern.numpy()


def token_strip(tokens: TokenScores, trace: str, title: str | None = None) -> go.Figure:
    """WAAD and FAI per response token of `trace`, preplan (▲) and anchor (●) marks."""
    table = tokens.data[tokens.data.trace == trace].sort_values("position")
    if table.empty:
        names = ", ".join(map(str, tokens.data.trace.unique()[:5]))
        raise InputError(f"No trace {trace!r} in the table; traces: {names}, ...")
    x = table.response_position.to_numpy()
    text = [repr(t)[1:-1] for t in table.token]
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    for row, column, name in ((1, "waad", "WAAD"), (2, "fai", "FAI")):
        figure.add_trace(
            go.Heatmap(
                z=[table[column].to_numpy()],
                x=x,
                y=[name],
                text=[text],
                colorscale=COLORSCALE,
                colorbar={"title": {"text": name}, "len": 0.45, "y": 0.78 if row == 1 else 0.22},
                hovertemplate="%{x}: '%{text}'<br>" + name + " %{z:.3f}<extra></extra>",
            ),
            row=row,
            col=1,
        )
    for row, column, symbol, name in (
        (1, "is_preplan", "triangle-up", "preplan"),
        (2, "is_anchor", "circle", "anchor"),
    ):
        marked = table[table[column]]
        figure.add_scatter(
            x=marked.response_position,
            y=[("WAAD", "FAI")[row - 1]] * len(marked),
            mode="markers",
            marker={"symbol": symbol, "size": 6, "color": "white", "line": {"width": 1}},
            name=name,
            row=row,
            col=1,
        )
    figure.update_xaxes(title="response token", row=2, col=1)
    figure.update_layout(
        width=min(1400, 300 + 4 * len(table)),
        height=380,
        legend={"orientation": "h", "x": 0, "y": -0.3},
    )
    default = f"Preplan and anchor tokens: {trace} ({tokens.provenance.model})"
    return style(figure, default if title is None else title)


def attention_map(pattern: np.ndarray, head: Head, n_prompt: int, title: str) -> go.Figure:
    """One head's attention (`head_pattern`) with the prompt/response boundary marked."""
    figure = go.Figure(
        go.Heatmap(
            z=np.sqrt(pattern),  # square root: the diagonal band and its resets both show
            colorscale=COLORSCALE,
            colorbar={"title": {"text": "√attention"}},
            hovertemplate="query %{y}, key %{x}<extra></extra>",
        )
    )
    for axis in ("x", "y"):
        figure.add_shape(
            type="line",
            **{f"{axis}0": n_prompt - 0.5, f"{axis}1": n_prompt - 0.5},
            **{f"{o}0": 0 for o in "xy" if o != axis},
            **{f"{o}1": len(pattern) for o in "xy" if o != axis},
            line={"color": "white", "width": 1, "dash": "dot"},
        )
    figure.update_xaxes(title="key position")
    figure.update_yaxes(title="query position", autorange="reversed")
    figure.update_layout(width=620, height=560)
    return style(figure, f"{title} ({head.label})")


def local_head_for_map(heads: pd.DataFrame) -> Head:
    """The most local head (lowest d(l, h)) of a head split table."""
    row = heads.sort_values("score").iloc[0]
    return Head(int(row.layer), int(row["head"]))
