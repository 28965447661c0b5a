"""`interp score vision`: image attention, VHD and visual sinks of a vision-language model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from interp.cli.common import (
    DeviceMapOption,
    DeviceOption,
    DtypeOption,
    MaxMemoryOption,
    ModelOption,
    OffloadFolderOption,
    StaticOption,
    export_figures,
    load_model_or_fail,
    parse_ints,
    placement,
    progress_bar,
    require_vision_model,
    result_folder,
    start_record,
    user_errors,
)
from interp.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
DEFAULT_PROMPT = "Please describe this image in detail."  # VHR's CHAIR prompt


def image_files(folder: Path) -> list[Path]:
    """The image files of a folder, sorted by name; InputError if there are none."""
    if not folder.is_dir():
        raise InputError(f"No folder at {folder}: --images takes a folder of image files.")
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise InputError(f"No image files ({', '.join(IMAGE_SUFFIXES)}) in {folder}.")
    return found


def paired_prompts(prompts: list[str], n_images: int) -> list[str]:
    """One prompt per image: the file's single prompt for all, or one each in order."""
    if len(prompts) == 1:
        return prompts * n_images
    if len(prompts) != n_images:
        raise InputError(
            f"Got {len(prompts)} prompts for {n_images} images: give one prompt for every"
            " image, or one per image (in the images' name order)."
        )
    return prompts


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
            f" prompt for every image, or one per image. Default: {DEFAULT_PROMPT!r}.",
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
        from interp.figures import head_heatmap
        from interp.inputs import load_image
        from interp.prompts import load_prompts
        from interp.results import HeadScores, ItemTable, csv_path
        from probes import vision, visual_sinks

        require_vision_model(model, "score vision")
        files = image_files(images)
        for file in files:  # a bad or oversized image fails here, before the model loads
            load_image(file)
        texts = paired_prompts(load_prompts(prompts) if prompts else [DEFAULT_PROMPT], len(files))
        dims = parse_ints(sink_dims, minimum=0)
        attention_config = vision.ImageAttentionConfig(
            tau=tau, sink_dims=dims, batch_size=batch_size
        )
        vhd_config = vision.VhdConfig(batch_size=batch_size)
        sink_config = visual_sinks.VisualSinkConfig(tau=tau, sink_dims=dims, batch_size=batch_size)
        folder = result_folder(out, "vision", model, record)
        record.inputs([*files, *([prompts] if prompts else [])])
        loaded = load_model_or_fail(model, device, **placement(locals()))
        paths = [str(f) for f in files]
        results = {}
        for name, run, config in (
            ("image_attention", vision.image_attention, attention_config),
            ("vhd", vision.vision_head_divergence, vhd_config),
            ("visual_sinks", visual_sinks.visual_sinks, sink_config),
        ):
            update, bar = progress_bar(len(files), name, unit="batch")
            with bar:
                results[name] = run(loaded, texts, paths, config, progress=update)  # type: ignore[operator]
        per_head = {
            name: HeadScores(results[name].per_head(), results[name].provenance)
            for name in ("image_attention", "vhd")
        }
        candidates = ItemTable(
            visual_sinks.sink_dimensions(results["visual_sinks"]),
            results["visual_sinks"].provenance,
        )
        tables = {
            **results,
            **{f"{name}_per_head": table for name, table in per_head.items()},
            "sink_dims": candidates,
        }
        for name, table in tables.items():
            path = table.save(folder / f"{name}.parquet", csv=True)
            record.wrote([path, csv_path(path)])
        figures = {
            "image_attention": head_heatmap(
                per_head["image_attention"], "score", "Attention share on image tokens"
            ),
            "vhd": head_heatmap(per_head["vhd"], "score", "Vision-aware head divergence"),
        }
        patches = _sink_patch_figures(loaded, texts, paths, results["visual_sinks"], figures)
        if patches is not None:
            path = patches.save(folder / "sink_patches.parquet", csv=True)
            record.wrote([path, csv_path(path)])
        written = export_figures(figures, folder, static)
        record.wrote(written)
        record.write(
            folder,
            provenance=per_head["vhd"].provenance.to_dict(),
            geometry=vars(loaded.geometry),
            images=len(files),
        )
        sinks = results["visual_sinks"].data
        top = per_head["vhd"].data.nlargest(5, "score")
        typer.echo(f"{len(files)} images scored -> {folder}")
        typer.echo(
            "highest VHD: " + ", ".join(f"{r.label} ({r.score:.3g})" for r in top.itertuples())
        )
        typer.echo(
            f"visual sinks: {int(sinks.visual_sink.sum())} (layer, image token) pairs at"
            f" tau {tau:g}; candidate sink dims: {candidates.data['dim'].head(5).tolist()}"
        )


MAX_PATCH_FIGURES = 8  # one figure per image view, for the first views


def _sink_patch_figures(
    model: Any, texts: list[str], paths: list[str], sinks: Any, figures: dict[str, Any]
) -> Any:
    """The sink-patch table (an ItemTable) and its figures, added to `figures`; None with a
    note where the architecture has no exact token-to-patch map."""
    from interp.errors import UnsupportedModelError
    from interp.figures import sink_patch_figure
    from interp.image_patches import view_image
    from interp.results import ItemTable
    from probes.visual_sinks import sink_patches

    try:
        table = sink_patches(model, texts, paths, sinks)
    except UnsupportedModelError as exc:
        typer.echo(f"note: no sink-patch figure: {exc}", err=True)
        return None
    views = table[["example", "view"]].drop_duplicates().head(MAX_PATCH_FIGURES)
    for example, view in views.itertuples(index=False):
        inputs = model.prepare(texts[example], paths[example])
        rows = table[(table.example == example) & (table.view == view)]
        name = Path(paths[example]).name + (f" (view {view})" if table.view.max() else "")
        figures[f"sink_patches_{example}_{view}"] = sink_patch_figure(
            view_image(model, inputs, view), rows, f"Visual sink patches: {name}"
        )
    return ItemTable(table, sinks.provenance)
