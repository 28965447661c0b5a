"""`interp score vision`: image attention, VHD and visual sinks of a vision-language model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from interp.cli.common import (
    DeviceMapOption,
    DeviceOption,
    DtypeOption,
    MaxMemoryOption,
    ModelOption,
    OffloadFolderOption,
    StaticOption,
    load_model_or_fail,
    parse_ints,
    placement,
    require_vision_model,
    result_folder,
    stage_bars,
    start_record,
    user_errors,
    write_outputs,
)


def score_vision(
    images: Annotated[
        Path, typer.Option("--images", "-i", help="Folder of images (sorted by name).")
    ],
    model: Annotated[str | None, ModelOption] = None,
    prompts: Annotated[
        Path | None,
        typer.Option(
            "--prompts",
            "-p",
            help="Prompt file (.jsonl 'text' per line, or .txt separated by blank lines): one"
            " prompt for every image, or one per image. Default: VHR's CHAIR prompt,"
            " 'Please describe this image in detail.'",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output folder. Default: results/vision-<model>-<time>."),
    ] = None,
    tau: Annotated[float, typer.Option(help="Sink threshold on |x_d|/RMS(x) (VAR: 20).")] = 20.0,
    sink_dims: Annotated[
        str | None,
        typer.Option(help="Sink dimensions D_sink, comma-separated (default: every dimension)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts per forward.")] = 8,
    device: Annotated[str, DeviceOption] = "cpu",
    device_map: Annotated[str | None, DeviceMapOption] = None,
    max_memory: Annotated[str | None, MaxMemoryOption] = None,
    offload_folder: Annotated[Path | None, OffloadFolderOption] = None,
    dtype: Annotated[str | None, DtypeOption] = None,
    static: Annotated[bool, StaticOption] = True,
) -> None:
    """Score every head's image attention and VHD, find visual sinks; write tables and figures."""
    record = start_record("score vision", locals())
    with user_errors():
        from probes import vision_scores

        require_vision_model(model, "score vision")
        files, texts = vision_scores.load_inputs(images, prompts)
        config = vision_scores.VisionScoresConfig(
            tau=tau, sink_dims=parse_ints(sink_dims, minimum=0), batch_size=batch_size
        )
        folder = result_folder(out, "vision", model, record)
        record.inputs([*files, *([prompts] if prompts else [])])
        loaded = load_model_or_fail(model, device, **placement(locals()))
        with stage_bars("batch") as update:
            scores = vision_scores.score_images(loaded, texts, files, config, progress=update)
        if scores.patch_note:
            typer.echo(f"note: {scores.patch_note}", err=True)
        write_outputs(
            folder,
            record,
            tables=scores.tables,
            figures=scores.figures,
            static=static,
            provenance=scores.tables["vhd_per_head"].provenance.to_dict(),
            geometry=vars(loaded.geometry),
            images=len(files),
        )
        sinks, candidates = scores.tables["visual_sinks"].data, scores.tables["sink_dims"].data
        top = scores.tables["vhd_per_head"].data.nlargest(5, "score")
        typer.echo(f"{len(files)} images scored -> {folder}")
        typer.echo(
            "highest VHD: " + ", ".join(f"{r.label} ({r.score:.3g})" for r in top.itertuples())
        )
        typer.echo(
            f"visual sinks: {int(sinks.visual_sink.sum())} (layer, image token) pairs at"
            f" tau {tau:g}; candidate sink dims: {candidates['dim'].head(5).tolist()}"
        )
