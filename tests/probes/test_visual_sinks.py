"""Visual sink tokens (probes.visual_sinks) on tiny random LLaVA and Idefics3 models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.errors import ConfigError, InputError
from interp.models import Model
from probes.visual_sinks import VisualSinkConfig, sink_dimensions, visual_sinks
from tests.tiny import tiny_idefics3, tiny_llava

BUILDERS = {"llava": tiny_llava, "idefics3": tiny_idefics3}
TEXTS = ["<image> what is in the picture?", "a photo: <image> of what?"]
# Random tiny models have no massive activations at tau = 20; 2.5 marks a few tokens.
CONFIG = VisualSinkConfig(tau=2.5, batch_size=2)


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def vlm(request: pytest.FixtureRequest) -> Model:
    return BUILDERS[request.param]()


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (24 + 8 * i, 40, 3), dtype=np.uint8) for i in range(2)]


def test_phi_equals_the_ratio_in_hfs_hidden_states(vlm):
    table = visual_sinks(vlm, TEXTS, _images(), CONFIG).data
    for example, (text, image) in enumerate(zip(TEXTS, _images(), strict=True)):
        inputs = vlm.prepare(text, image)  # alone: no padding, positions as in the table
        with torch.no_grad():
            hidden = vlm.hf(**inputs, output_hidden_states=True).hidden_states
        rows = table[table.example == example]
        for layer in range(vlm.geometry.n_layers):
            x = hidden[layer][0].float()
            ratio = x.abs() / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
            got = rows[rows.layer == layer].sort_values("position")
            np.testing.assert_allclose(got.phi, ratio.max(-1).values.numpy(), rtol=1e-5)
            assert got.dim.tolist() == ratio.argmax(-1).tolist()
            image = (inputs.image_mask[0]).numpy()
            assert (got.kind == "image").tolist() == image.tolist()
            assert got.sink.tolist() == (got.phi >= CONFIG.tau).tolist()
            assert got.visual_sink.tolist() == (got.sink & image).tolist()
    assert table.visual_sink.any() and (table.sink & ~table.visual_sink).any()


def test_sink_dims_restrict_the_ratio_and_dimensions_are_ranked(vlm):
    every = visual_sinks(vlm, TEXTS[0], _images()[0], CONFIG)
    ranked = sink_dimensions(every)
    top = int(ranked.dim.iloc[0])
    assert ranked.hits.iloc[0] == int((every.data.sink & (every.data.dim == top)).sum())
    one = visual_sinks(vlm, TEXTS[0], _images()[0], VisualSinkConfig(tau=2.5, sink_dims=(top,)))
    assert set(one.data.dim) == {top}
    assert (one.data.phi <= every.data.phi + 1e-6).all()
    # Tokens whose largest ratio is on `top` stay sinks; others may be sinks on `top` too.
    on_top = every.data.sink & (every.data.dim == top)
    assert (one.data.sink[on_top]).all() and one.data.sink.sum() >= on_top.sum()


def test_errors():
    model = tiny_llava()
    with pytest.raises(InputError, match="needs an image with every prompt"):
        visual_sinks(model, ["a", "b"], [_images()[0], None])
    with pytest.raises(ConfigError):
        VisualSinkConfig(sink_dims=())
    with pytest.raises(ConfigError):
        VisualSinkConfig(tau=0.0)
