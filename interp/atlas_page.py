"""The atlas page: one self-contained HTML file to explore a head atlas, offline.

The page holds the layer x head grid coloured by a method chosen from a menu
(`<select id="method">`), a panel that shows every score of a clicked head (`#head-scores`)
with its attention pattern on a short example prompt (`#head-pattern`), and the relations
between methods (`#relations`). plotly.js is inlined (4.8 MB of the file), so the page
opens from disk without a network. The figures are `interp.atlas_figures`' (house style); the
page script only recolours, selects and draws the pattern.

The example's patterns are stored compactly: only each head's causal triangle (keys up to the
query), quantized to one byte (steps of 1/255) and base64-encoded, 4/3 bytes per stored
weight: 30 layers x 9 heads on 20 tokens add 76 kB.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from interp.atlas_figures import atlas_heatmap, atlas_label, method_columns, relations_figure
from interp.errors import InputError
from interp.figures import COLORSCALE, FONT, style
from interp.results import Provenance

_LEVELS = 255  # one byte per attention weight
_CAUSAL_TOLERANCE = 1e-3  # attention above the diagonal that still counts as none


def atlas_page(
    heads: pd.DataFrame,
    relations: pd.DataFrame,
    provenance: Provenance,
    example: dict[str, Any] | None = None,
    title: str | None = None,
) -> str:
    """The atlas page as one HTML string (write it to a `.html` file and open it).

    Args:
        heads: one row per head: `layer`, `head`, `kv_group`, then the methods' columns
            (numeric or boolean ones can colour the grid; `<column>_low`/`_high` are shown as
            that column's interval; text columns such as a class are listed on click).
        relations: one row per pair of methods: `method_a`, `method_b`, `spearman`,
            `jaccard`, `k`, `n`.
        provenance: the atlas's; its model names the page and its record is shown.
        example: optional `{"tokens": list[str], "patterns": array [layer, head, query_pos,
            key_pos]}`: every head's attention on a short prompt (causal).
        title: the page heading (default "Head atlas: <model>").

    Raises:
        InputError: a table lacks its columns, or the example does not fit the table.

    Example:
        >>> heads = pd.DataFrame({"layer": [0, 0], "head": [0, 1], "sinks_score": [0.9, 0.1]})
        >>> from interp.atlas_figures import RELATION_COLUMNS
        >>> relations = pd.DataFrame(columns=list(RELATION_COLUMNS))
        >>> provenance = Provenance("tiny", "-", "atlas", {}, "-", 0)
        >>> page = atlas_page(heads, relations, provenance)
        >>> page.startswith("<!DOCTYPE html>") and "<title>Head atlas: tiny</title>" in page
        True
    """
    methods = method_columns(heads)
    title = title or f"Head atlas: {provenance.model}"
    data = {
        "model": provenance.model,
        "n_layers": int(heads["layer"].max()) + 1,
        "n_heads": int(heads["head"].max()) + 1,
        "methods": methods,
        "columns": _columns(heads),
        "table": {c: _values(heads[c]) for c in heads.columns},
        "grid": _figure_json(atlas_heatmap(heads, methods[0], provenance)),
        "relations": _figure_json(relations_figure(relations)),
        "pattern": _figure_json(_pattern_figure()),
        "example": _encode_example(example, heads) if example is not None else None,
    }
    # "<" escaped: no token or label can close the script element that holds the data.
    payload = json.dumps(data, allow_nan=False).replace("<", "\\u003c")
    parts = {
        "TITLE": html.escape(title),
        "FONT": FONT["family"],
        "PROVENANCE": _provenance_html(provenance),
        "DATA": payload,
        "SCRIPT": _SCRIPT,
        "PLOTLY": get_plotlyjs(),
    }
    # One pass, so nothing inserted (a token, plotly.js) is itself searched for markers.
    return re.sub(r"@@(\w+)@@", lambda m: parts[m.group(1)], _TEMPLATE)


def write_atlas_page(
    path: str | Path,
    heads: pd.DataFrame,
    relations: pd.DataFrame,
    provenance: Provenance,
    example: dict[str, Any] | None = None,
) -> Path:
    """Write the page (`atlas_page`, default title) to `path` in UTF-8; returns the path."""
    path = Path(path)
    path.write_text(atlas_page(heads, relations, provenance, example), encoding="utf-8")
    return path


def _columns(heads: pd.DataFrame) -> list[dict[str, Any]]:
    """Each shown column's name, label and interval columns (the bounds are not listed)."""
    bounds = {f"{c}_{side}" for c in heads.columns for side in ("low", "high")}
    shown = []
    for column in heads.columns:
        if column in bounds or column in ("layer", "head", "label"):
            continue
        entry = {"name": column, "label": atlas_label(column)}
        if f"{column}_low" in heads and f"{column}_high" in heads:
            entry.update(low=f"{column}_low", high=f"{column}_high")
        shown.append(entry)
    return shown


def _values(column: pd.Series) -> list[Any]:
    """A column as JSON values: numbers to 4 significant digits, NaN as null."""
    if pd.api.types.is_bool_dtype(column):
        return [bool(v) for v in column]
    if pd.api.types.is_integer_dtype(column):
        return [int(v) for v in column]
    if pd.api.types.is_numeric_dtype(column):
        return [None if np.isnan(v) else float(f"{v:.4g}") for v in column.astype(float)]
    return [None if pd.isna(v) else str(v) for v in column]


def _figure_json(figure: go.Figure) -> dict[str, Any]:
    return json.loads(pio.to_json(figure, validate=False))


def _pattern_figure() -> go.Figure:
    """The empty frame of a head's pattern plot; the page fills it for the clicked head."""
    figure = go.Figure(
        go.Heatmap(
            z=[[None]],
            zmin=0,
            colorscale=COLORSCALE,
            colorbar={"title": {"text": "attention", "side": "right"}},
            hovertemplate="%{text}<br>attention %{z:.2f}<extra></extra>",
        )
    )
    figure.update_xaxes(title="key", tickangle=-60)
    figure.update_yaxes(title="query", autorange="reversed")
    figure.update_layout(width=520, height=500)
    return style(figure, "")


def _encode_example(example: dict[str, Any], heads: pd.DataFrame) -> dict[str, Any]:
    """Tokens and each head's causal triangle of attention, one byte per weight, base64.

    Raises:
        InputError: the patterns are not [layer, head, pos, pos] for the table's heads and
            the tokens, or put weight above the diagonal (a triangle would lose it).
    """
    tokens = [str(t) for t in example["tokens"]]
    patterns = np.asarray(example["patterns"], dtype=np.float64)
    n = len(tokens)
    expected = (int(heads["layer"].max()) + 1, int(heads["head"].max()) + 1, n, n)
    if patterns.shape != expected:
        raise InputError(
            f"The example's patterns have shape {patterns.shape}; expected {expected}"
            " ([layer, head, query_pos, key_pos] for the table's heads and the tokens)."
        )
    lower = np.tril(np.ones((n, n), dtype=bool))
    above = np.abs(patterns[:, :, ~lower]).max(initial=0.0)
    if above > _CAUSAL_TOLERANCE:
        raise InputError(
            f"The example's patterns put weight {above:.3g} above the diagonal; the page"
            " stores causal attention only."
        )
    levels = np.round(np.clip(patterns[:, :, lower], 0.0, 1.0) * _LEVELS).astype(np.uint8)
    return {
        "tokens": [t.replace("\n", "↵") for t in tokens],
        "levels": _LEVELS,
        "triangles": base64.b64encode(levels.tobytes()).decode("ascii"),
    }


def _provenance_html(provenance: Provenance) -> str:
    """The provenance record as a definition list (hashes shortened), its settings as JSON
    under a toggle."""
    record = provenance.to_dict()
    config = record.pop("config")
    for key in ("weights_hash", "inputs_hash"):  # 12 hex digits tell runs apart on screen
        record[key] = record[key][:12]
    items = "".join(
        f"<dt>{html.escape(key.replace('_', ' '))}</dt><dd>{html.escape(str(value))}</dd>"
        for key, value in record.items()
        if value is not None
    )
    settings = html.escape(json.dumps(config, indent=2, sort_keys=True, default=str))
    return (
        f'<dl id="provenance">{items}</dl>'
        f"<details><summary>settings</summary><pre>{settings}</pre></details>"
    )


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>@@TITLE@@</title>
<style>
body { font-family: @@FONT@@; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 0.4em; }
#provenance { display: grid; grid-template-columns: max-content auto; gap: 0 1em;
  font-size: 0.85em; margin: 0 0 0.5em; }
#provenance dt { color: #666; } #provenance dd { margin: 0; }
details { font-size: 0.85em; margin-bottom: 1em; }
.row { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
#head-scores table { border-collapse: collapse; font-size: 0.9em; }
#head-scores th { text-align: left; font-weight: normal; color: #555; padding: 1px 1em 1px 0; }
#head-scores td { font-variant-numeric: tabular-nums; }
#head-scores tr.shown { font-weight: bold; }
.hint { color: #888; }
</style>
<script>@@PLOTLY@@</script>
</head>
<body>
<h1>@@TITLE@@</h1>
@@PROVENANCE@@
<label for="method">Colour the heads by</label> <select id="method"></select>
<div class="row">
<div id="grid"></div>
<div><div id="head-scores"><p class="hint">Click a head to see its scores.</p></div>
<div id="head-pattern"></div></div>
</div>
<div id="relations"></div>
<script type="application/json" id="atlas-data">@@DATA@@</script>
<script>@@SCRIPT@@</script>
</body>
</html>
"""

_SCRIPT = """
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("atlas-data").textContent);
  const T = D.table;
  const column = Object.fromEntries(D.columns.map((c) => [c.name, c]));
  const grid = document.getElementById("grid");
  const menu = document.getElementById("method");
  const panel = document.getElementById("head-scores");
  const config = { displaylogo: false };
  const baseShapes = JSON.parse(JSON.stringify(D.grid.layout.shapes || []));
  const escape = (s) =>
    String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  const fmt = (v) =>
    v === null ? "n/a" : typeof v === "boolean" ? (v ? "yes" : "no")
    : typeof v === "number" && !Number.isInteger(v) ? v.toPrecision(3) : String(v);
  const valueText = (c, i) =>
    fmt(T[c.name][i]) + (c.low ? " [" + fmt(T[c.low][i]) + ", " + fmt(T[c.high][i]) + "]" : "");
  let selected = -1;

  function show(name) {
    const c = column[name];
    const z = [], text = [];
    for (let l = 0; l < D.n_layers; l++) {
      z.push(new Array(D.n_heads).fill(null));
      text.push(new Array(D.n_heads).fill(""));
    }
    T.layer.forEach((l, i) => {
      const h = T.head[i], v = T[name][i];
      z[l][h] = v === null ? null : Number(v);
      text[l][h] = "L" + l + "H" + h + "<br>" + escape(c.label) + ": " + escape(valueText(c, i));
    });
    Plotly.restyle(grid, { z: [z], text: [text], hovertemplate: "%{text}<extra></extra>",
      "colorbar.title.text": escape(c.label) }, [0]);
    Plotly.relayout(grid, { "title.text": escape(c.label) + " (" + escape(D.model) + ")" });
    if (selected >= 0) scores(selected);
  }

  function scores(i) {
    const rows = D.columns.map((c) =>
      "<tr" + (c.name === menu.value ? ' class="shown"' : "") + "><th>" + escape(c.label)
      + "</th><td>" + escape(valueText(c, i)) + "</td></tr>");
    panel.innerHTML = "<h3>L" + T.layer[i] + "H" + T.head[i] + "</h3><table>" + rows.join("")
      + "</table>";
  }

  function pattern(l, h) {
    const ex = D.example, n = ex.tokens.length, per = (n * (n + 1)) / 2;
    const bytes = Uint8Array.from(atob(ex.triangles), (ch) => ch.charCodeAt(0));
    const start = (l * D.n_heads + h) * per, z = [], text = [];
    for (let q = 0; q < n; q++) {
      const row = start + (q * (q + 1)) / 2;
      z.push(ex.tokens.map((_, k) => (k <= q ? bytes[row + k] / ex.levels : null)));
      text.push(ex.tokens.map((t, k) => escape(ex.tokens[q]) + " → " + escape(t)));
    }
    const every = Math.ceil(n / 32); // a label per token up to 32 tokens; hover names all
    const shown = ex.tokens.map((_, k) => k).filter((k) => k % every === 0);
    const ticks = { tickvals: shown, ticktext: shown.map((k) => escape(ex.tokens[k])) };
    const frame = D.pattern.layout;
    Plotly.react("head-pattern", [Object.assign({}, D.pattern.data[0], { z: z, text: text })],
      Object.assign({}, frame, {
        title: Object.assign({}, frame.title, { text: "L" + l + "H" + h + " on the example" }),
        xaxis: Object.assign({}, frame.xaxis, ticks), yaxis: Object.assign({}, frame.yaxis, ticks),
      }), config);
  }

  function select(l, h) {
    const i = T.layer.findIndex((v, j) => v === l && T.head[j] === h);
    if (i < 0) return;
    selected = i;
    scores(i);
    Plotly.relayout(grid, { shapes: baseShapes.concat([{ type: "rect", x0: h - 0.5, x1: h + 0.5,
      y0: l - 0.5, y1: l + 0.5, opacity: 1, fillcolor: "rgba(0,0,0,0)",
      line: { color: "#e4002b", width: 3 } }]) });
    if (D.example) pattern(l, h);
  }

  D.methods.forEach((name) => menu.add(new Option(column[name].label, name)));
  Plotly.newPlot(grid, D.grid.data, D.grid.layout, config).then(() => {
    show(menu.value);
    menu.addEventListener("change", () => show(menu.value));
    grid.on("plotly_click", (event) => select(event.points[0].y, event.points[0].x));
    return Plotly.newPlot("relations", D.relations.data, D.relations.layout, config);
  }).then(() => { document.body.dataset.ready = "true"; });
})();
"""
