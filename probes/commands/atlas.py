"""`interp atlas`: every method's scores for every head of a model, in one table.

Runs `interp.atlas.build_atlas` with the output folder as its work folder: each method
works (and resumes) in `<out>/<method>/`, each finished method is recorded in the folder's
work log, so a stopped atlas resumes with the same `--out`. Writes heads, relations and
flagged (parquet + CSV), each method's tables under `<method>/`, the example attention
(`example.npz`), the atlas page (`atlas.html`, `interp.atlas_page`), each method's grid
and the relations figure under `figures/` (`interp.atlas_figures`), and the manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from interp.atlas import METHODS_BY_NAME, AtlasSettings
from interp.cli.common import parse_items, stage_bars
from interp.cli.options import Run, command

if TYPE_CHECKING:
    from interp.atlas import Atlas

UNITS = {"atlas": "method", "generation": "problem", "anchor passes": "trace-pass"}
# The atlas stage comes back after each method's own stages, so its bar is a plain one.
RESUMABLE = ("retrieval tests", "retrieval masking", "anchor passes")

Methods = Annotated[
    str | None,
    typer.Option(help=f"Comma-separated methods (default: all): {', '.join(METHODS_BY_NAME)}."),
]


@command("atlas")
def atlas(run: Run, settings: AtlasSettings, methods: Methods = None) -> None:
    """Score every head with every method; one per-head table, relations, flagged heads."""
    from interp.atlas import build_atlas, check_methods
    from interp.runs import log_files

    chosen = check_methods(parse_items(methods, str, "--methods"))
    folder = run.folder()
    model = run.load_model()
    with stage_bars(UNITS, resumable=RESUMABLE) as progress:
        found = build_atlas(model, chosen, settings, folder, progress)
    if run.writes:  # rank 0 alone under torchrun
        run.record.wrote([*found.save(folder), *draw(folder, found, run.static)])
    run.record.wrote(log_files(folder))
    run.write(
        provenance=found.provenance.to_dict(),
        geometry=vars(model.geometry),
        methods=list(found.parts),
        skipped=found.skipped,
        rows=len(found.heads.data),
        flagged_by_all=found.flagged_by_all(),
    )
    run.report(found.summary_lines())


def draw(folder: Path, found: Atlas, static: bool) -> list[Path]:
    """The atlas page (atlas.html) and the figures (figures/: HTML, and PNG/SVG/PDF when
    `static` and a Chromium exists); returns the files written."""
    from interp.atlas_figures import write_atlas_figures
    from interp.atlas_page import write_atlas_page
    from interp.figure_export import STATIC_FORMATS

    heads, relations, provenance = found.heads.data, found.relations.data, found.provenance
    example = {"tokens": found.example.tokens, "patterns": found.example.patterns}
    page = write_atlas_page(folder / "atlas.html", heads, relations, provenance, example)
    formats = STATIC_FORMATS if static else ()
    return [page, *write_atlas_figures(folder / "figures", heads, relations, provenance, formats)]
