"""SAE plumbing: activations from the hook points, sae-lens training, save/load with provenance."""

import json
from dataclasses import replace

import pytest
import torch
from sae_lens import SAE

from interp.errors import ConfigError, InputError
from interp.heads import Head
from interp.hook_points import record
from interp.saes import (
    SAETrainConfig,
    TrainedSAE,
    collect_heads,
    collect_tokens,
    reconstruction,
    train_sae,
)
from tests.tiny import tiny_llama

HOOK = "blocks.1.hook_resid_post"
TEXTS = ["hello world", "a much longer text than the first", "hi", "the cat sat", "xyz"]
# Random-init residuals are small (norm ~0.2 per token): a light L1 keeps latents alive.
QUICK = SAETrainConfig(d_sae=64, l1_coefficient=1e-3, lr=3e-3, batch_size=32, seed=0)


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


@pytest.fixture(scope="module")
def acts(model):
    return collect_tokens(model, TEXTS * 4, HOOK, batch_size=8)


@pytest.fixture(scope="module")
def trained(acts):
    return train_sae(acts, replace(QUICK, epochs=40))


def test_collect_tokens_equals_record_on_the_same_batches(model):
    whole = collect_tokens(model, TEXTS, HOOK, batch_size=len(TEXTS))
    encoding = model.encode(TEXTS)
    direct = record(model, encoding, [HOOK])[HOOK][encoding.attention_mask.bool()]
    assert whole.values.shape == (sum(encoding.lengths), 64)
    assert torch.equal(whole.values, direct)
    one_by_one = collect_tokens(model, TEXTS, HOOK, batch_size=1)
    singles = [record(model, model.encode(text), [HOOK])[HOOK][0] for text in TEXTS]
    assert torch.equal(one_by_one.values, torch.cat(singles))
    assert (whole.hook, whole.layers, whole.reduction) == (HOOK, (1,), "tokens")
    assert whole.weights_hash == model.weights_hash and whole.n_texts == len(TEXTS)


def test_collect_heads_is_each_heads_output_averaged_over_real_positions(model):
    heads = collect_heads(model, TEXTS, layers=[0, 2], batch_size=2)
    assert heads.values.shape == (len(TEXTS), 2 * 4, 64)
    assert heads.heads[:5] == (Head(0, 0), Head(0, 1), Head(0, 2), Head(0, 3), Head(2, 0))
    for row, text in enumerate(TEXTS):  # alone, unpadded: a plain mean over positions
        names = ["blocks.0.attn.hook_result", "blocks.2.attn.hook_result", "blocks.2.hook_attn_out"]
        alone = record(model, model.encode(text), names)
        expected = torch.cat([alone[name][0].mean(0) for name in names[:2]])
        torch.testing.assert_close(heads.values[row], expected, rtol=1e-5, atol=1e-6)
        # the heads' outputs add up to the attention output (Llama's o_proj has no bias)
        attn_out = alone["blocks.2.hook_attn_out"][0].mean(0)
        torch.testing.assert_close(heads.values[row, 4:].sum(0), attn_out, rtol=1e-4, atol=1e-6)


def test_select_keeps_some_texts_of_head_outputs_and_records_which(model, acts):
    heads = collect_heads(model, TEXTS)
    picked = heads.select([3, 1])
    assert torch.equal(picked.values, heads.values[[3, 1]]) and picked.n_texts == 2
    hashes = {heads.data_hash, picked.data_hash, heads.select([1, 3]).data_hash}
    assert len(hashes) == 3
    with pytest.raises(InputError):
        acts.select([0])


def test_collection_reports_progress(model):
    calls = []
    collect_heads(model, TEXTS, batch_size=2, progress=lambda done, total: calls.append(done))
    assert calls == [2, 4, 5]


@pytest.mark.parametrize(
    "hook",
    ["blocks.1.hook_resid_mid", "blocks.1.attn.hook_z", "resid_post", "blocks.3.hook_mlp_out"],
)
def test_bad_token_hooks_are_one_line_input_errors(model, hook):
    with pytest.raises(InputError) as error:
        collect_tokens(model, TEXTS, hook)
    assert "\n" not in str(error.value)


def test_bad_layers_and_empty_datasets_are_input_errors(model):
    with pytest.raises(InputError, match="out of range"):
        collect_heads(model, TEXTS, layers=[0, 3])
    with pytest.raises(InputError, match="empty"):
        collect_tokens(model, [], HOOK)
    with pytest.raises(InputError, match="empty"):
        collect_heads(model, [])
    with pytest.raises(InputError):
        collect_tokens(model, ["fine", ""], HOOK)
    with pytest.raises(ConfigError):
        SAETrainConfig(d_sae=0)


def test_training_lowers_reconstruction_loss(acts, trained):
    one_step = train_sae(acts, replace(QUICK, batch_size=len(acts.rows())))
    before, after = reconstruction(one_step.sae, acts), reconstruction(trained.sae, acts)
    assert after.mse < 0.5 * before.mse
    assert after.variance_explained > 0.5
    assert 0 < after.l0 < 64


def test_training_is_seeded_and_leaves_the_global_rng_alone(acts, trained):
    state = torch.random.get_rng_state()
    again = train_sae(acts, replace(QUICK, epochs=40))
    assert torch.equal(torch.random.get_rng_state(), state)
    for key, value in trained.sae.state_dict().items():
        assert torch.equal(again.sae.state_dict()[key], value)


def test_training_reports_steps(acts):
    calls = []
    train_sae(
        acts, replace(QUICK, epochs=2), progress=lambda done, total: calls.append((done, total))
    )
    per_epoch = len(acts.rows()) // QUICK.batch_size
    assert calls == [(step, 2 * per_epoch) for step in range(1, 2 * per_epoch + 1)]


def test_save_load_round_trip_in_sae_lens_format(tmp_path, model, trained):
    folder = trained.save(tmp_path / "sae")
    loaded = TrainedSAE.load(folder, model=model, hook=HOOK)
    assert loaded == trained
    assert loaded.provenance.config["hook"] == HOOK
    plain = SAE.load_from_disk(folder)  # sae-lens alone reads it
    assert torch.equal(plain.W_dec, trained.sae.W_dec)
    assert plain.cfg.metadata.hook_name == HOOK


def test_loading_for_another_model_or_hook_is_a_one_line_error(tmp_path, trained):
    folder = trained.save(tmp_path / "sae")
    with pytest.raises(InputError, match="trained on") as error:
        TrainedSAE.load(folder, model=tiny_llama(seed=1))
    assert "\n" not in str(error.value)
    with pytest.raises(InputError, match=r"blocks\.2\.hook_resid_post"):
        TrainedSAE.load(folder, model=tiny_llama(), hook="blocks.2.hook_resid_post")


def test_loading_what_is_not_an_interp_sae_is_an_input_error(tmp_path, trained):
    with pytest.raises(InputError, match="No SAE"):
        TrainedSAE.load(tmp_path)
    folder = trained.save(tmp_path / "sae")
    config = json.loads((folder / "cfg.json").read_text())
    del config["metadata"]["interp_provenance"]
    (folder / "cfg.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="no interp provenance"):
        TrainedSAE.load(folder)
