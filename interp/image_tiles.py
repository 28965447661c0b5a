"""Image tokens of tiled and merged views, for `interp.image_patches`.

Two layouts whose tokens do not form one grid per view:

* Any resolution (LLaVA-NeXT, LLaVA-OneVision): an image's views are the base view (the
  whole image resized to one tile) and the tiles of the pinpoint resolution the processor
  picked (`image_sizes`, the config's `image_grid_pinpoints`), row-major. Its tokens: the
  base view's grid, then the tiles' grids joined into one big grid, cropped to the image's
  aspect (the padding the processor added removed, centred, as the model unpads its
  features) and read row-major with a newline token after each row. An image the model
  does not tile (OneVision with several images in a prompt: `batch_num_images`) is its
  base view and one newline. OneVision bilinearly shrinks a cropped grid larger than
  `vision_aspect_ratio` (anyres_max_N: N tiles of features) allows; its tokens then blend
  patches, and that image is refused.
* Merged patches (Qwen2-VL, Qwen2.5-VL): each image is one view of `image_grid_thw` (1,
  h, w) patches; each token merges a square of `spatial_merge_size` patches, row-major.
  The processor hands the tower flattened patches, so a view's pixels are put back
  together from them (`merged_view`).

A token record is (view, token in view, patch row, patch column, top, left, bottom, right)
in view pixels; a newline token has no box (-1 everywhere but its image's base view).
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor
from transformers.image_processing_utils import select_best_resolution

from interp.errors import UnsupportedModelError

Record = tuple[int, int, int, int, int, int, int, int]


def _patch(view: int, row: int, col: int, per_row: int, size: int) -> Record:
    """A token covering block (row, col) of a view's grid of `size`-pixel squares."""
    box = (row * size, col * size, (row + 1) * size, (col + 1) * size)
    return (view, row * per_row + col, row, col, *box)


def anyres_images(config: Any, inputs: Any) -> list[list[Record]]:
    """The token records of every image of the batch, in order (any-resolution layout)."""
    pixels, sizes = inputs["pixel_values"], inputs["image_sizes"].tolist()
    per_image = pixels.shape[1] if pixels.dim() == 5 else 1  # views of an image, padded
    counts = inputs.get("batch_num_images")
    tiled = (
        [True] * len(sizes)
        if counts is None
        else [n == 1 for n in counts.tolist() for _ in range(n)]
    )
    return [
        _anyres_image(config, tuple(size), image * per_image, tile)
        for image, (size, tile) in enumerate(zip(sizes, tiled, strict=True))
    ]


def _anyres_image(config: Any, size: tuple[int, int], base: int, tiled: bool) -> list[Record]:
    patch = int(config.vision_config.patch_size)
    tile = int(config.vision_config.image_size)
    side = tile // patch  # tokens per side of a view
    records = [_patch(base, r, c, side, patch) for r in range(side) for c in range(side)]
    newline: Record = (base, -1, -1, -1, -1, -1, -1, -1)
    if not tiled:
        return [*records, newline]
    height, width = select_best_resolution(list(size), config.image_grid_pinpoints)
    tiles_per_row = width // tile
    rows, cols = _unpadded(size, (height // tile) * side, tiles_per_row * side)
    limit = getattr(config, "vision_aspect_ratio", None)  # OneVision: "anyres_max_9"
    if limit is not None:
        most = int(limit.removeprefix("anyres_max_")) * side**2
        if math.sqrt(len(rows) * len(cols) / most) > 1.1:
            raise UnsupportedModelError(
                f"The image token-to-patch map is not exact for a {size[0]}x{size[1]} image:"
                f" the model shrinks its {len(rows)}x{len(cols)} tile features (bilinear) to"
                f" fit {limit}, so each token blends patches."
            )
    for r in rows:
        for c in cols:
            view = base + 1 + (r // side) * tiles_per_row + c // side
            records.append(_patch(view, r % side, c % side, side, patch))
        records.append(newline)
    return records


def _unpadded(size: tuple[int, int], height: int, width: int) -> tuple[range, range]:
    """Rows and columns of a tiled feature grid that the image covers: the processor
    resized it into the pinpoint resolution keeping its aspect and padded the rest evenly,
    and the model crops that padding from the features as here."""
    original_height, original_width = size
    if original_width / original_height > width / height:  # padded above and below
        kept = int(round(original_height * (width / original_width), 7))
        pad = (height - kept) // 2
        return range(pad, height - pad), range(width)
    kept = int(round(original_width * (height / original_height), 7))
    pad = (width - kept) // 2
    return range(height), range(pad, width - pad)


def merged_images(config: Any, inputs: Any) -> list[list[Record]]:
    """The token records of every image of the batch, in order (merged-patch layout)."""
    patch = int(config.vision_config.patch_size)
    merge = int(config.vision_config.spatial_merge_size)
    images = []
    for view, (frames, height, width) in enumerate(inputs["image_grid_thw"].tolist()):
        if frames != 1:
            raise UnsupportedModelError(
                f"Image {view} spans {frames} frames: the token-to-patch map is for images."
            )
        per_row = width // merge
        size = patch * merge
        rows = range(height // merge)
        images.append([_patch(view, r, c, per_row, size) for r in rows for c in range(per_row)])
    return images


def merged_view(config: Any, inputs: Any, view: int) -> Tensor:
    """[3, height, width] one image's pixels (normalised) from the flattened patches.

    The processor cuts each image into (frame, merged row, merged column, row in the merge,
    column in the merge) patches, each flattened as (channel, frame in the patch, y, x);
    this undoes that for the image's first frame.
    """
    patch = int(config.vision_config.patch_size)
    merge = int(config.vision_config.spatial_merge_size)
    grids = inputs["image_grid_thw"].tolist()
    start = sum(t * h * w for t, h, w in grids[:view])
    _, height, width = grids[view]
    rows = inputs["pixel_values"][start : start + height * width]
    blocks = rows.reshape(height // merge, width // merge, merge, merge, 3, -1, patch, patch)
    first = blocks[:, :, :, :, :, 0]  # [merged row, merged col, row, col, channel, y, x]
    return first.permute(4, 0, 2, 5, 1, 3, 6).reshape(3, height * patch, width * patch)
