"""Per-head q/k/v hooks and the TL-named hook points: shapes, identities, patches, cleanup."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Phi3Config, Phi3ForCausalLM

from interp.errors import HookError, InputError
from interp.hook_points import HOOK_POINTS, HeadPatch, hooked, patched, record
from interp.hooks import _ACTIVE, ATTENTION_IMPLEMENTATION, head_output_hooks, qkv_hooks
from interp.models import load_model
from tests.tiny import saved_tiny


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


def _gpt2():
    config = GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=50, n_positions=64)
    hf = GPT2LMHeadModel(config).eval()
    attn = hf.transformer.h[0].attn
    return hf, attn.c_attn, (4, 4, 4)


def _phi3():
    config = Phi3Config(
        num_hidden_layers=2,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=50,
        pad_token_id=0,
    )
    hf = Phi3ForCausalLM(config).eval()
    return hf, hf.model.layers[0].self_attn.qkv_proj, (4, 2, 2)


@pytest.mark.parametrize("build", [_gpt2, _phi3])
@torch.no_grad()
def test_qkv_hooks_split_a_fused_projection(build):
    torch.manual_seed(0)
    hf, fused, n_heads = build()
    ids = torch.randint(3, 50, (2, 7))
    reference = hf(ids).logits
    seen, outputs = {}, []
    handle = fused.register_forward_hook(lambda m, a, out: outputs.append(out))

    def read(layer, kind, x):
        seen[kind] = x
        return x.clone()  # an identity replacement re-joins exactly

    with qkv_hooks(hf, read, layers=[0]):
        assert torch.equal(hf(ids).logits, reference)
    handle.remove()
    assert [seen[k].shape[2] for k in "qkv"] == list(n_heads)
    assert torch.equal(torch.cat([seen[k].flatten(2) for k in "qkv"], -1), outputs[0])

    def zero_keys(layer, kind, x):
        return torch.zeros_like(x) if kind == "k" else None

    with qkv_hooks(hf, zero_keys, layers=[0]):
        assert not torch.allclose(hf(ids).logits, reference)


# ----------------------------------------------------------------------------------------
# TL-named points: record, hooked, patched

ALL_FORMS = list(HOOK_POINTS)


def _names(layer: int) -> list[str]:
    return [form.format(layer=layer) for form in ALL_FORMS]


def _no_hooks_left(hf) -> bool:
    return not _ACTIVE and all(not (m._forward_hooks or m._forward_pre_hooks) for m in hf.modules())


def test_record_equals_the_bridge_on_every_point(tmp_path):
    model = load_model(saved_tiny(tmp_path / "tiny"))
    batch = model.encode(["hello there", "hi"])  # row 1 is left-padded
    ours = record(model, batch, _names(1))
    bridge = model.bridge
    bridge.set_use_attn_result(True)
    _, cache = bridge.run_with_cache(batch.input_ids, attention_mask=batch.attention_mask)
    real = batch.attention_mask.bool()
    for name in _names(1):
        assert ours[name].shape == cache[name].shape, name
        if name.endswith("hook_pattern"):  # padded query rows: ours are 0, the bridge's not
            mine, theirs = ours[name].transpose(1, 2)[real], cache[name].transpose(1, 2)[real]
        else:
            mine, theirs = ours[name][real], cache[name][real]
        assert torch.allclose(mine, theirs.to(mine.device), atol=1e-5), name


@torch.no_grad()
def test_reading_every_point_but_the_pattern_is_bit_exact(tiny):
    ids = _ids()
    reference = tiny.hf(ids).logits
    seen = []
    names = [n for layer in range(3) for n in _names(layer) if "pattern" not in n]
    with hooked(tiny.hf, {name: lambda x, n=name: seen.append(n) for name in names}):
        assert torch.equal(tiny.hf(ids).logits, reference)
    assert sorted(seen) == sorted(names)
    assert _no_hooks_left(tiny.hf)


def test_recorded_points_agree_with_each_other(tiny):
    ids = _ids()
    acts = record(tiny, ids, [*_names(0), *_names(1)])
    assert torch.equal(acts["blocks.0.hook_resid_post"], acts["blocks.1.hook_resid_pre"])
    summed = acts["blocks.1.attn.hook_result"].sum(2)
    assert torch.allclose(summed, acts["blocks.1.hook_attn_out"], atol=1e-6)
    resid_mid = acts["blocks.1.hook_resid_pre"] + acts["blocks.1.hook_attn_out"]
    assert torch.allclose(
        resid_mid + acts["blocks.1.hook_mlp_out"], acts["blocks.1.hook_resid_post"]
    )
    pattern = acts["blocks.1.attn.hook_pattern"]
    assert pattern.shape == (2, 4, 10, 10)
    assert torch.allclose(pattern.sum(-1), torch.ones(2, 4, 10), atol=1e-6)
    assert not acts["blocks.1.attn.hook_z"].requires_grad


def test_unknown_names_list_the_valid_forms(tiny):
    with pytest.raises(InputError, match=r"valid forms: blocks\.\{layer\}\.hook_resid_pre"):
        record(tiny, _ids(), ["blocks.1.attn.hook_zz"])
    with pytest.raises(InputError, match="layer 7 of a 3-layer"):
        record(tiny, _ids(), ["blocks.7.attn.hook_z"])


@torch.no_grad()
def test_pattern_replacement_lands_and_a_wrong_shape_raises(tiny):
    ids = _ids(1, 8)
    with hooked(tiny.hf, {"blocks.1.attn.hook_pattern": lambda p: None}):
        explicit = tiny.hf(ids).logits
    with hooked(tiny.hf, {"blocks.1.attn.hook_pattern": lambda p: p.clone()}):
        assert torch.equal(tiny.hf(ids).logits, explicit)

    def first_token_only(pattern):
        return torch.zeros_like(pattern).index_fill_(-1, torch.tensor([0]), 1.0)

    with hooked(tiny.hf, {"blocks.1.attn.hook_pattern": first_token_only}):
        edited = tiny.hf(ids).logits
    assert torch.equal(edited[:, 0], explicit[:, 0])  # row 0 already attends to key 0 only
    assert not torch.allclose(edited[:, 1:], explicit[:, 1:])
    too_narrow = {"blocks.1.attn.hook_pattern": lambda p: p[..., :-1]}
    with pytest.raises(HookError, match="hook_pattern"), hooked(tiny.hf, too_narrow):
        tiny.hf(ids)
    assert _no_hooks_left(tiny.hf)


@torch.no_grad()
def test_a_pattern_split_into_blocks_is_whole_and_replaced_in_every_block(tiny, monkeypatch):
    batch = tiny.encode(["the first prompt is longest", "a short one"])  # padded, 27 tokens
    name = "blocks.1.attn.hook_pattern"
    whole = record(tiny, batch, [name])[name]
    uniform = {name: lambda p: torch.tril(torch.ones_like(p)) / torch.arange(1, 28)[:, None]}
    with hooked(tiny.hf, uniform):
        one_block = tiny.hf(**batch).logits
    monkeypatch.setattr("interp.explicit_attention._BLOCK_BYTES", 4 * 2 * 4 * 27 * 5)  # 5 rows
    assert torch.allclose(record(tiny, batch, [name])[name], whole, atol=1e-6)
    with hooked(tiny.hf, uniform):
        assert torch.allclose(tiny.hf(**batch).logits, one_block, atol=1e-5)
    assert not torch.allclose(tiny.hf(**batch).logits[0], one_block[0], atol=1e-3)


POINT_NAMES = [f"blocks.{layer}.attn.hook_{p}" for layer in range(3) for p in "zqkv"]


@torch.no_grad()
def test_an_identity_patch_is_bit_exact(tiny):
    batch = tiny.encode(["hello there", "hi", "abc"])
    reference = tiny.hf(**batch).logits
    source = record(tiny, batch, POINT_NAMES)
    patches = [
        HeadPatch(row=row, layer=layer, head=head, point=point)
        for row in range(3)
        for layer in range(3)
        for point, n_heads in (("z", 4), ("q", 4), ("k", 2), ("v", 2))
        for head in range(n_heads)
    ]
    with patched(tiny.hf, source, patches):
        assert torch.equal(tiny.hf(**batch).logits, reference)
    assert _no_hooks_left(tiny.hf)


@torch.no_grad()
def test_per_row_patches_equal_one_patch_at_a_time(tiny):
    clean, corrupt = _ids(2, 9), _ids(2, 9)
    source = record(tiny, corrupt, POINT_NAMES)
    jobs = [  # (clean prompt, patch for that prompt alone in a batch of its own)
        (0, HeadPatch(row=0, layer=1, head=2)),
        (1, HeadPatch(row=0, layer=1, head=0, positions=(3, -1))),
        (0, HeadPatch(row=0, layer=0, head=1, point="k", positions=4)),
        (1, HeadPatch(row=0, layer=2, head=3, point="q")),
        (1, HeadPatch(row=0, layer=1, head=1, point="v", positions=[2, 5, 6])),
    ]
    expected = []
    for prompt, patch in jobs:
        alone = HeadPatch(**{**patch.__dict__, "source_row": prompt})
        with patched(tiny.hf, source, [alone]):
            expected.append(tiny.hf(clean[prompt : prompt + 1]).logits[0])
    rows = torch.tensor([prompt for prompt, _ in jobs])
    batched = [
        HeadPatch(**{**patch.__dict__, "row": i, "source_row": prompt})
        for i, (prompt, patch) in enumerate(jobs)
    ]
    with patched(tiny.hf, source, batched):
        got = tiny.hf(clean[rows]).logits
    plain = tiny.hf(clean[rows]).logits
    for i in range(len(jobs)):
        assert torch.allclose(got[i], expected[i], atol=1e-6)
        assert not torch.allclose(got[i], plain[i], atol=1e-3)  # each patch did something


@torch.no_grad()
def test_a_patch_at_one_position_leaves_earlier_positions_alone(tiny):
    clean, corrupt = _ids(1, 10), _ids(1, 10)
    source = record(tiny, corrupt, ["blocks.0.attn.hook_z"])
    reference = tiny.hf(clean).logits
    with patched(tiny.hf, source, [HeadPatch(row=0, layer=0, head=1, positions=(6,))]):
        got = tiny.hf(clean).logits
    assert torch.equal(got[:, :6], reference[:, :6])
    assert not torch.allclose(got[:, 6], reference[:, 6])


def test_gradients_reach_exactly_the_patched_source_entries(tiny):
    clean, corrupt = _ids(2, 8), _ids(2, 8)
    source = record(tiny, corrupt, ["blocks.1.attn.hook_z"], grad=True)
    z = source["blocks.1.attn.hook_z"].detach().requires_grad_(True)
    patch = HeadPatch(row=0, layer=1, head=2, source_row=1, positions=(5, 7))
    with patched(tiny.hf, {"blocks.1.attn.hook_z": z}, [patch]):
        tiny.hf(clean).logits[0, -1].sum().backward()
    touched = z.grad.abs().sum(-1) > 0  # [batch, pos, head]
    expected = torch.zeros_like(touched)
    expected[1, [5, 7], 2] = True
    assert torch.equal(touched, expected)
    assert record(tiny, corrupt, ["blocks.1.attn.hook_z"], grad=True)[
        "blocks.1.attn.hook_z"
    ].requires_grad


def test_patches_nest_with_other_hooks_and_clean_up_on_exceptions(tiny):
    ids = _ids()
    source = record(tiny, ids, POINT_NAMES)
    patch = HeadPatch(row=0, layer=1, head=0)
    with (
        pytest.raises(RuntimeError),
        head_output_hooks(tiny.hf, lambda layer, z: None),
        hooked(tiny.hf, {"blocks.2.attn.hook_pattern": lambda p: None}),
        patched(tiny.hf, source, [patch]),
    ):
        tiny.hf(ids)
        raise RuntimeError("boom")
    assert _no_hooks_left(tiny.hf)
    assert tiny.hf.config._attn_implementation != ATTENTION_IMPLEMENTATION


def test_bad_patches_are_one_line_errors(tiny):
    source = record(tiny, _ids(), ["blocks.1.attn.hook_z"])
    with pytest.raises(InputError, match="point 'pattern'"):
        HeadPatch(row=0, layer=1, head=0, point="pattern")
    unrecorded, too_high = HeadPatch(row=0, layer=2, head=0), HeadPatch(row=0, layer=1, head=4)
    with pytest.raises(HookError, match="no source activations"):
        patched(tiny.hf, source, [unrecorded]).__enter__()
    with pytest.raises(InputError, match="head must be < 4"):
        patched(tiny.hf, source, [too_high]).__enter__()
    twice = [HeadPatch(row=0, layer=1, head=0), HeadPatch(row=0, layer=1, head=0, positions=2)]
    with pytest.raises(InputError, match="same"):
        patched(tiny.hf, source, twice).__enter__()
