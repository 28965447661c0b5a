"""Per-head q/k/v hooks and the TL-named hook points: shapes, identities, patches, cleanup."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from interp.hooks import qkv_hooks


def _ids(batch: int = 2, pos: int = 10) -> torch.Tensor:
    return torch.randint(3, 200, (batch, pos))


@torch.no_grad()
def test_qkv_hooks_see_heads_and_kv_heads_and_read_only_is_exact(tiny):
    ids = _ids()
    reference = tiny.hf(ids).logits
    seen = {}

    def read(layer, kind, x):
        seen[layer, kind] = x.clone()

    with qkv_hooks(tiny.hf, read, layers=[0, 2]):
        logits = tiny.hf(ids).logits
    assert torch.equal(logits, reference)
    assert sorted(seen) == [(0, "k"), (0, "q"), (0, "v"), (2, "k"), (2, "q"), (2, "v")]
    assert seen[0, "q"].shape == (2, 10, 4, 16)
    assert seen[0, "k"].shape == seen[0, "v"].shape == (2, 10, 2, 16)
    attention = tiny.hf.model.layers[0].self_attn
    hidden = tiny.hf.model.layers[0].input_layernorm(tiny.hf.model.embed_tokens(ids))
    assert torch.equal(seen[0, "v"], attention.v_proj(hidden).view(2, 10, 2, 16))


@torch.no_grad()
def test_qkv_replacement_lands_per_position_and_cleans_up(tiny):
    ids = _ids()
    reference = tiny.hf(ids).logits

    def zero_value_head(layer, kind, x):
        if kind != "v":
            return None
        x = x.clone()
        x[:, 6:, 1] = 0  # KV head 1 from position 6 on
        return x

    with qkv_hooks(tiny.hf, zero_value_head, layers=[1]):
        edited = tiny.hf(ids).logits
    assert torch.equal(edited[:, :6], reference[:, :6])  # causal: earlier positions untouched
    assert not torch.allclose(edited[:, 6:], reference[:, 6:])
    assert torch.equal(tiny.hf(ids).logits, reference)  # hooks gone


def test_qkv_hooks_are_removed_after_an_exception(tiny):
    def boom(layer, kind, x):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError), qkv_hooks(tiny.hf, boom):
        tiny.hf(_ids())
    attentions = [layer.self_attn for layer in tiny.hf.model.layers]
    assert not any(getattr(a, f"{k}_proj")._forward_hooks for a in attentions for k in "qkv")


def test_gradients_flow_through_a_qkv_replacement(tiny):
    ids = _ids()
    scale = torch.ones(1, requires_grad=True)

    def scale_query(layer, kind, x):
        return x * scale if kind == "q" else None

    with qkv_hooks(tiny.hf, scale_query, layers=[1]):
        tiny.hf(ids).logits[:, -1].sum().backward()
    assert scale.grad is not None and scale.grad.abs().item() > 0


@torch.no_grad()
def test_qkv_hooks_split_gpt2_fused_projection():
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=50, n_positions=64)
    hf = GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, 50, (2, 7))
    reference = hf(ids).logits
    seen = {}

    def read(layer, kind, x):
        seen[kind] = x
        return x.clone()  # an identity replacement re-joins exactly

    with qkv_hooks(hf, read, layers=[0]):
        assert torch.equal(hf(ids).logits, reference)
    fused = hf.transformer.h[0].attn.c_attn(
        hf.transformer.h[0].ln_1(hf.transformer.wte(ids) + hf.transformer.wpe(torch.arange(7)))
    )
    assert torch.equal(torch.cat([seen[k].flatten(2) for k in "qkv"], -1), fused)

    def zero_keys(layer, kind, x):
        return torch.zeros_like(x) if kind == "k" else None

    with qkv_hooks(hf, zero_keys, layers=[0]):
        assert not torch.allclose(hf(ids).logits, reference)
