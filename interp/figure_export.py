"""Static export of figures (HTML, PNG, SVG, PDF), paper sizes and the notebook renderer.

`export` writes HTML always, and PNG/SVG/PDF through kaleido when a Chromium is installed,
reusing one browser for all figures (about 2.5 s per figure saved against launching one per
call). Sizes, paper presets and the notebook renderer: docs/methods.md §7.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

STATIC_FORMATS = ("png", "svg", "pdf")
CSS_DPI = 96  # plotly's pixels are CSS pixels


@dataclass(frozen=True)
class PaperSize:
    """A figure size for a paper: width in inches and font size in points.

    Plotly lays figures out in CSS pixels, 96 per inch, so `width_px` and `font_px` are the
    sizes at which the figure, placed at `width_in`, shows `font_pt` text; export PNGs with
    `scale` (= dpi / 96) to get `dpi` dots per inch. PDF and SVG keep the physical size.
    """

    width_in: float
    font_pt: float
    dpi: int = 300

    @property
    def width_px(self) -> int:
        return round(self.width_in * CSS_DPI)

    @property
    def font_px(self) -> float:
        return self.font_pt * CSS_DPI / 72

    @property
    def scale(self) -> float:
        return self.dpi / CSS_DPI


# Column and text widths of the common two-column layout (ICML, ACL: 3.25 in and 6.75 in).
PAPER = {
    "one-column": PaperSize(width_in=3.25, font_pt=8),
    "two-column": PaperSize(width_in=6.75, font_pt=9),
}


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
    formats: str | Sequence[str] = STATIC_FORMATS,
    scale: float = 1.0,
) -> list[Path]:
    """Write each figure as `<name>.html` and, if a Chromium exists, in `formats`.

    Args:
        figures: name -> figure.
        folder: created if missing.
        formats: one static format ("png") or several; empty for HTML only.
        scale: pixel multiplier of PNGs (`PAPER[...].scale` gives 300 dpi for a paper size).

    Returns the written paths. Without a Chromium only HTML is written; callers check
    `chromium_path()` to tell the user why.
    """
    formats = [formats] if isinstance(formats, str) else list(formats)
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
                pio.write_image(figure, path, format=fmt, scale=scale)
                written.append(path)
    return written


def use_notebook_renderer() -> str:
    """Show figures in notebooks as interactive plotly JSON plus a static PNG fallback.

    JupyterLab draws the interactive figure; nbconvert's HTML and code hosts (GitHub,
    GitLab), which drop plotly's JSON, show the PNG. The PNG needs kaleido's Chromium;
    without one the renderer is JSON only and a warning says why. Sets plotly's global
    default renderer (call it once, at the top of a notebook) and returns its name.
    """
    if chromium_path() is None:
        warnings.warn(
            "No Chromium found: notebook figures are plotly JSON only and will not show in"
            " nbconvert HTML or on code hosts. Install Debian's `chromium` (make install does)"
            " or set BROWSER_PATH.",
            stacklevel=2,
        )
        pio.renderers.default = "plotly_mimetype"
    else:
        pio.renderers.default = "plotly_mimetype+png"
    return pio.renderers.default
