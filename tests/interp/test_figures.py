import contextlib

import numpy as np
import pytest

from interp import figure_export, figures
from interp.errors import ConfigError
from interp.heads import HeadGeometry
from interp.results import HeadScores, Provenance

SCORES = HeadScores.from_matrix(
    np.arange(12.0).reshape(3, 4),
    Provenance(
        model="tiny", weights_hash="w", analyzer="sinks", config={}, inputs_hash="i", n_inputs=1
    ),
)


def test_heatmap_is_drawn_from_the_result():
    figure = figures.head_heatmap(SCORES)
    heatmap = figure.data[0]
    assert np.array_equal(np.asarray(heatmap.z), SCORES.matrix())
    assert heatmap.customdata[2][1] == "L2H1"
    assert "sinks" in figure.layout.title.text


def test_export_writes_html_without_static_formats(tmp_path):
    written = figure_export.export({"heat": figures.head_heatmap(SCORES)}, tmp_path, formats=())
    assert [p.name for p in written] == ["heat.html"]
    assert "plotly" in written[0].read_text()[:5000].lower()


@pytest.mark.skipif(figure_export.chromium_path() is None, reason="static export needs a Chromium")
def test_static_export_shares_one_browser(tmp_path):
    figs = {"a": figures.head_heatmap(SCORES), "b": figures.head_heatmap(SCORES, title="B")}
    written = figure_export.export(figs, tmp_path, formats=("png", "pdf"), scale=2.0)
    assert sorted(p.name for p in written) == [
        "a.html",
        "a.pdf",
        "a.png",
        "b.html",
        "b.pdf",
        "b.png",
    ]
    png = (tmp_path / "a.png").read_bytes()
    assert png[:4] == b"\x89PNG"
    assert int.from_bytes(png[16:20], "big") == 2 * figs["a"].layout.width  # PNG width
    assert (tmp_path / "b.pdf").read_bytes()[:4] == b"%PDF"


GQA = HeadGeometry(n_layers=3, n_heads=4, n_kv_heads=2, d_head=8, d_model=32)


def test_heatmap_colour_range_label_size_and_font_are_settable():
    figure = figures.head_heatmap(
        SCORES, zmin=0.0, zmax=20.0, label="share", width=500, height=300, font_size=9
    )
    heatmap = figure.data[0]
    assert (heatmap.zmin, heatmap.zmax) == (0.0, 20.0)
    assert heatmap.colorbar.title.text == "share"
    assert (figure.layout.width, figure.layout.height, figure.layout.font.size) == (500, 300, 9)


def test_heatmap_labels_known_columns_for_humans():
    figure = figures.head_heatmap(SCORES)
    assert figure.data[0].colorbar.title.text == "attention share on sinks"
    assert "attention share on sinks" in figure.layout.title.text
    other = HeadScores(SCORES.data.assign(mystery_value=1.0), SCORES.provenance)
    assert figures.head_heatmap(other, "mystery_value").data[0].colorbar.title.text == (
        "mystery value"
    )


def test_paper_presets_set_width_and_font_at_the_stated_dpi():
    one = figures.head_heatmap(SCORES, paper="one-column")
    two = figures.head_heatmap(SCORES, paper="two-column")
    assert one.layout.width == round(3.25 * 96) and two.layout.width == round(6.75 * 96)
    assert one.layout.font.size == pytest.approx(8 * 96 / 72)
    assert figure_export.PAPER["one-column"].scale == pytest.approx(300 / 96)
    # An explicit size still wins over the preset.
    assert figures.head_heatmap(SCORES, paper="one-column", width=400).layout.width == 400
    with pytest.raises(ConfigError, match="one-column"):
        figures.head_heatmap(SCORES, paper="one-col")  # type: ignore[arg-type]


def test_kv_groups_are_marked_between_query_head_groups():
    plain = figures.head_heatmap(SCORES, geometry=GQA)
    marked = figures.head_heatmap(SCORES, geometry=GQA, kv_groups=True)
    assert len(plain.layout.shapes) == 0
    # 4 query heads, 2 per KV head: one separator, between heads 1 and 2.
    assert [(s.x0, s.x1) for s in marked.layout.shapes] == [(1.5, 1.5)]
    with pytest.raises(ConfigError, match="geometry"):
        figures.head_heatmap(SCORES, kv_groups=True)


def test_export_takes_one_format_as_a_string(tmp_path, monkeypatch):
    monkeypatch.setattr(figure_export, "chromium_path", lambda: "/usr/bin/chromium")
    written = []
    monkeypatch.setattr(figure_export, "_browser", contextlib.nullcontext)
    monkeypatch.setattr(
        figure_export.pio, "write_image", lambda f, path, **kw: written.append(path)
    )
    figure_export.export({"heat": figures.head_heatmap(SCORES)}, tmp_path, formats="png")
    assert [p.name for p in written] == ["heat.png"]


def test_notebook_renderer_adds_a_png_fallback(monkeypatch):
    monkeypatch.setattr(figure_export.pio.renderers, "default", "plotly_mimetype")
    monkeypatch.setattr(figure_export, "chromium_path", lambda: "/usr/bin/chromium")
    assert figure_export.use_notebook_renderer() == "plotly_mimetype+png"
    monkeypatch.setattr(figure_export, "chromium_path", lambda: None)
    with pytest.warns(UserWarning, match="No Chromium"):
        assert figure_export.use_notebook_renderer() == "plotly_mimetype"


@pytest.mark.skipif(figure_export.chromium_path() is None, reason="static export needs a Chromium")
def test_notebook_renderer_bundle_holds_json_and_png(monkeypatch):
    monkeypatch.setattr(figure_export.pio.renderers, "default", figure_export.pio.renderers.default)
    figure_export.use_notebook_renderer()
    bundle = figure_export.pio.renderers._build_mime_bundle(figures.head_heatmap(SCORES).to_dict())
    assert set(bundle) == {"application/vnd.plotly.v1+json", "image/png"}


def test_circuit_heatmaps_mark_each_circuit_and_the_shared_heads():
    circuit_heatmaps = figures.circuit_heatmaps

    a = HeadScores.from_matrix(np.arange(12.0).reshape(3, 4) - 6, SCORES.provenance)
    b = HeadScores.from_matrix(np.ones((3, 4)), SCORES.provenance)
    figure = circuit_heatmaps(
        {"ioi": a, "copy": b}, {"ioi": ["L2H3", "L0H1"], "copy": ["L2H3"]}, "t"
    )
    heatmaps = [t for t in figure.data if t.type == "heatmap"]
    assert [h.zmin for h in heatmaps] == [-6.0, -6.0] and heatmaps[0].zmax == 6.0
    marks = {(t.xaxis, t.name): (list(t.x), list(t.y)) for t in figure.data if t.type == "scatter"}
    assert marks[("x", "circuit heads")] == ([1, 3], [0, 2])
    assert marks[("x2", "circuit heads")] == ([3], [2])
    assert marks[("x2", "shared heads")] == ([3], [2])
    with pytest.raises(ConfigError, match="same tasks"):
        circuit_heatmaps({"ioi": a}, {"copy": []}, "t")


def test_effect_sweep_draws_each_difference_with_its_own_interval():
    import pandas as pd

    rows = pd.DataFrame(
        {
            "parameter": [1.0, 2.0],
            "difference": [0.0, 0.1],
            "ci_low": [0.0, -0.2],
            "ci_high": [0.0, 0.3],
        }
    )
    trace = figures.effect_sweep(rows, "VHR alpha", "sweep").data[0]
    assert list(trace.x) == [1.0, 2.0] and list(trace.y) == [0.0, 0.1]
    assert np.allclose(trace.error_y.array, [0.0, 0.2])
    assert np.allclose(trace.error_y.arrayminus, [0.0, 0.3])
