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


def test_a_planted_sink_patch_is_where_the_figure_marks_it(vlm):
    """Blow up one image token's embedding (dimension 3): it becomes a visual sink in
    layer 0, and the figure outlines exactly its patch's box."""
    from interp.figures import sink_patch_figure
    from interp.hooks import decoder_input_hooks
    from interp.image_patches import patch_table, view_image
    from probes.visual_sinks import sink_patches

    text, image = TEXTS[0], _images()[0]
    inputs = vlm.prepare(text, image)
    patches = patch_table(vlm, inputs)
    target = patches.iloc[len(patches) // 2 + 1]  # a patch away from the grid's corners

    def plant(_decoder: torch.nn.Module, kwargs: dict) -> dict:
        embeds = kwargs["inputs_embeds"].clone()
        embeds[0, int(target.position), 3] = 1e4
        return {**kwargs, "inputs_embeds": embeds}

    # phi <= sqrt(d_model) = 8, reached by a token all in one dimension: the planted one.
    config = VisualSinkConfig(tau=6.0, batch_size=1)
    with decoder_input_hooks(vlm.hf, plant):
        sinks = visual_sinks(vlm, text, image, config)
    table = sink_patches(vlm, text, image, sinks)
    marked = table[table.n_layers > 0]
    assert marked.position.tolist() == [target.position]
    figure = sink_patch_figure(view_image(vlm, inputs, 0), table, "planted")
    (shape,) = figure.layout.shapes
    box = (shape.y0 + 0.5, shape.x0 + 0.5, shape.y1 + 0.5, shape.x1 + 0.5)
    assert box == (target.top, target.left, target.bottom, target.right)
    assert target.bottom > target.top >= 0 and target.right > target.left >= 0
