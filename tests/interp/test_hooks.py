"""The hook layer: explicit attention equals SDPA, edits land, gradients flow, no leaks."""

from contextlib import ExitStack

import pytest
import torch
import torch.nn.functional as F

from interp.errors import HookError
from interp.hooks import (
    _ACTIVE,
    ATTENTION_IMPLEMENTATION,
    attention_hooks,
    head_output_hooks,
    residual_hooks,
)
from tests.interp.helpers import whole


class Recorder:
    def __init__(self, layers=None, decode_only=False):
        self.layers, self.decode_only, self.rows = layers, decode_only, []

    def wants(self, layer, n_queries):
        in_layers = self.layers is None or layer in self.layers
        return in_layers and (n_queries == 1 or not self.decode_only)

    def __call__(self, rows):
        self.rows.append(rows)


@torch.no_grad()
def test_explicit_attention_matches_sdpa(tiny):
    ids = torch.randint(3, 200, (2, 24))
    reference = tiny.hf(ids).logits
    recorder = Recorder()
    with attention_hooks(tiny.hf, recorder):
        explicit = tiny.hf(ids).logits
    assert torch.allclose(reference, explicit, atol=1e-5)
    assert [r.layer for r in recorder.rows] == [0, 1, 2]
    for rows in recorder.rows:
        assert rows.probs.shape == (2, 4, 24, 24)
        assert torch.allclose(rows.probs.sum(-1), torch.ones(2, 4, 24), atol=1e-5)
        assert rows.probs.triu(1).abs().max() == 0  # causal


@torch.no_grad()
def test_left_padding_is_masked(tiny):
    ids = torch.randint(3, 200, (2, 12))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    reference = tiny.hf(ids, attention_mask=mask).logits
    recorder = Recorder(layers={0})
    with attention_hooks(tiny.hf, recorder):
        explicit = tiny.hf(ids, attention_mask=mask).logits
    assert torch.allclose(reference[:, 4:], explicit[:, 4:], atol=1e-5)
    probs = recorder.rows[0].probs
    assert probs[0, :, 4:, :4].abs().max() == 0  # no attention to padding


@torch.no_grad()
def test_small_blocks_give_the_same_rows(tiny, monkeypatch):
    ids = torch.randint(3, 200, (1, 30))
    whole_rows = Recorder(layers={1})
    with attention_hooks(tiny.hf, whole_rows):
        tiny.hf(ids)
    monkeypatch.setattr(
        "interp.explicit_attention._BLOCK_BYTES", 4 * 4 * 30 * 7
    )  # 7 query rows a block
    blocks = Recorder(layers={1})
    with attention_hooks(tiny.hf, blocks):
        tiny.hf(ids)
    assert len(blocks.rows) == 5
    # Each block's keys end at its last query: the keys after it are never scored.
    assert [r.probs.shape[-1] for r in blocks.rows] == [7, 14, 21, 28, 30]
    probs, visible = whole(blocks.rows)
    assert torch.allclose(probs, whole_rows.rows[0].probs, atol=1e-6)
    assert torch.equal(visible, whole_rows.rows[0].visible)


@torch.no_grad()
def test_narrow_blocks_with_left_padding_match_one_block(tiny, monkeypatch):
    ids = torch.randint(3, 200, (2, 20))
    mask = torch.ones_like(ids)
    mask[0, :6] = 0
    kwargs = dict(attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0))
    reference = tiny.hf(ids, **kwargs).logits
    one = Recorder(layers={1})
    with attention_hooks(tiny.hf, one):
        tiny.hf(ids, **kwargs)
    monkeypatch.setattr(
        "interp.explicit_attention._BLOCK_BYTES", 4 * 2 * 4 * 20 * 3
    )  # 3 query rows a block
    blocks = Recorder()
    with attention_hooks(tiny.hf, blocks):
        explicit = tiny.hf(ids, **kwargs).logits
    assert torch.allclose(reference[1], explicit[1], atol=1e-5)
    assert torch.allclose(reference[0, 6:], explicit[0, 6:], atol=1e-5)
    layer1 = [r for r in blocks.rows if r.layer == 1]
    assert [r.probs.shape[-1] for r in layer1] == [3, 6, 9, 12, 15, 18, 20]
    probs, visible = whole(layer1)
    assert torch.allclose(probs, one.rows[0].probs, atol=1e-6)
    assert torch.equal(visible, one.rows[0].visible)
    assert probs[0, :, :6].abs().max() == 0  # padded query rows see nothing and stay zero
    assert probs[0, :, :, :6].abs().max() == 0  # nothing attends to padding
    assert torch.allclose(probs[0, :, 6:].sum(-1), torch.ones(4, 14), atol=1e-5)


@torch.no_grad()
def test_decode_rows_come_from_the_kv_cache(tiny):
    ids = torch.randint(3, 200, (1, 10))
    recorder = Recorder(decode_only=True)
    with attention_hooks(tiny.hf, recorder):
        out = tiny.hf.generate(ids, max_new_tokens=4, do_sample=False)
    plain = tiny.hf.generate(ids, max_new_tokens=4, do_sample=False)
    assert torch.equal(out, plain)
    assert len(recorder.rows) == 3 * 3  # 3 decode steps x 3 layers (first token is prefill)
    assert [r.probs.shape[-1] for r in recorder.rows[::3]] == [11, 12, 13]


def test_hooks_are_removed_after_an_exception(tiny):
    before = tiny.hf.config._attn_implementation
    with pytest.raises(RuntimeError), attention_hooks(tiny.hf, Recorder()):
        assert tiny.hf.config._attn_implementation == ATTENTION_IMPLEMENTATION
        raise RuntimeError("boom")
    assert tiny.hf.config._attn_implementation == before
    assert not _ACTIVE
    with pytest.raises(RuntimeError), head_output_hooks(tiny.hf, lambda layer, z: z * 0):
        raise RuntimeError("boom")
    assert all(not m._forward_pre_hooks for m in tiny.hf.modules())


@torch.no_grad()
def test_contexts_nest_and_unwind(tiny):
    ids = torch.randint(3, 200, (1, 8))
    outer, inner = Recorder(layers={0}), Recorder(layers={0})
    with attention_hooks(tiny.hf, outer):
        with attention_hooks(tiny.hf, inner):
            tiny.hf(ids)
        tiny.hf(ids)
    assert len(outer.rows) == 2 and len(inner.rows) == 1
    assert not _ACTIVE


@torch.no_grad()
def test_attention_edits_change_the_output(tiny):
    ids = torch.randint(3, 200, (1, 8))
    reference = tiny.hf(ids).logits

    class FirstToken:
        def wants(self, layer, n_queries):
            return True

        def __call__(self, rows):
            probs = torch.zeros_like(rows.probs)
            probs[..., 0] = 1.0
            return probs

    with attention_hooks(tiny.hf, FirstToken()):
        edited = tiny.hf(ids).logits
    assert not torch.allclose(reference, edited, atol=1e-3)


def test_a_replacement_of_the_wrong_shape_raises(tiny):
    class FullWidth:  # written for full key rows: each block's keys are narrowed
        def wants(self, layer, n_queries):
            return True

        def __call__(self, rows):
            return F.pad(rows.probs, (0, 1))

    with pytest.raises(HookError, match="narrowed"), attention_hooks(tiny.hf, FullWidth()):
        tiny.hf(torch.randint(3, 200, (1, 8)))


@torch.no_grad()
def test_head_outputs_and_residuals_have_tl_shapes(tiny):
    ids = torch.randint(3, 200, (2, 5))
    shapes = {}

    def record(kind):
        def hook(layer, tensor):
            shapes[(kind, layer)] = tensor.shape  # returns None: read only

        return hook

    with head_output_hooks(tiny.hf, record("z")), residual_hooks(tiny.hf, record("resid")):
        tiny.hf(ids)
    assert shapes[("z", 2)] == (2, 5, 4, 16)
    assert shapes[("resid", 0)] == (2, 5, 64)


@torch.no_grad()
def test_residual_edit_changes_logits(tiny):
    ids = torch.randint(3, 200, (1, 5))
    reference = tiny.hf(ids).logits
    with residual_hooks(tiny.hf, lambda layer, x: x * 2, layers=[1]):
        edited = tiny.hf(ids).logits
    assert not torch.allclose(reference, edited)


# Gradients: attribution methods backpropagate through every hook family.


class Sharpen:
    """Replaces each row by its renormalised square: a differentiable, non-identity edit."""

    def wants(self, layer, n_queries):
        return layer == 1

    def __call__(self, rows):
        squared = rows.probs**2
        return squared / squared.sum(-1, keepdim=True).clamp_min(1e-30)


def parameter_grads(tiny, *contexts):
    """Gradients of the next-token loss on a left-padded batch w.r.t. every parameter."""
    ids = torch.randint(3, 200, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    with ExitStack() as stack:
        for context in contexts:
            stack.enter_context(context)
        logits = tiny.hf(ids, attention_mask=mask, position_ids=positions).logits
    valid = mask[:, 1:].bool()
    loss = F.cross_entropy(logits[:, :-1][valid], ids[:, 1:][valid])
    return torch.autograd.grad(loss, list(tiny.hf.parameters()))


def test_gradients_through_attention_hooks_match_sdpa(tiny):
    reference = parameter_grads(tiny)
    read = parameter_grads(tiny, attention_hooks(tiny.hf, Recorder()))
    for got, want in zip(read, reference, strict=True):
        assert torch.isfinite(got).all()
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    sharpened = parameter_grads(tiny, attention_hooks(tiny.hf, Sharpen(), Recorder()))
    assert all(torch.isfinite(g).all() for g in sharpened)
    assert any(
        not torch.allclose(g, r, atol=1e-4) for g, r in zip(sharpened, reference, strict=True)
    )


def test_gradients_through_read_only_head_output_and_residual_hooks_are_exact(tiny):
    reference = parameter_grads(tiny)
    seen = []

    def read(layer, tensor):
        seen.append(layer)

    for family in (head_output_hooks, residual_hooks):
        got = parameter_grads(tiny, family(tiny.hf, read))
        assert all(torch.equal(g, r) for g, r in zip(got, reference, strict=True))
    assert seen == [0, 1, 2, 0, 1, 2]
    scaled = parameter_grads(
        tiny,
        head_output_hooks(tiny.hf, lambda layer, z: z * 0.5),
        residual_hooks(tiny.hf, lambda layer, x: x * 2.0, layers=[1]),
    )
    assert all(torch.isfinite(g).all() for g in scaled)
    assert any(not torch.allclose(g, r) for g, r in zip(scaled, reference, strict=True))


@torch.no_grad()
def test_decoder_from_a_layer_reproduces_the_full_forward(tiny):
    from interp.midway import decoder_from
    from tests.interp.helpers import left_padded

    ids, mask = left_padded(tiny, ["The quick brown fox", "Hi"])
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    inputs = {"attention_mask": mask, "position_ids": positions, "use_cache": False}
    cache = {}
    with residual_hooks(tiny.hf, lambda layer, x: cache.setdefault(layer, x), layers=[0, 2]):
        full = tiny.hf(input_ids=ids, **inputs).logits
    layers = tiny.hf.model.layers
    for start in (0, 2):
        with decoder_from(tiny.hf, start):
            assert len(tiny.hf.model.layers) == 3 - start
            midway = tiny.hf(inputs_embeds=cache[start], **inputs).logits
        assert torch.equal(midway, full)  # same kernels, same inputs: bit-exact
    assert tiny.hf.model.layers is layers


def test_decoder_from_restores_layers_and_refuses_scaled_embeddings(tiny):
    from transformers import GemmaConfig, GemmaForCausalLM

    from interp.errors import HookError, UnsupportedModelError
    from interp.midway import decoder_from

    layers = tiny.hf.model.layers
    with pytest.raises(RuntimeError, match="boom"), decoder_from(tiny.hf, 1, 2):
        raise RuntimeError("boom")
    assert tiny.hf.model.layers is layers
    with pytest.raises(HookError), decoder_from(tiny.hf, 3):
        pass
    gemma = GemmaForCausalLM(
        GemmaConfig(
            vocab_size=32,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
        )
    )
    with pytest.raises(UnsupportedModelError, match="inputs_embeds"), decoder_from(gemma, 1):
        pass
