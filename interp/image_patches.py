"""Which pixels each image token sees: the map from image tokens to vision-tower patches.

A VLM's image tokens stand for patches of the image *as the vision tower saw it* (resized,
cropped or tiled by the processor): a *view* is one [3, height, width] image of the
processor's `pixel_values`. `patch_table(model, inputs, row)` gives every image token of a
prepared row its view and its box in that view's pixels, so per-token results (visual sinks)
can be drawn on the image; `view_image` turns a view back into RGB pixels (the processor's
normalisation undone).

Exact for:
* LLaVA-1.5 (`llava`): each image is one view, cut into a (height / patch) x (width / patch)
  grid whose tokens come row-major; with `vision_feature_select_strategy="full"` each
  image's first token is the CLS feature (no box; `patch_row` = -1).
* Idefics3 (`idefics3`): each view (the image, or with splitting each tile then the global
  image, in the processor's order) gives (grid / s)^2 tokens after the pixel shuffle, token
  k covering the s x s patches of block (k // (grid / s), k % (grid / s)).
* PaliGemma (`paligemma`): each image is one view, one token a patch, row-major.
* Gemma 3 (`gemma3`): each image is one view; its patches are average-pooled over square
  blocks into `mm_tokens_per_image` tokens, row-major, each covering its block's pixels.
  Pan-and-scan crops are refused.
* LLaVA-NeXT and LLaVA-OneVision (`llava_next`, `llava_onevision`): the base view, then the
  tiles' joined grid cropped to the image's aspect, row-major, a newline token (no box)
  after each row (`interp.image_tiles`). A OneVision image whose features the model
  shrinks (more than `vision_aspect_ratio` allows) is refused: its tokens blend patches.
* Qwen2-VL and Qwen2.5-VL (`qwen2_vl`, `qwen2_5_vl`): each image is one view of its
  `image_grid_thw` patches; a token covers a merged square of `spatial_merge_size` patches,
  row-major. The view is put back together from the processor's flattened patches.
Refused (one line): every other architecture. Memory: the table.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from interp.errors import InputError, UnsupportedModelError
from interp.image_layouts import patch_grid, patch_layout, row_views
from interp.image_tiles import Record, anyres_images, merged_images, merged_view
from interp.inputs import ModelInputs, TokenKind
from interp.models import Model

COLUMNS = ["position", "view", "token", "patch_row", "patch_col", "top", "left", "bottom", "right"]


def patch_table(model: Model, inputs: ModelInputs, row: int = 0) -> pd.DataFrame:
    """Every image token of one prepared row, with its view and pixel box.

    Args:
        model: a VLM of `interp.image_layouts.PATCH_MAPS` with its processor.
        inputs: `model.prepare(...)` of the batch.
        row: the batch row.

    Returns:
        One row per image token: `position` (in the prompt alone, padding removed, as in
        `probes.visual_sinks`), `view` (index into `view_image`), `token` (its index in
        its view), `patch_row`/`patch_col` (its block of the view's grid) and the box
        `top`, `left`, `bottom`, `right` (pixels of the view, bottom/right exclusive);
        a token without a box (LLaVA's CLS, LLaVA-NeXT's newlines) has -1 in all six.

    Raises:
        UnsupportedModelError: another architecture, Gemma 3's pan-and-scan crops, or a
            OneVision image whose features the model shrinks.
        InputError: a row whose image tokens do not fill its views' grids.

    Example:
        >>> from interp.tiny_models import tiny_llava
        >>> model = tiny_llava()
        >>> inputs = model.prepare("what?", np.zeros((20, 30, 3), np.uint8))
        >>> patch_table(model, inputs).iloc[5][["patch_row", "patch_col", "top", "left"]].tolist()
        [1, 1, 8, 8]
    """
    config = model.hf.config
    layout = patch_layout(config)
    if getattr(model.processor.image_processor, "do_pan_and_scan", False):
        raise UnsupportedModelError(
            "The image token-to-patch map does not follow pan-and-scan crops: turn"
            " do_pan_and_scan off in the image processor."
        )
    kinds = inputs.kinds[row].cpu()
    real = (kinds != TokenKind.PADDING).nonzero().flatten()
    positions = (kinds[real] == TokenKind.IMAGE).nonzero().flatten().tolist()
    if layout == "grid":
        records, what = _grid_records(config, inputs, row)
    else:
        images = (anyres_images if layout == "anyres" else merged_images)(config, inputs)
        records, what = _row_records(images, inputs.n_image_tokens, row)
    if len(records) != len(positions):
        raise InputError(
            f"Row {row} has {len(positions)} image tokens, which do not fill its {what}."
        )
    frame = pd.DataFrame(records, columns=COLUMNS[1:])
    frame.insert(0, "position", positions)
    return frame


def _grid_records(config: Any, inputs: ModelInputs, row: int) -> tuple[list[Record], str]:
    """One grid a view (LLaVA-1.5, Idefics3, PaliGemma, Gemma 3)."""
    size, cls = patch_grid(config)
    height, width = inputs["pixel_values"].shape[-2:]
    grid = [(-1, -1)] * cls + [(r, c) for r in range(height // size) for c in range(width // size)]
    first, n_views = row_views(config, inputs, row, len(grid))
    boxes = [(r * size, c * size, (r + 1) * size, (c + 1) * size) for r, c in grid]
    records = [
        (view, token, r, c, *(box if r >= 0 else (-1, -1, -1, -1)))
        for view in range(first, first + n_views)
        for token, ((r, c), box) in enumerate(zip(grid, boxes, strict=True))
    ]
    return records, f"{n_views} image view(s) of {len(grid)} tokens each"


def _row_records(
    images: list[list[Record]], counts: list[int], row: int
) -> tuple[list[Record], str]:
    """The records of a row's images, out of the batch's images in row order."""
    start, stop = sum(counts[:row]), sum(counts[: row + 1])
    records: list[Record] = []
    seen, n_images = 0, 0
    for image in images:
        if start <= seen < stop:
            records += image
            n_images += 1
        seen += len(image)
    return records, f"{n_images} image(s) of {[len(i) for i in images]} tokens in the batch"


def view_image(model: Model, inputs: ModelInputs, view: int) -> np.ndarray:
    """A view as the tower saw it: [height, width, 3] uint8, the processor's normalisation
    (mean, std, rescale) undone."""
    config = model.hf.config
    if patch_layout(config) == "merged":  # flattened patches, one view an image
        n_views = len(inputs["image_grid_thw"])
        pixels = merged_view(config, inputs, view) if 0 <= view < n_views else None
    else:  # [views, 3, H, W], or [images or rows, views, 3, H, W] flattened
        flat = inputs["pixel_values"].reshape(-1, *inputs["pixel_values"].shape[-3:])
        n_views = flat.shape[0]
        pixels = flat[view] if 0 <= view < n_views else None
    if pixels is None:
        raise InputError(f"No view {view}: the inputs hold {n_views}.")
    processor = model.processor.image_processor
    mean = torch.tensor(getattr(processor, "image_mean", None) or [0.0] * 3)
    std = torch.tensor(getattr(processor, "image_std", None) or [1.0] * 3)
    scale = float(getattr(processor, "rescale_factor", 1 / 255))
    x = pixels.detach().float().cpu() * std[:, None, None] + mean[:, None, None]
    return (x / scale).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
