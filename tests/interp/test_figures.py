import numpy as np
import pytest

from interp import figures
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
    written = figures.export({"heat": figures.head_heatmap(SCORES)}, tmp_path, formats=())
    assert [p.name for p in written] == ["heat.html"]
    assert "plotly" in written[0].read_text()[:5000].lower()


@pytest.mark.skipif(figures.chromium_path() is None, reason="static export needs a Chromium")
def test_static_export_shares_one_browser(tmp_path):
    figs = {"a": figures.head_heatmap(SCORES), "b": figures.head_heatmap(SCORES, title="B")}
    written = figures.export(figs, tmp_path, formats=("png", "pdf"))
    assert sorted(p.name for p in written) == [
        "a.html",
        "a.pdf",
        "a.png",
        "b.html",
        "b.pdf",
        "b.png",
    ]
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "b.pdf").read_bytes()[:4] == b"%PDF"
