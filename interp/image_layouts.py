"""Per-architecture facts of a VLM's image inputs, looked up by the config's model type.

Part of the hooks layer (`interp.hooks.HOOKS_LAYER`): the one place that branches on a
vision-language model's architecture for its inputs. `interp.inputs` asks it how an image
is written into a prompt and who numbers the positions; `interp.image_patches` asks it how
image tokens tile the vision tower's views; VHD asks it the mask the model would hand its
language model for other inputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import Tensor
from transformers.masking_utils import create_masks_for_generate

from interp.errors import UnsupportedModelError

__all__ = [
    "PATCH_MAPS",
    "image_placeholder",
    "image_token_id",
    "language_model_mask",
    "numbers_own_positions",
    "patch_grid",
    "patch_layout",
    "position_offsets",
    "row_views",
]

# The text an image takes in a prompt, where it is more than the processor's image token.
_PLACEHOLDER_FORMAT = dict.fromkeys(["qwen2_vl", "qwen2_5_vl"], "<|vision_start|>{}<|vision_end|>")
# Models that compute their own (multimodal rotary) positions from the mask and image grid.
_OWN_POSITIONS = frozenset({"qwen2_vl", "qwen2_5_vl"})
# What their position computation (`get_rope_index`) reads of the inputs besides the ids.
_ROPE_INPUTS = ("attention_mask", "mm_token_type_ids", "image_grid_thw", "video_grid_thw")
# Architectures whose image-token-to-patch map `interp.image_patches` knows exactly, and
# how their tokens tile the views: one grid a view, any-resolution tiles, merged patches.
PATCH_MAPS = {
    "llava": "grid",
    "idefics3": "grid",
    "paligemma": "grid",
    "gemma3": "grid",
    "llava_next": "anyres",
    "llava_onevision": "anyres",
    "qwen2_vl": "merged",
    "qwen2_5_vl": "merged",
}


def image_token_id(config: Any) -> int | None:
    """The id of the image token, under either name configs give it (None: no images)."""
    token_id = getattr(config, "image_token_id", None)
    if token_id is None:
        token_id = getattr(config, "image_token_index", None)
    return None if token_id is None else int(token_id)


def image_placeholder(config: Any, token: str) -> str:
    """What one image is written as in a prompt, given the processor's image token."""
    return _PLACEHOLDER_FORMAT.get(config.model_type, "{}").format(token)


def numbers_own_positions(config: Any) -> bool:
    """Whether the model computes its position ids itself (so the caller must not)."""
    return config.model_type in _OWN_POSITIONS


def position_offsets(hf: Any, inputs: Mapping[str, Tensor]) -> Tensor | None:
    """[3, batch, 1] what a model that numbers its own positions (Qwen2-VL's multimodal
    rotary: time, height, width) adds to a row's text position on each axis for the tokens
    after its prompt, as its `generate` does; None for a model that takes text positions.
    A decode step's position ids are the row's text position plus these offsets."""
    if not numbers_own_positions(hf.config) or not any(k.endswith("_grid_thw") for k in inputs):
        return None  # without images or videos its positions are the text positions
    found = {key: inputs[key] for key in _ROPE_INPUTS if key in inputs}
    _, deltas = hf.model.get_rope_index(inputs["input_ids"], **found)  # [batch, 1]
    return deltas[None].expand(3, -1, -1)


def language_model_mask(
    hf: Any, embeds: Tensor, mask: Tensor, positions: Tensor, token_types: Tensor | None
) -> Tensor | dict[str, Tensor] | None:
    """The attention mask `hf` hands its language model for these inputs, built from their
    [batch, pos] padding mask as its `generate` builds it: the model's own builder (Gemma 3's
    bidirectional blocks over each image, PaliGemma's bidirectional prefix, both read from
    `token_type_ids`), else transformers' causal one (a dict keyed by layer type where the
    layers differ, e.g. sliding windows)."""
    build = getattr(hf, "create_masks_for_generate", create_masks_for_generate)
    return build(
        config=hf.config,
        inputs_embeds=embeds,
        attention_mask=mask,
        cache=None,
        position_ids=positions,
        token_type_ids=token_types,
        is_first_iteration=True,
    )


def patch_layout(config: Any) -> str:
    """How image tokens tile the views: "grid", "anyres" or "merged" (`PATCH_MAPS`).

    Raises:
        UnsupportedModelError: an architecture outside `PATCH_MAPS`.
    """
    layout = PATCH_MAPS.get(config.model_type)
    if layout is None:
        raise UnsupportedModelError(
            f"The image token-to-patch map is not supported for {config.model_type}; it is"
            f" exact for {', '.join(PATCH_MAPS)}."
        )
    return layout


def patch_grid(config: Any) -> tuple[int, bool]:
    """(pixels per image token's side, whether each view starts with a CLS token), for an
    architecture of the "grid" layout."""
    model_type = config.model_type
    patch = int(config.vision_config.patch_size)
    size = patch * int(getattr(config, "scale_factor", 1))  # Idefics3's pixel shuffle
    if model_type == "gemma3":  # tokens average-pooled over square blocks of patches
        per_side = int(config.vision_config.image_size) // patch
        size = patch * (per_side // math.isqrt(int(config.mm_tokens_per_image)))
    cls = model_type == "llava" and config.vision_feature_select_strategy == "full"
    return size, cls


def row_views(config: Any, inputs: Any, row: int, per_view: int) -> tuple[int, int]:
    """(index of the row's first view in the flattened pixel_values, its number of views)."""
    pixels = inputs["pixel_values"]
    if config.model_type == "idefics3":  # [batch, views, 3, H, W]; padding views are empty
        mask = inputs.get("pixel_attention_mask")
        present = (mask if mask is not None else pixels)[row].flatten(1).ne(0).any(-1)
        return row * pixels.shape[1], int(present.sum())
    # LLaVA, PaliGemma, Gemma 3: [images, 3, H, W] in row order, `per_view` tokens each.
    counts = [n // per_view for n in inputs.n_image_tokens]
    return sum(counts[:row]), counts[row]
