"""`interp score vision` in one call: image attention, VHD and visual sinks of a VLM.

Runs the three analyzers (`probes.vision.image_attention`, `vision_head_divergence`,
`probes.visual_sinks.visual_sinks`) on the same images and prompts, and assembles what the
command writes: their tables, the per-head averages, the candidate sink dimensions, the
sink-patch map (where the architecture has an exact token-to-patch map) and the figures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interp.config import Config
from interp.errors import InputError, UnsupportedModelError
from interp.models import Model
from interp.results import HeadScores, ItemTable, TokenScores
from interp.work import StageProgress, for_stage
from probes import vision, visual_sinks

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
DEFAULT_PROMPT = "Please describe this image in detail."  # VHR's CHAIR prompt
MAX_PATCH_FIGURES = 8  # one figure per image view, for the first views


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


def load_inputs(images: Path, prompts: Path | None = None) -> tuple[list[Path], list[str]]:
    """(image files, one prompt each) from a folder and a prompt file (default: VHR's).

    Every image is opened here, so a bad or oversized one fails before a model loads.
    """
    from interp.inputs import load_image
    from interp.prompts import load_prompts

    files = image_files(images)
    for file in files:
        load_image(file)
    return files, paired_prompts(load_prompts(prompts) if prompts else [DEFAULT_PROMPT], len(files))


@dataclass(frozen=True, kw_only=True)
class VisionScoresConfig(visual_sinks.VisualSinkConfig):
    """The workflow's parameters: the visual-sink analyzer's (tau, sink_dims, batch_size),
    which image attention shares and VHD takes the batch size of."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.analyzers()  # their range checks, before any work

    def analyzers(self) -> dict[str, tuple[Callable[..., Any], Config]]:
        """Each analyzer, by its table's name, with its config."""
        shared = {"tau": self.tau, "sink_dims": self.sink_dims, "batch_size": self.batch_size}
        return {
            "image_attention": (vision.image_attention, vision.ImageAttentionConfig(**shared)),
            "vhd": (vision.vision_head_divergence, vision.VhdConfig(batch_size=self.batch_size)),
            "visual_sinks": (visual_sinks.visual_sinks, visual_sinks.VisualSinkConfig(**shared)),
        }


@dataclass(frozen=True)
class VisionScores:
    """What `score_images` returns.

    Attributes:
        tables: by file name: each analyzer's table, the per-head averages of image
            attention and VHD, the candidate sink dimensions, and the sink patches if any.
        figures: the layer x head maps and the sink-patch figures.
        patch_note: why there is no sink-patch map, or None.
    """

    tables: dict[str, HeadScores | TokenScores | ItemTable]
    figures: dict[str, Any]
    patch_note: str | None

    def summary_lines(self) -> list[str]:
        """The heads of highest VHD, and the visual sinks and candidate sink dimensions."""
        sinks = self.tables["visual_sinks"]
        top = self.tables["vhd_per_head"].data.nlargest(5, "score")
        dims = self.tables["sink_dims"].data["dim"].head(5).tolist()
        return [
            "highest VHD: " + ", ".join(f"{r.label} ({r.score:.3g})" for r in top.itertuples()),
            f"visual sinks: {int(sinks.data.visual_sink.sum())} (layer, image token) pairs at"
            f" tau {sinks.provenance.config['tau']:g}; candidate sink dims: {dims}",
        ]


def score_images(
    model: Model,
    prompts: Sequence[str],
    images: Sequence[Path],
    config: VisionScoresConfig | None = None,
    progress: StageProgress | None = None,
) -> VisionScores:
    """Score every head's image attention and VHD and find the visual sinks.

    `progress(stage, done, total)` reports each analyzer, by its table's name.

    Example:
        >>> files, texts = load_inputs(Path("images"))  # doctest: +SKIP
        >>> scores = score_images(model, texts, files)  # doctest: +SKIP
    """
    from interp.figures import head_heatmap

    config = config or VisionScoresConfig()
    texts, paths = list(prompts), [str(f) for f in images]
    runs = config.analyzers()
    results = {}
    for name, (analyzer, settings) in runs.items():
        report = for_stage(progress, name)
        results[name] = analyzer(model, texts, paths, settings, progress=report)
    per_head = {
        name: HeadScores(results[name].per_head(), results[name].provenance)
        for name in ("image_attention", "vhd")
    }
    sinks = results["visual_sinks"]
    tables = {
        **results,
        **{f"{name}_per_head": table for name, table in per_head.items()},
        "sink_dims": ItemTable(visual_sinks.sink_dimensions(sinks), sinks.provenance),
    }
    figures = {
        "image_attention": head_heatmap(
            per_head["image_attention"], "score", "Attention share on image tokens"
        ),
        "vhd": head_heatmap(per_head["vhd"], "score", "Vision-aware head divergence"),
    }
    try:
        patches = visual_sinks.sink_patches(model, texts, paths, sinks)
    except UnsupportedModelError as exc:
        return VisionScores(tables, figures, f"no sink-patch figure: {exc}")
    tables["sink_patches"] = ItemTable(patches, sinks.provenance)
    figures.update(_patch_figures(model, texts, paths, patches))
    return VisionScores(tables, figures, None)


def _patch_figures(model: Model, texts: list[str], paths: list[str], table: Any) -> dict[str, Any]:
    """A figure of the sink patches for each of the first image views."""
    from interp.figures import sink_patch_figure
    from interp.image_patches import view_image

    figures = {}
    views = table[["example", "view"]].drop_duplicates().head(MAX_PATCH_FIGURES)
    for example, view in views.itertuples(index=False):
        inputs = model.prepare(texts[example], paths[example])
        rows = table[(table.example == example) & (table.view == view)]
        name = Path(paths[example]).name + (f" (view {view})" if table.view.max() else "")
        figures[f"sink_patches_{example}_{view}"] = sink_patch_figure(
            view_image(model, inputs, view), rows, f"Visual sink patches: {name}"
        )
    return figures
