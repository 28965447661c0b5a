"""The VLM zoo: the toolkit against plain transformers on tiny vision-language models.

Gemma 3 (bidirectional attention among an image's tokens) and PaliGemma (a bidirectional
prefix: image and prompt) hand their attention a mask that is not causal; the explicit
kernel must use it as given. Each cell runs a left-padded batch with an image a row:
recorded patterns against eager `output_attentions`, image attention shares against shares
computed from those patterns, HeadScale(1) against the plain forward (bit-exact), and greedy
generation through the driver against `hf.generate` (Qwen2-VL's multimodal rotary positions
carried through the decode steps), VHD against two unbatched forwards, generation under
VHR and under VAR against `hf.generate` under the same edit, and a planted visual sink
placed on its patch by the token-to-patch map (4-layer language models: VAR edits layers
2..L-2). Mllama (cross-attention layers) is refused in one line.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from interp.errors import UnsupportedModelError
from interp.figures import sink_patch_figure
from interp.generation import GenerationConfig, Step, generate
from interp.hook_points import record
from interp.hooks import attention_hooks, decoder_input_hooks
from interp.image_patches import patch_table, view_image
from interp.inputs import ModelInputs
from interp.interventions import VAR, VHR, HeadScale, VarConfig, VhrConfig
from interp.models import Model
from interp.results import TokenScores
from probes.vision import ImageAttentionConfig, VhdConfig, image_attention, vision_head_divergence
from probes.visual_sinks import VisualSinkConfig, sink_patches, visual_sinks
from tests.interp.helpers import (
    Recorder,
    eager_forward,
    eager_image_shares,
    vhd_by_hand,
    whole,
)
from tests.interp.zoo_vlms import (
    VLM_DOCS_END,
    VLM_DOCS_START,
    VLM_ZOO,
    tiny_mllama,
    vlm_table,
)

TEXTS = ["what is in the picture?", "of what?"]  # the second row is left-padded
FAMILIES = sorted(VLM_ZOO)
# Families whose mask lets some query see a later key (image tokens, or PaliGemma's prefix).
BIDIRECTIONAL = frozenset({"gemma3", "paligemma"})


@cache
def vlm(name: str) -> Model:
    return VLM_ZOO[name][0]()


def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (24, 40, 3), dtype=np.uint8) for _ in TEXTS]


def prepared(m: Model) -> ModelInputs:
    return m.prepare(TEXTS, images())


@torch.no_grad()
def logits(m: Model) -> Tensor:
    return m.hf(**prepared(m)).logits


@pytest.mark.parametrize("name", FAMILIES)
def test_patterns_equal_eager_with_images_on_a_left_padded_batch(name: str) -> None:
    m = vlm(name)
    inputs = prepared(m)
    assert inputs.attention_mask[1, 0] == 0 and all(inputs.n_image_tokens)
    recorder = Recorder(list(range(m.geometry.n_layers)))
    with attention_hooks(m.hf, recorder):
        logits(m)
    eager = eager_forward(m, inputs).attentions
    valid = inputs.attention_mask.bool()  # padded query rows are left out
    for layer, expected in enumerate(eager):
        probs, _ = whole([r for r in recorder.seen if r.layer == layer])
        assert probs.shape == expected.shape
        rows = valid[:, None, :, None].expand_as(probs)
        assert torch.allclose(probs[rows], expected[rows].float(), atol=1e-5), layer
        later = probs.triu(1).sum().item()  # attention on keys after the query
        assert (later > 0.1) == (name in BIDIRECTIONAL), (layer, later)


@pytest.mark.parametrize("name", FAMILIES)
def test_image_share_equals_the_share_in_eager_patterns(name: str) -> None:
    m = vlm(name)
    table = image_attention(m, TEXTS, images(), ImageAttentionConfig(batch_size=2)).data
    expected = eager_image_shares(m, TEXTS, images(), "after_image")
    got = np.stack(
        [
            table[table.example == row].pivot(index="layer", columns="head", values="score")
            for row in range(len(TEXTS))
        ]
    )
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (got > 0).all()


@pytest.mark.parametrize("name", FAMILIES)
def test_head_scale_one_is_the_plain_forward(name: str) -> None:
    m = vlm(name)
    plain = logits(m)
    heads = [(0, 1), (1, m.geometry.n_heads - 1)]
    with HeadScale(heads, alpha=1.0).applied(m):
        assert torch.equal(logits(m), plain)
    with HeadScale(heads, alpha=0.0).applied(m):
        assert not torch.equal(logits(m), plain)  # the hooks reach the language model


@pytest.mark.parametrize("name", FAMILIES)
def test_greedy_generation_with_images_equals_hf_generate(name: str) -> None:
    """Each step's logits too: a wrong rotary position (Qwen2-VL's offsets) moves them by
    ~1e-3 on these tiny models before it changes a greedy token."""
    m = vlm(name)
    config = GenerationConfig(max_new_tokens=4, stop_at_eos=False)
    steps: dict[int, list[Tensor]] = {row: [] for row in range(len(TEXTS))}

    def keep(step: Step) -> None:
        for index, row in enumerate(step.rows):  # the batch is in length order
            steps[row].append(step.logits[index])

    out = generate(m, TEXTS, config, images=images(), batch_size=2, on_step=keep)
    for row, (text, image, got) in enumerate(zip(TEXTS, images(), out, strict=True)):
        response, expected = hf_greedy(m, m.prepare(text, image), steps=4)
        assert got.response_ids.tolist() == response
        torch.testing.assert_close(torch.stack(steps[row]), expected, atol=1e-5, rtol=0)


def hf_greedy(m: Model, inputs: ModelInputs, steps: int) -> tuple[list[int], Tensor]:
    """`hf.generate`'s greedy response to one prepared prompt and its [step, vocab] logits."""
    out = m.hf.generate(
        **inputs,
        max_new_tokens=steps,
        min_new_tokens=steps,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
    )
    return out.sequences[0, inputs.input_ids.shape[1] :].tolist(), torch.cat(out.logits)


def test_mllama_cross_attention_is_refused_in_one_line() -> None:
    m = tiny_mllama()
    ids = m.encode("hello")
    for attempt in (
        lambda: attention_hooks(m.hf, Recorder([0])).__enter__(),
        lambda: HeadScale([(0, 0)], alpha=0.0).applied(m).__enter__(),
        lambda: record(m, ids, ["blocks.0.hook_resid_post"]),
    ):
        with pytest.raises(UnsupportedModelError) as refused:
            attempt()
        message = str(refused.value)
        assert "cross-attention" in message and "Mllama" in message and "\n" not in message


@pytest.mark.parametrize("name", FAMILIES)
def test_a_planted_visual_sink_is_outlined_on_its_patch(name: str) -> None:
    """One image token's input embedding blown up in one dimension is a visual sink in
    layer 0 (phi <= sqrt(d_model) = 5.7, reached by that token alone); `sink_patches` puts
    it on its patch of the map, and the figure outlines exactly that box."""
    m = vlm(name)
    text, image = TEXTS[0], images()[0]
    inputs = m.prepare(text, image)
    patches = patch_table(m, inputs)
    boxed = patches[patches.patch_row >= 0]
    target = boxed.iloc[len(boxed) // 2]

    def plant(_decoder: torch.nn.Module, kwargs: dict) -> dict:
        embeds = kwargs["inputs_embeds"].clone()
        embeds[0, int(target.position), 3] = 1e4
        return {**kwargs, "inputs_embeds": embeds}

    with decoder_input_hooks(m.hf, plant):
        sinks = visual_sinks(m, text, image, VisualSinkConfig(tau=5.0, batch_size=1))
    first = TokenScores(sinks.data[sinks.data.layer == 0], sinks.provenance)
    table = sink_patches(m, text, image, first)
    assert table[table.n_layers > 0].position.tolist() == [target.position]
    view = table[table.view == target.view]
    figure = sink_patch_figure(view_image(m, inputs, int(target.view)), view, name)
    (shape,) = figure.layout.shapes
    box = (shape.y0 + 0.5, shape.x0 + 0.5, shape.y1 + 0.5, shape.x1 + 0.5)
    assert box == (target.top, target.left, target.bottom, target.right)


def test_the_docs_table_is_the_vlm_zoos() -> None:
    """docs/models.md lists what this file checks (`python -m tests.interp.zoo_models`)."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "models.md").read_text()
    assert f"{VLM_DOCS_START}\n{vlm_table()}\n{VLM_DOCS_END}" in docs


def test_text_only_generation_on_qwen2_5_vl_takes_text_positions() -> None:
    """No image: the model's own positions are the text positions, so none are offset."""
    m = vlm("qwen2_5_vl")
    config = GenerationConfig(max_new_tokens=3, stop_at_eos=False)
    for text, got in zip(TEXTS, generate(m, TEXTS, config, batch_size=2), strict=True):
        ids = m.encode(text).input_ids
        reference = m.hf.generate(ids, max_new_tokens=3, min_new_tokens=3, do_sample=False)
        assert got.response_ids.tolist() == reference[0, ids.shape[1] :].tolist()


@pytest.mark.parametrize("name", FAMILIES)
def test_vhd_equals_the_prompt_and_its_text_alone(name: str) -> None:
    """Against two unbatched forwards: the prompt, and its text alone with the model's own
    mask for it. Gemma 3's prompt rows need their image blocks, PaliGemma's both branches
    their bidirectional prefix: a causal mask in either branch moves VHD."""
    m = vlm(name)
    scores = vision_head_divergence(m, TEXTS, images(), VhdConfig(batch_size=2)).data
    for example, (text, image) in enumerate(zip(TEXTS, images(), strict=True)):
        vhd, activation = vhd_by_hand(m, text, image)
        frame = scores[scores.example == example]
        for column, expected, tolerance in (
            ("vhd", vhd, {"atol": 1e-5}),
            ("text_activation", activation, {"rtol": 1e-5}),
        ):
            got = frame.pivot(index="layer", columns="head", values=column).to_numpy()
            np.testing.assert_allclose(got, expected.numpy(), **tolerance)
        # Gemma 3's layer 0 slides a 4-token window over the text after the image: its last
        # query cannot see the image there, so VHD is 0 up to rounding.
        assert (vhd[1:] > 1e-3).all() and (name == "gemma3" or (vhd[0] > 1e-3).all())


# Each edit, and the least it moves the first step's logits on every family (an identity
# moves them by < 1e-7). VAR's sinks on a random model: |x_0| / RMS(x) >= 0.5, all of
# their attention moved (p = 1) in every row.
IMAGE_EDITS: dict[str, tuple[Callable[[], Any], float]] = {
    "vhr": (lambda: VHR(VhrConfig(alpha=8.0, last_layers=1)), 1e-2),
    "var": (
        lambda: VAR(VarConfig(p=1.0, tau=0.5, sink_dims=(0,), rho=0.0, min_image_share=0.0)),
        1e-4,
    ),
}


@pytest.mark.parametrize("edit", sorted(IMAGE_EDITS))
@pytest.mark.parametrize("name", FAMILIES)
def test_generation_with_images_under_an_edit_equals_hf_generate(name: str, edit: str) -> None:
    """Tokens and each step's logits. VHD's no-image branch is text (for Qwen2-VL: equal
    positions on every rotary axis; for Gemma 3 and PaliGemma: the model's mask for it);
    VAR's sinks are found at the prompt and kept through the decode steps."""
    m = vlm(name)
    make, least_move = IMAGE_EDITS[edit]
    config = GenerationConfig(max_new_tokens=4, stop_at_eos=False)
    steps: list[Tensor] = []
    with make().applied(m):
        ours = generate(
            m, TEXTS[:1], config, images=images()[:1], on_step=lambda s: steps.append(s.logits[0])
        )
        response, expected = hf_greedy(m, m.prepare(TEXTS[0], images()[0]), steps=4)
    plain: list[Tensor] = []
    generate(m, TEXTS[:1], config, images=images()[:1], on_step=lambda s: plain.append(s.logits[0]))
    assert ours[0].response_ids.tolist() == response
    torch.testing.assert_close(torch.stack(steps), expected, atol=1e-5, rtol=0)
    # The edit moves the first step's logits: the match is not vacuous.
    assert (steps[0] - plain[0]).abs().max() > least_move
