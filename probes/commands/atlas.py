"""`interp atlas`: every method's scores for every head of a model, in one table.

Runs `interp.atlas.build_atlas` with the output folder as its work folder: each method
works (and resumes) in `<out>/<method>/`, each finished method is recorded in the folder's
work log, so a stopped atlas resumes with the same `--out`. Writes heads, relations and
flagged (parquet + CSV), each method's tables under `<method>/`, the example attention
(`example.npz`), the atlas page when its module is installed, and the manifest.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from interp.atlas import METHODS_BY_NAME, AtlasSettings
from interp.cli.common import parse_items, stage_bars
from interp.cli.options import Run, command

if TYPE_CHECKING:
    from interp.atlas import Atlas

# The atlas page, reached by name as the methods are: the command writes it once it exists.
PAGE_WRITER = "interp.atlas_page:write_atlas_page"
UNITS = {"atlas": "method", "generation": "problem", "anchor passes": "trace-pass"}
# The atlas stage comes back after each method's own stages, so its bar is a plain one.
RESUMABLE = ("retrieval tests", "retrieval masking", "anchor passes")

Methods = Annotated[
    str | None,
    typer.Option(help=f"Comma-separated methods (default: all): {', '.join(METHODS_BY_NAME)}."),
]


@command("atlas", figures=False)
def atlas(run: Run, settings: AtlasSettings, methods: Methods = None) -> None:
    """Score every head with every method; one per-head table, relations, flagged heads."""
    from interp.atlas import build_atlas, check_methods
    from interp.runs import LOG_FILE

    chosen = check_methods(parse_items(methods, str, "--methods"))
    folder = run.folder()
    model = run.load_model()
    with stage_bars(UNITS, resumable=RESUMABLE) as progress:
        found = build_atlas(model, chosen, settings, folder, progress)
    run.record.wrote([*found.save(folder), *write_page(folder, found), folder / LOG_FILE])
    run.write(
        provenance=found.provenance.to_dict(),
        geometry=vars(model.geometry),
        methods=list(found.parts),
        skipped=found.skipped,
        rows=len(found.heads.data),
        flagged_by_all=found.flagged_by_all(),
    )
    run.report(found.summary_lines())


def write_page(folder: Path, found: Atlas) -> list[Path]:
    """The atlas page (atlas.html) by `PAGE_WRITER`; nothing while its module is absent."""
    module, attribute = PAGE_WRITER.split(":")
    try:
        writer = getattr(importlib.import_module(module), attribute)
    except ModuleNotFoundError:
        typer.echo(f"note: no atlas page ({module} is not installed).", err=True)
        return []
    example = {"tokens": found.example.tokens, "patterns": found.example.patterns}
    path = folder / "atlas.html"
    writer(path, found.heads.data, found.relations.data, found.provenance, example)
    return [path]
