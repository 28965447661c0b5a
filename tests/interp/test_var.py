"""VAR (interp.interventions.var) on hand-made rows and tiny random LLaVA, LLaVA-NeXT and Idefics3.

Random tiny models have no massive activations at tau = 20, so the model tests use tau = 2.5
on every dimension, which marks a few tokens (image tokens among them) as sinks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.errors import ConfigError, UnsupportedModelError
from interp.heads import Head, HeadSet
from interp.hooks import attention_hooks, residual_hooks
from interp.interventions import VHR, applied_all
from interp.interventions.attention_edit import AttentionEdit
from interp.interventions.var import (
    VAR,
    VarConfig,
    _key_classes,
    _redistribute,
    sink_ratio,
    var_layers,
)
from interp.models import Model
from tests.interp.helpers import vlm_cached_and_reforwarded
from tests.tiny import tiny_idefics3, tiny_llama, tiny_llava, tiny_llava_next

BUILDERS = {"llava": tiny_llava, "llava_next": tiny_llava_next, "idefics3": tiny_idefics3}
TEXTS = ["<image> what is in the picture?", "a photo: <image> of what?"]
CONFIG = VarConfig(tau=2.5, min_image_share=0.05)


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def vlm(request: pytest.FixtureRequest) -> Model:
    return BUILDERS[request.param](n_layers=5)


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (24 + 8 * i, 40, 3), dtype=np.uint8) for i in range(2)]


def redistribute(
    probs: torch.Tensor,
    sinks: torch.Tensor,
    image: torch.Tensor,
    scope: torch.Tensor,
    config: VarConfig,
) -> torch.Tensor:
    """VAR's edit of attention rows, as its attention hook runs it on a prompt's sinks."""
    return _redistribute(probs, _key_classes(sinks, image), scope, config)


def test_redistribute_on_a_hand_made_row():
    # keys: text sink, visual sink, image, image, the query (text)
    row = torch.tensor([0.4, 0.1, 0.3, 0.1, 0.1])
    sinks = torch.tensor([[True, True, False, False, False]])
    image = torch.tensor([[False, True, True, True, False]])
    probs = row.expand(1, 1, 1, 5)
    scope = torch.tensor([[True]])
    config = VarConfig(p=0.5)
    edited = redistribute(probs, sinks, image, scope, config)[0, 0, 0]
    # budget 0.5 * (0.4 + 0.1) = 0.25 goes to the image non-sinks 3:1
    expected = torch.tensor([0.2, 0.05, 0.3 + 0.25 * 0.75, 0.1 + 0.25 * 0.25, 0.1])
    torch.testing.assert_close(edited, expected, rtol=0, atol=1e-7)
    assert abs(float(edited.sum()) - 1.0) < 1e-6
    # Rows VAR does not select stay as they are.
    for kwargs in (
        {"scope": torch.tensor([[False]])},  # before the image's end
        {"config": VarConfig(p=0.5, rho=0.9)},  # r_i = 0.8 < rho
        {"config": VarConfig(p=0.5, min_image_share=0.6)},  # vis_i = 0.5 < 0.6
        {"sinks": torch.tensor([[True, False, False, False, False]])},  # no visual sink
    ):
        args = {"probs": probs, "sinks": sinks, "image": image, "scope": scope, "config": config}
        assert torch.equal(redistribute(**(args | kwargs)), probs)


def test_code_convention_flips_p_and_rho(vlm):
    inputs = vlm.prepare(TEXTS, _images())
    paper = VarConfig(tau=2.5, min_image_share=0.05, p=0.3, rho=0.6)
    code = VarConfig(tau=2.5, min_image_share=0.05, p=0.7, rho=0.4, convention="code")
    assert paper.moved == pytest.approx(code.moved)
    with torch.no_grad():
        with VAR(paper).applied(vlm):
            a = vlm.hf(**inputs).logits
        with VAR(code).applied(vlm):
            b = vlm.hf(**inputs).logits
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_p_zero_is_bit_identical_to_the_unedited_rows(vlm):
    inputs = vlm.prepare(TEXTS, _images())
    layers = var_layers(vlm.geometry.n_layers, CONFIG)
    assert layers == [2, 3]
    heads = HeadSet(Head(layer, h) for layer in layers for h in range(vlm.geometry.n_heads))
    unedited = AttentionEdit(heads, lambda rows, index: rows.probs[:, index], renormalize=False)
    zero = VarConfig(tau=2.5, min_image_share=0.05, p=0.0)
    with torch.no_grad():
        with unedited.applied(vlm):
            reference = vlm.hf(**inputs).logits
        with VAR(zero).applied(vlm):
            got = vlm.hf(**inputs).logits
        with VAR(CONFIG).identity().applied(vlm):
            identity = vlm.hf(**inputs).logits
        with VAR(CONFIG).applied(vlm):
            moved = vlm.hf(**inputs).logits
    assert torch.equal(got, reference) and torch.equal(identity, reference)
    assert not torch.allclose(moved, reference, atol=1e-4)  # the sinks were there to move


class _Rows:
    """Reads the rows as VAR left them (hooks run in the order they were entered)."""

    def __init__(self) -> None:
        self.rows: list = []

    def wants(self, layer: int, n_queries: int) -> bool:
        return layer in (2, 3)

    def __call__(self, rows) -> None:
        self.rows.append((rows.probs.clone(), rows.visible.clone()))


def test_edited_rows_sum_to_one_over_visible_keys(vlm):
    inputs = vlm.prepare(TEXTS, _images())
    edited, plain = _Rows(), _Rows()
    with torch.no_grad():
        with VAR(CONFIG).applied(vlm), attention_hooks(vlm.hf, edited):
            vlm.hf(**inputs)
        with VAR(CONFIG).identity().applied(vlm), attention_hooks(vlm.hf, plain):
            vlm.hf(**inputs)
    changed = 0
    for (probs, visible), (before, _) in zip(edited.rows, plain.rows, strict=True):
        real = visible.any(-1)[:, None]  # [batch, 1, query]: padded queries see nothing
        sums = probs.sum(-1)
        assert ((sums - 1).abs()[real.expand_as(sums)] < 1e-5).all()
        assert (probs.masked_select(~visible[:, None]) == 0).all()
        changed += int((probs != before).any(-1).sum())
    assert changed > 0


def test_generation_with_the_cache_equals_re_forwarding(vlm):
    inputs = vlm.prepare(TEXTS, _images())
    with VAR(CONFIG).applied(vlm):
        cached, reforwarded = vlm_cached_and_reforwarded(vlm, inputs, 5)
    assert torch.equal(reforwarded, cached)


def test_with_vhr_generation_with_the_cache_equals_re_forwarding():
    model = tiny_llava(n_layers=5)
    inputs = model.prepare(TEXTS, _images())
    with applied_all(model, VHR(), VAR(CONFIG)):
        cached, reforwarded = vlm_cached_and_reforwarded(model, inputs, 4)
    assert torch.equal(reforwarded, cached)


def test_sink_ratio_is_phi_over_the_sink_dims():
    x = torch.zeros(1, 2, 4)
    x[0, 0] = torch.tensor([8.0, 0.0, 0.0, 0.0])  # RMS 4: phi 2 on dim 0
    x[0, 1] = torch.tensor([1.0, -1.0, 1.0, -1.0])
    expected_all = torch.tensor([[8.0 / (16 + 1e-6) ** 0.5, 1.0 / (1 + 1e-6) ** 0.5]])
    phi, dims = sink_ratio(x, None)
    torch.testing.assert_close(phi, expected_all)
    assert dims.tolist() == [[0, 0]]
    phi, dims = sink_ratio(x, (2, 1))
    torch.testing.assert_close(phi, torch.tensor([[0.0, expected_all[0, 1]]]))
    assert dims.tolist() == [[2, 2]]


def test_errors():
    with pytest.raises(ConfigError):
        VarConfig(p=1.5)
    with pytest.raises(ConfigError):
        VarConfig(convention="yaml")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        VarConfig(sink_dims=())
    with (
        pytest.raises(UnsupportedModelError, match="needs a VLM"),
        VAR().applied(tiny_llama(n_layers=5)),
    ):
        pass
    three_layers = tiny_llava(n_layers=3)
    refused = pytest.raises(UnsupportedModelError, match="nothing to edit unless include_last")
    with refused, VAR().applied(three_layers):
        pass
    with VAR(VarConfig(include_last_layer=True)).applied(three_layers):
        pass


def test_sinks_come_from_the_residual_entering_each_layer(vlm):
    """The tokens VAR treats as sinks are those whose resid_pre phi reaches tau."""
    inputs = vlm.prepare(TEXTS, _images())
    phi: dict[int, torch.Tensor] = {}

    def read(layer: int, x: torch.Tensor) -> None:
        phi[layer] = sink_ratio(x, None)[0]

    with torch.no_grad(), residual_hooks(vlm.hf, read, layers=[2, 3]):
        vlm.hf(**inputs)
    visual = [bool(((phi[layer] >= CONFIG.tau) & inputs.image_mask).any()) for layer in (2, 3)]
    assert any(visual)  # the model tests above move something
