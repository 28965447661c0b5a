"""VHD (probes.vision.vision_head_divergence) and VHR (interp.interventions.vhr) on tiny VLMs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.errors import HookError, InputError
from interp.hooks import attention_hooks, head_output_hooks
from interp.interventions.vhr import VHR, VhrConfig, above_median, filter_outliers, vhr_layers
from interp.kv_cache import output_cache
from interp.models import Model
from probes.vision import VhdConfig, vision_head_divergence
from tests.interp.helpers import vhd_by_hand, vlm_cached_and_reforwarded
from tests.tiny import tiny_idefics3, tiny_llava, tiny_llava_next

BUILDERS = {"llava": tiny_llava, "llava_next": tiny_llava_next, "idefics3": tiny_idefics3}
TEXTS = ["<image> what is in the picture?", "a photo: <image> of what?"]


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def vlm(request: pytest.FixtureRequest) -> Model:
    return BUILDERS[request.param]()


def _images(n: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (24 + 8 * i, 40, 3), dtype=np.uint8) for i in range(n)]


def _per_head(scores, column: str, example: int) -> np.ndarray:
    frame = scores.data[scores.data.example == example]
    return frame.pivot(index="layer", columns="head", values=column).to_numpy()


def test_vhd_equals_two_unbatched_forwards(vlm):
    """Reference: the prompt alone, and its ids without image tokens alone (no pixels)."""
    scores = vision_head_divergence(vlm, TEXTS, _images(), VhdConfig(batch_size=2))
    for example, (text, image) in enumerate(zip(TEXTS, _images(), strict=True)):
        vhd, activation = vhd_by_hand(vlm, text, image)
        filtered = filter_outliers(vhd, activation)
        np.testing.assert_allclose(_per_head(scores, "vhd", example), vhd.numpy(), atol=1e-5)
        np.testing.assert_allclose(
            _per_head(scores, "text_activation", example), activation.numpy(), rtol=1e-5
        )
        np.testing.assert_allclose(_per_head(scores, "score", example), filtered.numpy(), atol=1e-5)
        assert (_per_head(scores, "vhd", example) > 0).all()


class _BlindFirstLayer:
    """Layer 0 attends uniformly to the prompt's last `n_text` keys: it never sees the image.

    The prompt is image first, then text, so in both branches of VHD's left-padded batch the
    text holds the last `n_text` positions; the rows are then identical bit for bit.
    """

    def __init__(self, n_text: int) -> None:
        self.n_text = n_text

    def wants(self, layer: int, n_queries: int) -> bool:
        return layer == 0

    def __call__(self, rows):
        n_keys = rows.probs.shape[-1]
        text = torch.arange(n_keys) >= rows.n_keys - self.n_text
        allowed = (rows.visible & text).float()  # [batch, query, key]
        count = allowed.sum(-1, keepdim=True)
        uniform = allowed / count.clamp_min(1)
        keep = (count == 0)[:, None]  # queries that see no text (image tokens): unchanged
        return torch.where(keep, rows.probs, uniform[:, None])


def test_vhd_of_a_layer_that_cannot_see_the_image_is_zero():
    model = tiny_llava()
    inputs = model.prepare("<image>what is it?", _images(1)[0])
    n_text = inputs.input_ids.shape[1] - inputs.n_image_tokens[0]
    with attention_hooks(model.hf, _BlindFirstLayer(n_text)):
        scores = vision_head_divergence(model, "<image>what is it?", _images(1)[0])
    vhd = _per_head(scores, "vhd", 0)
    assert (vhd[0] == 0.0).all()  # bit-exact: the blind layer's rows are identical
    assert (vhd[1:] > 1e-3).all()  # later layers read the image through layer 0's image rows


def test_outlier_filter_and_median_on_hand_made_scores():
    vhd = torch.tensor([[1.0, 1.1, 0.9, 5.0], [1.0, 1.1, 0.9, 5.0]])
    activation = torch.tensor([[1.0, 1.0, 1.0, 9.0], [9.0, 1.0, 1.0, 1.0]])
    # Row 0: head 3 is an outlier in both, zeroed; row 1: its activation is not.
    expected = torch.tensor([[1.0, 1.1, 0.9, 0.0], [1.0, 1.1, 0.9, 5.0]])
    assert torch.equal(filter_outliers(vhd, activation), expected)
    assert above_median(expected).tolist() == [
        [True, True, False, False],
        [False, True, False, True],
    ]


def test_vhr_layers_are_layer_one_and_the_last_ones():
    assert vhr_layers(32, VhrConfig()) == [1, *range(18, 32)]
    assert vhr_layers(3, VhrConfig()) == [0, 1, 2]
    assert vhr_layers(32, VhrConfig(first_layer=False, last_layers=2)) == [30, 31]


def test_vhr_alpha_one_is_bit_identical_to_identity_and_the_model(vlm):
    inputs = vlm.prepare(TEXTS, _images())
    with torch.no_grad():
        plain = vlm.hf(**inputs).logits
        with VHR(VhrConfig(alpha=1.0)).applied(vlm):
            one = vlm.hf(**inputs).logits
        with VHR().identity().applied(vlm):
            identity = vlm.hf(**inputs).logits
        with VHR().applied(vlm):
            reinforced = vlm.hf(**inputs).logits
    assert torch.equal(one, identity) and torch.equal(one, plain)
    assert not torch.allclose(reinforced[:, -1], plain[:, -1], atol=1e-3)


def test_vhr_scales_the_heads_above_the_median_vhd():
    """Reinforcing layer 1 only, its choice is VHD's (nothing before it is reinforced)."""
    model = tiny_llava()
    config = VhrConfig(alpha=3.0, last_layers=0)
    assert vhr_layers(model.geometry.n_layers, config) == [1]
    inputs = model.prepare(TEXTS, _images())
    scores = vision_head_divergence(model, TEXTS, _images(), VhdConfig(batch_size=2))
    chosen = torch.stack(
        [torch.from_numpy(_per_head(scores, "chosen", e).astype(bool)) for e in range(2)]
    )
    assert chosen[:, 1].any(-1).all() and not chosen[:, 1].all(-1).any()

    def scale(layer: int, z: torch.Tensor) -> torch.Tensor | None:
        if layer != 1:
            return None
        return z * torch.where(chosen[:, 1], config.alpha, 1.0)[:, None, :, None]

    with torch.no_grad():
        with head_output_hooks(model.hf, scale):
            expected = model.hf(**inputs).logits
        with VHR(config).applied(model):
            got = model.hf(**inputs).logits
    assert torch.equal(got, expected)


@pytest.mark.parametrize("reinforce_counterfactual", [True, False])
def test_vhr_generation_with_the_cache_equals_re_forwarding(vlm, reinforce_counterfactual):
    config = VhrConfig(alpha=2.0, reinforce_counterfactual=reinforce_counterfactual)
    inputs = vlm.prepare(TEXTS, _images())
    n_new = 5
    with VHR(config).applied(vlm):
        cached, reforwarded = vlm_cached_and_reforwarded(vlm, inputs, n_new)
    assert torch.equal(reforwarded, cached)
    with torch.no_grad():
        plain = vlm.hf.generate(**inputs, max_new_tokens=n_new, do_sample=False)[:, -n_new:]
    assert not torch.equal(plain, cached)  # the reinforcement changes the generation


@pytest.mark.parametrize("cache_name", ["past_key_values", "cache"])
def test_vhr_errors(cache_name):
    model = tiny_llava()
    with pytest.raises(InputError, match="needs an image with every prompt"):
        vision_head_divergence(model, ["a", "b"], [_images(1)[0], None])
    with pytest.raises(InputError, match="ends with its image"):
        vision_head_divergence(model, "caption: <image>", _images(1)[0])
    inputs = model.prepare("<image> hi", _images(1)[0])
    with torch.no_grad():
        cache = output_cache(model.hf(**inputs, use_cache=True))
        # a decode step is seen from the cache's contents, under either argument name
        step = {"input_ids": inputs.input_ids[:, -1:], cache_name: cache}
        with VHR().applied(model), pytest.raises(HookError, match="without its prompt"):
            model.hf(**step)
