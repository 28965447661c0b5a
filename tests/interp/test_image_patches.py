"""The image token -> patch map (interp.image_patches) on tiny LLaVA-1.5, LLaVA-NeXT,
LLaVA-OneVision, Idefics3, PaliGemma, Gemma 3, Qwen2-VL and Qwen2.5-VL.

The check is causal: with vision towers that do not mix patches (attention outputs zeroed,
Idefics3's encoder layers removed), changing the pixels of the box the map gives a token
must change that token's input embedding and no other. So the order of the tokens, tiles,
unpadding crops and newlines is checked against the model's own packing of its features.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from interp.errors import UnsupportedModelError
from interp.hooks import decoder_input_hooks
from interp.image_patches import patch_table, view_image
from interp.inputs import ModelInputs
from interp.models import Model
from tests.interp.zoo_vlms import (
    VLM_ZOO,
    tiny_gemma3,
    tiny_llava_onevision,
    tiny_mllama,
    tiny_paligemma,
)
from tests.tiny import tiny_idefics3, tiny_llava, tiny_llava_next


def _unmixed(model: Model, encoder: torch.nn.Module) -> Model:
    """The model with its tower's attention adding nothing: no patch sees another."""
    for layer in encoder.layers:
        torch.nn.init.zeros_(layer.self_attn.out_proj.weight)
        torch.nn.init.zeros_(layer.self_attn.out_proj.bias)
    return model


def _qwen_vl(name: str) -> Model:
    """Qwen2-VL's tower: attention blocks with their output projection zeroed; the patch
    embedding and the 2x2 merger see one patch, one merged square, each."""
    model = VLM_ZOO[name][0]()
    for block in model.hf.model.visual.blocks:
        torch.nn.init.zeros_(block.attn.proj.weight)
        torch.nn.init.zeros_(block.attn.proj.bias)
    return model


def _llava(strategy: str) -> Model:
    model = tiny_llava(strategy=strategy)
    return _unmixed(model, model.hf.model.vision_tower.encoder)


def _siglip_tower(build: Callable[[], Model]) -> Model:  # Gemma 3, PaliGemma
    model = build()
    return _unmixed(model, model.hf.model.vision_tower.encoder)


def _idefics3(split: bool) -> Model:
    model = tiny_idefics3(split=split)
    model.hf.model.vision_model.encoder.layers = torch.nn.ModuleList()  # no mixing
    return model


BUILDERS = {
    "llava": lambda: _llava("default"),
    "llava_full": lambda: _llava("full"),
    "idefics3": lambda: _idefics3(False),
    "idefics3_split": lambda: _idefics3(True),
    "gemma3": lambda: _siglip_tower(tiny_gemma3),
    "paligemma": lambda: _siglip_tower(tiny_paligemma),
    "llava_next": lambda: _siglip_tower(tiny_llava_next),  # a CLIP tower, the same names
    "llava_onevision": lambda: _siglip_tower(tiny_llava_onevision),
}
# Flattened patches instead of views: the boxes are changed in the images themselves, sized
# so that the processor does not resize them (multiples of 16 pixels, within its limits).
QWEN = {"qwen2_vl": lambda: _qwen_vl("qwen2_vl"), "qwen2_5_vl": lambda: _qwen_vl("qwen2_5_vl")}


def _embeds(model: Model, inputs: ModelInputs, pixels: Tensor) -> Tensor:
    seen = {}

    def read(_decoder: torch.nn.Module, kwargs: dict) -> None:
        seen["embeds"] = kwargs["inputs_embeds"].detach().clone()

    with torch.no_grad(), decoder_input_hooks(model.hf, read):
        model.hf(**{**inputs, "pixel_values": pixels}, use_cache=False)
    return seen["embeds"]


def _images(sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def _texts(model: Model) -> list[str]:
    image = model.processor.image_token
    return [f"{image} one", f"{image} two {image} three"]


def _check_boxes(name: str, model: Model, inputs: ModelInputs, changed_by: Callable) -> int:
    """For every token with a box: `changed_by(token, row)` gives [batch, pos] embeddings
    that changed; exactly that token's must. Returns how many tokens were checked."""
    checked = 0
    for row in range(2):
        table = patch_table(model, inputs, row)
        assert len(table) == inputs.n_image_tokens[row]
        offset = inputs.input_ids.shape[1] - inputs.lengths[row]  # left padding
        for token in table.itertuples():
            if token.patch_row < 0:  # CLS or newline: no box
                continue
            changed = changed_by(token, row)
            expected = torch.zeros_like(changed)
            expected[row, offset + token.position] = True
            assert torch.equal(changed, expected), (name, row, token)
            checked += 1
    return checked


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_changing_a_tokens_box_changes_that_token_only(name: str) -> None:
    model = BUILDERS[name]()
    images = _images([(20, 30), (64, 40)])
    inputs = model.prepare(_texts(model), [images[0], images])
    base = _embeds(model, inputs, inputs["pixel_values"])
    flat_shape = (-1, *inputs["pixel_values"].shape[-3:])

    def changed_by(token: Any, _row: int) -> Tensor:
        pixels = inputs["pixel_values"].clone()
        view = pixels.view(flat_shape)[token.view]
        view[:, token.top : token.bottom, token.left : token.right] += 0.5
        return (_embeds(model, inputs, pixels) != base).any(-1)  # [batch, pos]

    assert _check_boxes(name, model, inputs, changed_by) >= 8
    if name == "llava_full":
        assert (patch_table(model, inputs, 1).groupby("view").patch_row.min() == -1).all()
    if name in ("llava_next", "llava_onevision"):  # a newline after each row of tiles
        table = patch_table(model, inputs, 0)
        assert (table.patch_row < 0).sum() > 1 and table.patch_row.iloc[-1] == -1


@pytest.mark.parametrize("name", sorted(QWEN))
def test_changing_a_tokens_box_in_the_image_changes_that_token_only(name: str) -> None:
    model = QWEN[name]()
    texts, images = _texts(model), _images([(32, 48), (64, 32)])
    row_images = [[images[0]], images]
    inputs = model.prepare(texts, [images[0], images])
    base = _embeds(model, inputs, inputs["pixel_values"])

    def changed_by(token: Any, row: int) -> Tensor:
        image = row_images[row][token.view - row].copy()  # views: image 0, then row 1's
        box = image[token.top : token.bottom, token.left : token.right]
        image[token.top : token.bottom, token.left : token.right] = 255 - box
        edited = [list(images) for images in row_images]
        edited[row][token.view - row] = image
        pixels = model.prepare(texts, [edited[0][0], edited[1]])["pixel_values"]
        return (_embeds(model, inputs, pixels) != base).any(-1)

    assert _check_boxes(name, model, inputs, changed_by) >= 8
    for view, image in enumerate([images[0], *images]):  # not resized: the view is the image
        assert np.abs(view_image(model, inputs, view).astype(int) - image).max() <= 1


def test_view_image_undoes_the_processors_normalisation() -> None:
    model = tiny_llava()
    image = np.zeros((32, 32, 3), np.uint8)
    image[8:16, 16:24] = (200, 40, 10)
    view = view_image(model, model.prepare("x", image), 0)
    assert view.shape == (32, 32, 3)
    assert np.abs(view.astype(int) - image).max() <= 1  # float32 round trip


def test_a_onevision_image_whose_features_are_shrunk_is_refused_in_one_line() -> None:
    """At most one tile of features (anyres_max_1): a two-tile image is shrunk (bilinear)."""
    model = tiny_llava_onevision()
    model.hf.config.vision_aspect_ratio = model.processor.vision_aspect_ratio = "anyres_max_1"
    inputs = model.prepare("x", np.zeros((32, 64, 3), np.uint8))
    with pytest.raises(UnsupportedModelError, match="blends patches") as refused:
        patch_table(model, inputs)
    assert "\n" not in str(refused.value)


def test_other_architectures_are_refused_in_one_line() -> None:
    model = tiny_mllama()
    with pytest.raises(UnsupportedModelError, match="not supported for mllama") as refused:
        patch_table(model, model.prepare("x"))
    assert "\n" not in str(refused.value)
