"""The atlas page (one offline HTML file) and the atlas's static figures.

The browser test drives the page in the system's Chromium through Playwright; it is skipped
only where no Chromium is installed (`make install` and CI install Debian's).
"""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

from interp.atlas_figures import atlas_label, method_columns, write_atlas_figures
from interp.atlas_page import atlas_page, write_atlas_page
from interp.errors import InputError
from interp.figure_export import chromium_path
from interp.heads import Head
from tests.interp.atlas_browser import click_head, grid_z, opened, synthetic_atlas

ATLAS = synthetic_atlas(n_layers=3, n_heads=4, n_kv_heads=2, n_tokens=6)


def page_data(page: str) -> dict:
    """The JSON the page's script reads."""
    match = re.search(r'<script type="application/json" id="atlas-data">(.*?)</script>', page)
    assert match is not None
    return json.loads(match.group(1))


def matrix(heads: pd.DataFrame, column: str) -> np.ndarray:
    out = np.full((heads.layer.max() + 1, heads["head"].max() + 1), np.nan)
    out[heads.layer, heads["head"]] = heads[column].astype(float)
    return out


def test_page_needs_no_network_and_keeps_every_value():
    heads, relations, provenance, example = ATLAS
    heads = heads.assign(retrieval_score=heads.retrieval_score.where(heads.layer > 0))  # NaNs
    page = atlas_page(heads, relations, provenance, example)
    assert re.findall(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=", page) == []
    assert get_plotlyjs() in page
    data = page_data(page)
    for column in heads.columns:
        values = data["table"][column]
        if pd.api.types.is_numeric_dtype(heads[column]):
            stored = np.array([np.nan if v is None else v for v in values], dtype=float)
            np.testing.assert_allclose(stored, heads[column].astype(float), rtol=1e-3)
        else:
            assert values == heads[column].tolist()
    assert data["methods"] == method_columns(heads)
    assert "retrieval_score_low" not in data["methods"] and "anchors_class" not in data["methods"]
    assert provenance.model in page and provenance.weights_hash[:12] in page


def test_example_patterns_are_stored_as_byte_triangles():
    heads, relations, provenance, example = synthetic_atlas(n_layers=30, n_heads=9, n_tokens=20)
    page = atlas_page(heads, relations, provenance, example)
    stored = page_data(page)["example"]
    n = len(example["tokens"])
    triangles = np.frombuffer(base64.b64decode(stored["triangles"]), dtype=np.uint8)
    lower = np.tril(np.ones((n, n), dtype=bool))
    decoded = np.zeros_like(example["patterns"])
    decoded[:, :, lower] = triangles.reshape(30, 9, -1) / stored["levels"]
    np.testing.assert_allclose(decoded, example["patterns"], atol=0.5 / stored["levels"])
    assert len(page) - len(get_plotlyjs()) < 200_000  # the whole atlas beside plotly.js


def test_an_example_that_does_not_fit_is_refused():
    heads, relations, provenance, example = ATLAS
    patterns = example["patterns"]
    with pytest.raises(InputError, match="shape"):
        atlas_page(heads, relations, provenance, {**example, "patterns": patterns[:2]})
    upper = patterns + np.triu(np.full(patterns.shape[-2:], 0.1), k=1)
    with pytest.raises(InputError, match="above the diagonal"):
        atlas_page(heads, relations, provenance, {**example, "patterns": upper})
    with pytest.raises(InputError, match="layer"):
        atlas_page(heads.drop(columns="layer"), relations, provenance)


def test_static_figures_are_one_grid_per_method_and_the_relations(tmp_path):
    heads, relations, provenance, _ = ATLAS
    written = write_atlas_figures(tmp_path, heads, relations, provenance, formats=())
    methods = method_columns(heads)
    assert sorted(p.name for p in written) == sorted(
        [f"grid_{m}.html" for m in methods] + ["relations.html"]
    )
    assert methods == [
        "sinks_first_token_share",
        "head_kinds_previous_token",
        "retrieval_score",
        "retrieval_head",
        "anchors_distance",
    ]
    assert atlas_label("sinks_first_token_share") == "attention share on token 0"


def test_relations_figure_is_symmetric_with_jaccard_on_hover():
    from interp.atlas_figures import relations_figure

    _, relations, _, _ = ATLAS
    heatmap = relations_figure(relations).data[0]
    z, hover = np.asarray(heatmap.z, dtype=float), np.asarray(heatmap.customdata, dtype=float)
    np.testing.assert_array_equal(z, z.T)
    assert np.isnan(np.diag(z)).all()
    first = relations.iloc[0]
    assert (z[0, 1], hover[1, 0, 0]) == (first.spearman, first.jaccard)


def test_grid_figure_draws_the_column_with_kv_groups():
    from interp.atlas_figures import atlas_heatmap

    heads, _, provenance, _ = ATLAS
    figure = atlas_heatmap(heads, "retrieval_score", provenance)
    np.testing.assert_array_equal(figure.data[0].z, matrix(heads, "retrieval_score"))
    assert [shape.x0 for shape in figure.layout.shapes] == [1.5]  # 4 heads, 2 per KV head


@pytest.mark.skipif(chromium_path() is None, reason="the page test needs a Chromium")
def test_page_in_a_browser_recolours_and_shows_a_clicked_head(tmp_path):
    heads, relations, provenance, example = ATLAS
    path = write_atlas_page(tmp_path / "atlas.html", heads, relations, provenance, example)
    methods = method_columns(heads)
    with opened(path) as (page, errors):
        before = np.array(grid_z(page), dtype=float)
        np.testing.assert_allclose(before, matrix(heads, methods[0]), rtol=1e-3)
        page.select_option("#method", "retrieval_score")
        after = np.array(grid_z(page), dtype=float)
        np.testing.assert_allclose(after, matrix(heads, "retrieval_score"), rtol=1e-3)

        head = Head(2, 1)
        click_head(page, head)
        page.wait_for_function(
            "() => document.querySelector('#head-scores h3')?.textContent === 'L2H1'",
            timeout=3000,
        )
        shown = dict(  # label -> the value as the page writes it
            page.eval_on_selector_all(
                "#head-scores tr",
                "rows => rows.map(r => [r.cells[0].textContent, r.cells[1].textContent])",
            )
        )
        row = heads[(heads.layer == head.layer) & (heads["head"] == head.head)].iloc[0]
        for column in methods:
            value = shown[atlas_label(column)].split(" [")[0]
            expected = {"yes": 1.0, "no": 0.0}.get(value)
            assert (float(value) if expected is None else expected) == pytest.approx(
                float(row[column]), rel=5e-3
            )
        assert shown["anchors class"] == row.anchors_class
        low, high = re.findall(r"\[(.*), (.*)\]", shown[atlas_label("retrieval_score")])[0]
        assert (float(low), float(high)) == pytest.approx(
            (row.retrieval_score_low, row.retrieval_score_high), rel=5e-3
        )
        drawn = page.evaluate("() => document.getElementById('head-pattern').data[0].z")
        pattern = np.array(drawn, dtype=float)
        truth = example["patterns"][head.layer, head.head]
        lower = np.tril(np.ones_like(truth, dtype=bool))
        np.testing.assert_allclose(pattern[lower], truth[lower], atol=0.5 / 255)
        drawn = page.evaluate("() => document.getElementById('relations').data[0].x")
        assert drawn == [
            atlas_label(m) for m in dict.fromkeys([*relations.method_a, *relations.method_b])
        ]
    assert errors == []
