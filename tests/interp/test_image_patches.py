"""The image token -> patch map (interp.image_patches) on tiny LLaVA-1.5, Idefics3,
PaliGemma and Gemma 3.

The check is causal: with vision towers that do not mix patches (LLaVA's attention output
zeroed, Idefics3's encoder layers removed), changing the pixels of the box
the map gives a token must change that token's input embedding and no other.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor

from interp.errors import UnsupportedModelError
from interp.hooks import decoder_input_hooks
from interp.image_patches import patch_table, view_image
from interp.inputs import ModelInputs
from interp.models import Model
from tests.interp.zoo_vlms import tiny_gemma3, tiny_paligemma
from tests.tiny import tiny_idefics3, tiny_llava, tiny_llava_next


def _unmixed(model: Model, encoder: torch.nn.Module) -> Model:
    """The model with its tower's attention adding nothing: no patch sees another."""
    for layer in encoder.layers:
        torch.nn.init.zeros_(layer.self_attn.out_proj.weight)
        torch.nn.init.zeros_(layer.self_attn.out_proj.bias)
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
}


def _embeds(model: Model, inputs: ModelInputs, pixels: Tensor) -> Tensor:
    seen = {}

    def read(_decoder: torch.nn.Module, kwargs: dict) -> None:
        seen["embeds"] = kwargs["inputs_embeds"].detach().clone()

    with torch.no_grad(), decoder_input_hooks(model.hf, read):
        model.hf(**{**inputs, "pixel_values": pixels}, use_cache=False)
    return seen["embeds"]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_changing_a_tokens_box_changes_that_token_only(name: str) -> None:
    model = BUILDERS[name]()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(20, 30), (64, 40)]]
    image = model.processor.image_token
    texts = [f"{image} one", f"{image} two {image} three"]
    inputs = model.prepare(texts, [images[0], images])
    base = _embeds(model, inputs, inputs["pixel_values"])
    flat_shape = (-1, *inputs["pixel_values"].shape[-3:])
    checked = 0
    for row in range(2):
        table = patch_table(model, inputs, row)
        assert len(table) == inputs.n_image_tokens[row]
        offset = inputs.input_ids.shape[1] - inputs.lengths[row]  # left padding
        for token in table.itertuples():
            if token.patch_row < 0:  # CLS: sees every patch
                continue
            pixels = inputs["pixel_values"].clone()
            view = pixels.view(flat_shape)[token.view]
            view[:, token.top : token.bottom, token.left : token.right] += 0.5
            changed = (_embeds(model, inputs, pixels) != base).any(-1)  # [batch, pos]
            expected = torch.zeros_like(changed)
            expected[row, offset + token.position] = True
            assert torch.equal(changed, expected), (name, row, token)
            checked += 1
    assert checked >= 8
    if name == "llava_full":
        assert (patch_table(model, inputs, 1).groupby("view").patch_row.min() == -1).all()


def test_view_image_undoes_the_processors_normalisation() -> None:
    model = tiny_llava()
    image = np.zeros((32, 32, 3), np.uint8)
    image[8:16, 16:24] = (200, 40, 10)
    view = view_image(model, model.prepare("x", image), 0)
    assert view.shape == (32, 32, 3)
    assert np.abs(view.astype(int) - image).max() <= 1  # float32 round trip


def test_llava_next_is_refused_in_one_line() -> None:
    model = tiny_llava_next()
    inputs = model.prepare("x", np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(UnsupportedModelError, match="not supported for llava_next"):
        patch_table(model, inputs)
