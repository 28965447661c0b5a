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
    with pytest.raises(InputError, match="512"):
        tiny.encode("x" * 513)
    with pytest.raises(InputError, match="prompt 1 has 513 tokens"):
        tiny.encode(["ok", "x" * 513])  # one overlong text in a batch is refused too
    with pytest.raises(InputError, match="empty"):
        tiny.encode("")
    with pytest.raises(InputError, match="Nothing to encode"):
        tiny.encode([])


def test_encode_gives_a_batch_that_hf_calls_take(tiny):
    batch = tiny.encode("abc")
    assert batch.input_ids.shape == (1, 3) and batch.attention_mask.tolist() == [[1, 1, 1]]
    with torch.no_grad():
        # A batch of one is the plain forward, bit for bit.
        assert torch.equal(tiny.hf(**batch).logits, tiny.hf(batch.input_ids).logits)
    out = tiny.hf.generate(**batch, max_new_tokens=2, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 5)


def test_encode_left_pads_a_list_with_mask_and_positions(tiny):
    batch = tiny.encode(["abcd", "xy"])
    assert batch.lengths == [4, 2]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3], [0, 0, 0, 1]]
    assert torch.equal(batch.ids(1), tiny.encode("xy").input_ids[0])
    assert batch.input_ids[1, :2].tolist() == [tiny.tokenizer.pad_token_id] * 2
    with torch.no_grad():
        padded = tiny.hf(**batch).logits[1, -1]
        alone = tiny.hf(**tiny.encode("xy")).logits[0, -1]
    # Same row, different kernels' padding paths: equal to float32 rounding.
    assert torch.allclose(padded, alone, atol=1e-5)


def test_a_list_of_token_ids_is_refused_with_a_reason(tiny):
    with pytest.raises(InputError, match="not token ids"):
        tiny.encode([[3, 4, 5]])  # type: ignore[list-item]


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
    text = "When Mary and John went to the store, John gave a drink to"
    ids = default_model.encode(text).input_ids
    with torch.no_grad():
        hf_logits = default_model.hf(ids).logits
        _, cache = bridge.run_with_cache(ids)
    assert "blocks.3.attn.hook_pattern" in cache
    assert cache["blocks.3.attn.hook_pattern"].shape[1:] == (9, ids.shape[1], ids.shape[1])
    # The HF model the analyzers hook is untouched: still plain HF attention modules.
    attention = default_model.hf.model.layers[0].self_attn
    assert type(attention).__module__.startswith("transformers.")
    assert torch.equal(hf_logits, default_model.hf(ids).logits)


@pytest.mark.integration
def test_bridge_prepends_bos_to_text_it_tokenizes(default_model):
    """The documented shift: HF position p is bridge position p + 1 when the bridge tokenizes."""
    text = "When Mary and John went to the store"
    ids = default_model.encode(text).input_ids
    bridged = default_model.bridge.to_tokens(text).cpu()
    assert default_model.tokenizer.bos_token_id not in ids[0].tolist()  # SmolLM2 adds none
    assert bridged[0, 0] == default_model.tokenizer.bos_token_id
    assert torch.equal(bridged[:, 1:], ids)


def test_a_registered_name_is_built_by_its_builder(monkeypatch, tiny):
    from interp import models

    monkeypatch.setattr(models, "_BUILDERS", {})
    calls = []

    def build(placement, dtype):
        calls.append((placement.device, dtype))
        return tiny

    models.register_builder("toy", build, takes_images=True)
    assert load_model("toy", device="cpu", dtype="bfloat16") is tiny
    assert calls == [(torch.device("cpu"), torch.bfloat16)]
    assert models.takes_images("toy")
    with pytest.raises(UnsupportedModelError, match="declares no config"):
        models.load_config("toy")
    assert models.registered_builder("Toy") is None  # matched exactly; other specs pass on


def test_a_declared_module_that_registers_nothing_is_refused(monkeypatch):
    from interp import models

    monkeypatch.setattr(models, "_BUILDERS", {})
    monkeypatch.setattr(models, "_DECLARED", {"ghost": "interp.errors"})
    with pytest.raises(UnsupportedModelError, match="registers no builder"):
        load_model("ghost")


def test_shapes_llava_registers_itself_when_first_named():
    """From a fresh interpreter: the loader imports shapes only when the name is asked for."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from interp.errors import InputError\n"
        "from interp.models import load_model, takes_images\n"
        "print('probes.organisms.shapes' in sys.modules)\n"
        "print(takes_images('shapes-llava'), 'probes.organisms.shapes.model' in sys.modules)\n"
        "try:\n"
        "    load_model('shapes-llava', device_map='auto')\n"
        "except InputError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "False",
        "True True",
        "shapes-llava loads on one device: pass device=, not device_map=.",
    ]


@pytest.mark.integration
def test_shapes_llava_config_is_its_language_models():
    from interp.models import load_config

    assert load_config("shapes-llava").to_dict() == load_config(None).to_dict()
