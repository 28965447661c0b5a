"""Image attention share per head (probes.vision) on tiny random LLaVA and Idefics3."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.errors import ConfigError, InputError
from interp.models import Model
from probes.vision import ImageAttentionConfig, image_attention
from tests.interp.helpers import eager_forward, eager_image_shares
from tests.tiny import tiny_idefics3, tiny_llava

BUILDERS = {"llava": tiny_llava, "idefics3": tiny_idefics3}
TEXTS = ["<image> what is in the picture?", "a photo: <image> of what?"]


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def vlm(request: pytest.FixtureRequest) -> Model:
    return BUILDERS[request.param]()


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (24, 40, 3), dtype=np.uint8) for _ in TEXTS]


@pytest.mark.parametrize("queries", ["after_image", "last"])
def test_image_share_equals_the_share_in_hfs_eager_attention(vlm, queries):
    config = ImageAttentionConfig(queries=queries, batch_size=2)
    scores = image_attention(vlm, TEXTS, _images(), config).data
    expected = eager_image_shares(vlm, TEXTS, _images(), queries)
    got = np.stack(
        [
            scores[scores.example == e]
            .pivot(index="layer", columns="head", values="score")
            .to_numpy()
            for e in range(len(TEXTS))
        ]
    )
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert ((scores.score > 0) & (scores.score < 1)).all()


def test_a_prompt_scores_the_same_alone_and_in_a_padded_batch(vlm):
    together = image_attention(vlm, TEXTS, _images()).data
    alone = image_attention(vlm, TEXTS[1], _images()[1]).data
    row = together[together.example == 1].reset_index(drop=True)
    np.testing.assert_allclose(row.score, alone.score, atol=1e-5)
    assert row.n_queries.tolist() == alone.n_queries.tolist()


def test_nonsink_share_equals_the_share_in_hfs_eager_attention(vlm):
    """r_i with sinks from HF's hidden states (tau = 2.5 marks some image tokens)."""
    config = ImageAttentionConfig(tau=2.5, batch_size=2)
    scores = image_attention(vlm, TEXTS, _images(), config).data
    inputs = vlm.prepare(TEXTS, _images())
    out = eager_forward(vlm, inputs, output_hidden_states=True)
    image = inputs.image_mask
    real = inputs.attention_mask.bool()
    found_sinks = False
    for layer, probs in enumerate(out.attentions):  # [batch, head, query, key]
        x = out.hidden_states[layer].float()
        phi = (x.abs() / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)).amax(-1)
        sinks = (phi >= 2.5) & real
        found_sinks |= bool((sinks & image).any())
        vis = (probs * image[:, None, None]).sum(-1)
        nonsink = (probs * (image & ~sinks)[:, None, None]).sum(-1)
        for row in range(len(TEXTS)):
            after = slice(inputs.image_span(row)[1], None)
            r = (nonsink[row, :, after] / vis[row, :, after]).mean(-1)
            got = scores[(scores.example == row) & (scores.layer == layer)].nonsink_share
            np.testing.assert_allclose(got.to_numpy(), r.numpy(), atol=1e-5)
    assert found_sinks


def test_errors():
    model = tiny_llava()
    with pytest.raises(InputError, match="needs an image with every prompt; prompt 1"):
        image_attention(model, ["a", "b"], [_images()[0], None])
    with pytest.raises(InputError, match="no text after its image"):
        image_attention(model, "caption: <image>", _images()[0])
    with pytest.raises(ConfigError):
        ImageAttentionConfig(queries="first")  # type: ignore[arg-type]
