"""`interp score vision`: image attention, VHD and visual sinks of a vision-language model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from interp.cli.common import require_vision_model, stage_bars
from interp.cli.options import Run, command
from probes.vision_scores import VisionScoresConfig

PromptsOption = typer.Option(
    "--prompts",
    "-p",
    help="Prompt file (.jsonl 'text' per line, or .txt separated by blank lines): one prompt"
    " for every image, or one per image. Default: VHR's CHAIR prompt, 'Please describe this"
    " image in detail.'",
)


@command("score vision")
def score_vision(
    run: Run,
    config: VisionScoresConfig,
    images: Annotated[Path, typer.Option("--images", "-i", help="Folder of images, by name.")],
    prompts: Annotated[Path | None, PromptsOption] = None,
) -> None:
    """Score every head's image attention and VHD, find visual sinks; write tables and figures."""
    from probes import vision_scores

    require_vision_model(run.model_spec, "score vision")
    files, texts = vision_scores.load_inputs(images, prompts)
    run.folder()
    run.record.inputs([*files, *([prompts] if prompts else [])])
    model = run.load_model()
    with stage_bars("batch") as update:
        scores = vision_scores.score_images(model, texts, files, config, progress=update)
    if scores.patch_note:
        typer.echo(f"note: {scores.patch_note}", err=True)
    run.write(
        tables=scores.tables,
        figures=scores.figures,
        provenance=scores.tables["vhd_per_head"].provenance.to_dict(),
        geometry=vars(model.geometry),
        images=len(files),
    )
    run.report([f"{len(files)} images scored", *scores.summary_lines()])
