"""SAEs with sae-lens: training on collected activations, save/load with provenance."""

import json
from dataclasses import replace

import pytest
import torch
from sae_lens import SAE

from interp.activations import collect_tokens
from interp.errors import ConfigError, InputError
from interp.saes import SAETrainConfig, TrainedSAE, reconstruction, train_sae
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


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError):
        SAETrainConfig(d_sae=0)
    with pytest.raises(ConfigError):
        SAETrainConfig(lr=0.0)


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
    with pytest.raises(InputError, match=r"blocks\.2\.hook_resid_post"):
        TrainedSAE.load(folder, hook="blocks.2.hook_resid_post")


def test_loading_what_is_not_an_interp_sae_is_an_input_error(tmp_path, trained):
    with pytest.raises(InputError, match="No SAE"):
        TrainedSAE.load(tmp_path)
    folder = trained.save(tmp_path / "sae")
    config = json.loads((folder / "cfg.json").read_text())
    del config["metadata"]["interp_provenance"]
    (folder / "cfg.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="no interp provenance"):
        TrainedSAE.load(folder)
    (folder / "cfg.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        TrainedSAE.load(folder)
