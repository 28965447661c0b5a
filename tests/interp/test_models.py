import copy

import pytest
import torch

from interp.errors import InputError, UnsupportedModelError
from interp.models import geometry_of, load_model


def test_geometry_of_tiny_gqa_model(tiny):
    assert tiny.geometry == geometry_of(tiny.hf)
    g = tiny.geometry
    assert (g.n_layers, g.n_heads, g.n_kv_heads, g.d_head, g.group_size) == (3, 4, 2, 16, 2)


def test_bad_specs_fail_with_what_was_tried(tmp_path):
    with pytest.raises(UnsupportedModelError, match="No GGUF file"):
        load_model(tmp_path / "missing.gguf")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UnsupportedModelError, match=r"neither a \.gguf file nor"):
        load_model(tmp_path / "notes.txt")
    with pytest.raises(UnsupportedModelError, match="Cannot load a causal LM"):
        load_model(tmp_path)  # a folder without a checkpoint


def test_encode_refuses_overlong_and_empty_input(tiny):
    assert len(tiny.encode("abc")) == 3
    with pytest.raises(InputError, match="512"):
        tiny.encode("x" * 513)
    with pytest.raises(InputError, match="empty"):
        tiny.check_length(0)


def test_weights_fingerprint_tracks_the_weights(tiny):
    from interp.models import Model

    changed = copy.deepcopy(tiny.hf)
    with torch.no_grad():
        changed.lm_head.weight[0, 0] += 1.0
    assert Model.from_hf(changed, tiny.tokenizer).weights_hash != tiny.weights_hash
    assert Model.from_hf(copy.deepcopy(tiny.hf), tiny.tokenizer).weights_hash == tiny.weights_hash


@pytest.mark.integration
def test_default_model_loads_offline_with_its_geometry(default_model):
    g = default_model.geometry
    assert (g.n_layers, g.n_heads, g.n_kv_heads, g.d_head) == (30, 9, 3, 64)
    assert default_model.spec == "SmolLM2-135M-Instruct"
    assert len(default_model.weights_hash) == 64
    assert default_model.context_length == 8192


@pytest.mark.integration
def test_bridge_is_booted_on_a_copy(default_model):
    bridge = default_model.bridge
    ids = default_model.encode("When Mary and John went to the store, John gave a drink to")
    with torch.no_grad():
        hf_logits = default_model.hf(ids[None]).logits
        _, cache = bridge.run_with_cache(ids[None])
    assert "blocks.3.attn.hook_pattern" in cache
    assert cache["blocks.3.attn.hook_pattern"].shape[1:] == (9, len(ids), len(ids))
    # The HF model the analyzers hook is untouched: still plain HF attention modules.
    attention = default_model.hf.model.layers[0].self_attn
    assert type(attention).__module__.startswith("transformers.")
    assert torch.equal(hf_logits, default_model.hf(ids[None]).logits)
