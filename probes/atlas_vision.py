"""The head atlas's vision columns, for a vision-language model: image attention, VHD, VHR, VAR.

`vision` runs `probes.vision_scores.score_images` (what `interp score vision` runs) on
shapes-llava's held-out scenes (`probes.organisms.shapes`), one POPE question each (the
adversarial setting, as benchmarks/shapes_llava.py reads them), and gives each head of the
model, as means over the prompts:

- `image_share`: attention on the image tokens from the text rows after the image;
- `nonsink_share`: the share of that attention on image tokens that are not sinks;
- `vhd`: vision-aware head divergence after the outlier filter (He et al. 2025);
- `vhr_chosen`: VHR would reinforce the head (in `vhr_layers`, above its layer's median
  VHD) on at least half of the prompts; VHR chooses per prompt;
- `var_image_centric`: VAR's image-centric test holds for the head's mean row on at least
  half of the prompts: image share >= `min_image_share`, non-sink share >= rho, in
  `var_layers`, with a visual sink in the layer (VAR tests each query row; Kang et al. 2025).

shapes-llava reads its prompts in its chat format; another VLM gets the bare question with
its image in front. A text-only model raises `NotApplicable`. The scores record no work to
resume. Quick mode reads `QUICK_SCENES` scenes instead of `SCENES`. Cost: the workflow's,
three forwards of the prompts (one of twice the batch, for VHD) and its figures; memory
[batch, layer, head] scores (docs/methods.md §10).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
from PIL import Image

from interp.atlas_part import AtlasPart, AtlasSettings, NotApplicable, method_heads
from interp.interventions.var import VarConfig, var_layers
from interp.interventions.vhr import VhrConfig, vhr_layers
from interp.models import Model
from interp.work import StageProgress
from probes.organisms.shapes.hallucination import pope_questions
from probes.organisms.shapes.model import SPEC, prompt
from probes.organisms.shapes.scenes import held_out_seeds, render, scenes
from probes.vision_scores import VisionScoresConfig, score_images

METHOD = "vision"
SCENES = 32  # benchmarks/shapes_llava.py's head maps
QUICK_SCENES = 4
MAJORITY = 0.5  # a per-prompt choice counts for the head on at least this share of prompts


def vision(
    model: Model, settings: AtlasSettings, folder: Path | None, progress: StageProgress | None
) -> AtlasPart:
    """Every head's image attention, non-sink visual share, VHD, VHR and VAR choices.

    `folder` is not used: the scores have no recorded items to resume from.

    Raises:
        NotApplicable: a text-only model.

    Example:
        >>> from interp.atlas_part import AtlasSettings
        >>> from interp.models import load_model
        >>> model = load_model("shapes-llava")  # doctest: +SKIP
        >>> part = vision(model, AtlasSettings(quick=True), None, None)  # doctest: +SKIP
        >>> part.heads["vision_vhr_chosen"].dtype  # doctest: +SKIP
        dtype('bool')
    """
    del folder
    if model.processor is None:
        raise NotApplicable(
            f"The vision columns need a vision-language model; {model.spec} is text-only."
        )
    n = QUICK_SCENES if settings.quick else SCENES
    texts, images = pope_prompts(n)
    if model.spec == SPEC:
        texts = [prompt(text) for text in texts]
    config = VisionScoresConfig()
    with tempfile.TemporaryDirectory() as tmp:  # the workflow reads image files
        files = []
        for index, image in enumerate(images):
            files.append(Path(tmp) / f"scene_{index:03d}.png")
            image.save(files[-1])
        scores = score_images(model, texts, files, config, progress)
    tables = {name: table.data for name, table in scores.tables.items()}
    columns = vision_columns(tables, model.geometry.n_layers)
    return AtlasPart(
        method_heads(model.geometry, METHOD, columns),
        tables,
        {"scenes": n, "pope": "adversarial", "config": config.to_dict()},
    )


def pope_prompts(n: int) -> tuple[list[str], list[Image.Image]]:
    """The first POPE question (adversarial) and the image of each of `n` held-out scenes."""
    truths = scenes(held_out_seeds(n))
    first = {q.scene: q for q in reversed(pope_questions(truths, "adversarial"))}
    return [first[i].text for i in range(n)], [render(scene) for scene in truths]


def vision_columns(tables: dict[str, pd.DataFrame], n_layers: int) -> pd.DataFrame:
    """The atlas columns from `score_images`'s tables (by name): its per-head means, and
    whether VHR and VAR choose each head on at least `MAJORITY` of the prompts."""
    shares, vhd = tables["image_attention"], tables["vhd"]
    var = VarConfig()
    sinks = tables["visual_sinks"].groupby(["example", "layer"])["visual_sink"].any()
    rows = pd.MultiIndex.from_frame(shares[["example", "layer"]])
    chosen = {
        "vhr_chosen": vhd.assign(
            chosen=vhd["chosen"] & vhd["layer"].isin(vhr_layers(n_layers, VhrConfig()))
        ),
        "var_image_centric": shares.assign(
            chosen=(shares["score"] >= var.min_image_share)
            & (shares["nonsink_share"] >= var.min_nonsink_share)
            & shares["layer"].isin(var_layers(n_layers, var))
            & sinks.reindex(rows, fill_value=False).to_numpy()
        ),
    }
    columns = tables["image_attention_per_head"][["layer", "head", "score", "nonsink_share"]]
    columns = columns.rename(columns={"score": "image_share"}).merge(
        tables["vhd_per_head"][["layer", "head", "score"]].rename(columns={"score": "vhd"})
    )
    for name, table in chosen.items():
        share = table.groupby(["layer", "head"])["chosen"].mean().rename(name) >= MAJORITY
        columns = columns.merge(share.reset_index(), on=["layer", "head"])
    return columns
