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
Refused (one line): LLaVA-NeXT and LLaVA-OneVision, whose tiles are unpadded to the image's
aspect and interleaved with newline tokens, and every other architecture. Memory: the table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from interp.errors import InputError, UnsupportedModelError
from interp.image_layouts import patch_grid, row_views
from interp.inputs import ModelInputs, TokenKind
from interp.models import Model

COLUMNS = ["position", "view", "token", "patch_row", "patch_col", "top", "left", "bottom", "right"]


def patch_table(model: Model, inputs: ModelInputs, row: int = 0) -> pd.DataFrame:
    """Every image token of one prepared row, with its view and pixel box.

    Args:
        model: a LLaVA-1.5, Idefics3, PaliGemma or Gemma 3 model with its processor.
        inputs: `model.prepare(...)` of the batch.
        row: the batch row.

    Returns:
        One row per image token: `position` (in the prompt alone, padding removed, as in
        `probes.visual_sinks`), `view` (index into `view_image`), `token` (its index in
        its view), `patch_row`/`patch_col` (its block of the grid; -1 for CLS) and the box
        `top`, `left`, `bottom`, `right` (pixels of the view, bottom/right exclusive).

    Raises:
        UnsupportedModelError: another architecture (LLaVA-NeXT included), or Gemma 3's
            pan-and-scan crops.
        InputError: a row whose image tokens do not fill its views' grids.

    Example:
        >>> from interp.tiny_models import tiny_llava
        >>> model = tiny_llava()
        >>> inputs = model.prepare("what?", np.zeros((20, 30, 3), np.uint8))
        >>> patch_table(model, inputs).iloc[5][["patch_row", "patch_col", "top", "left"]].tolist()
        [1, 1, 8, 8]
    """
    config = model.hf.config
    size, cls = patch_grid(config)
    if getattr(model.processor.image_processor, "do_pan_and_scan", False):
        raise UnsupportedModelError(
            "The image token-to-patch map does not follow pan-and-scan crops: turn"
            " do_pan_and_scan off in the image processor."
        )
    kinds = inputs.kinds[row].cpu()
    real = (kinds != TokenKind.PADDING).nonzero().flatten()
    positions = (kinds[real] == TokenKind.IMAGE).nonzero().flatten().tolist()
    height, width = inputs["pixel_values"].shape[-2:]
    grid = [(-1, -1)] * cls + [(r, c) for r in range(height // size) for c in range(width // size)]
    first, n_views = row_views(config, inputs, row, len(grid))
    boxes = [(r * size, c * size, (r + 1) * size, (c + 1) * size) for r, c in grid]
    records = [
        (view, token, r, c, *(box if r >= 0 else (-1, -1, -1, -1)))
        for view in range(first, first + n_views)
        for token, ((r, c), box) in enumerate(zip(grid, boxes, strict=True))
    ]
    if len(records) != len(positions):
        raise InputError(
            f"Row {row} has {len(positions)} image tokens, which do not fill its {n_views}"
            f" image view(s) of {len(grid)} tokens each."
        )
    frame = pd.DataFrame(records, columns=COLUMNS[1:])
    frame.insert(0, "position", positions)
    return frame


def view_image(model: Model, inputs: ModelInputs, view: int) -> np.ndarray:
    """A view as the tower saw it: [height, width, 3] uint8, the processor's normalisation
    (mean, std, rescale) undone."""
    pixels = inputs["pixel_values"]
    flat = pixels.reshape(-1, *pixels.shape[-3:])  # Idefics3's [batch, views] flattened
    if not 0 <= view < flat.shape[0]:
        raise InputError(f"No view {view}: the inputs hold {flat.shape[0]}.")
    processor = model.processor.image_processor
    mean = torch.tensor(getattr(processor, "image_mean", None) or [0.0] * 3)
    std = torch.tensor(getattr(processor, "image_std", None) or [1.0] * 3)
    scale = float(getattr(processor, "rescale_factor", 1 / 255))
    x = flat[view].detach().float().cpu() * std[:, None, None] + mean[:, None, None]
    return (x / scale).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
