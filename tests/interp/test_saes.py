"""SAEs with sae-lens: training on collected activations, save/load with provenance."""

from dataclasses import replace

import pytest
import torch
from sae_lens import SAE, StandardSAE, StandardSAEConfig

from interp.activations import collect_heads, collect_tokens
from interp.errors import ConfigError, InputError
from interp.saes import (
    SAETrainConfig,
    TrainedSAE,
    hook_width,
    reconstruction,
    splice_loss,
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


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError):
        SAETrainConfig(d_sae=0)
    with pytest.raises(ConfigError):
        SAETrainConfig(lr=0.0)
    with pytest.raises(ConfigError):
        SAETrainConfig(seed=-1)


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
    config = folder / "cfg.json"
    for text, message in [
        ("{not json", "not valid JSON"),
        ("[]", "not a sae-lens config"),
        ('{"metadata": 3}', "not a sae-lens config"),
        ('{"metadata": {"interp_provenance": [1]}}', "malformed interp provenance"),
        ('{"metadata": {}}', "names no hook point"),
    ]:
        config.write_text(text)
        with pytest.raises(InputError, match=message) as error:
            TrainedSAE.load(folder)
        assert "\n" not in str(error.value)
    config.write_bytes(b"\xff\xfe{}")
    with pytest.raises(InputError, match="not UTF-8"):
        TrainedSAE.load(folder)


def _plain_sae(folder, sae_class=StandardSAE, config_class=StandardSAEConfig, d_in=64):
    """An SAE saved by sae-lens alone (random weights, no interp provenance) on HOOK."""
    config = config_class(d_in=d_in, d_sae=32)
    config.metadata.hook_name = HOOK
    torch.manual_seed(0)
    sae = sae_class(config)
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.normal_()
    sae.save_model(folder)
    return sae


def test_a_plain_sae_lens_sae_loads_and_is_checked_by_its_width(tmp_path, model):
    plain = _plain_sae(tmp_path / "plain")
    loaded = TrainedSAE.load(tmp_path / "plain", model=model, hook=HOOK)
    assert loaded.provenance is None and loaded.hook == HOOK and loaded.reduction == "tokens"
    assert torch.equal(loaded.sae.W_enc, plain.W_enc)
    assert hook_width(model, HOOK) == 64 and hook_width(model, "blocks.0.attn.hook_z") == 64
    with pytest.raises(InputError, match=r"blocks\.2\.hook_resid_post"):
        TrainedSAE.load(tmp_path / "plain", hook="blocks.2.hook_resid_post")
    _plain_sae(tmp_path / "narrow", d_in=48)
    with pytest.raises(InputError, match=r"48-wide.* has 64: it was made for another") as error:
        TrainedSAE.load(tmp_path / "narrow", model=model)
    assert "\n" not in str(error.value)
    loss = splice_loss(model, loaded, TEXTS)  # usable downstream without provenance
    assert loss.spliced > loss.clean


def test_a_plain_sae_with_broken_weights_is_one_line(tmp_path):
    _plain_sae(tmp_path / "plain")
    weights = tmp_path / "plain" / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(InputError, match="sae-lens cannot load") as error:
        TrainedSAE.load(tmp_path / "plain")
    assert "\n" not in str(error.value)
    weights.unlink()
    with pytest.raises(InputError, match="No SAE weights"):
        TrainedSAE.load(tmp_path / "plain")


def _with_weights(trained: TrainedSAE, **weights: torch.Tensor) -> TrainedSAE:
    """A copy of a trained SAE with some weights replaced (same provenance)."""
    sae = SAE.from_dict(trained.sae.cfg.to_dict())
    state = {**trained.sae.state_dict(), **weights}
    sae.load_state_dict(state)
    return TrainedSAE(sae, trained.provenance)


def _identity(trained: TrainedSAE) -> TrainedSAE:
    """relu(x) - relu(-x) = x: encoder [I, -I], decoder [I; -I], zero biases (bit-exact)."""
    eye = torch.eye(64)
    return _with_weights(
        trained,
        W_enc=torch.cat([eye, -eye], dim=1),
        W_dec=torch.cat([eye, -eye]),
        b_enc=torch.zeros(128),
        b_dec=torch.zeros(64),
    )


@pytest.fixture(scope="module")
def wide(acts):
    return train_sae(acts, replace(QUICK, d_sae=128))


def test_splicing_an_exact_reconstruction_changes_nothing(model, wide):
    identity = _identity(wide)
    loss = splice_loss(model, identity, TEXTS, batch_size=2)
    assert loss.spliced == loss.clean and loss.increase == 0.0
    assert loss.n_tokens == sum(n - 1 for n in model.encode(TEXTS).lengths)


def test_clean_loss_is_the_models_own_next_token_loss(model, trained):
    loss = splice_loss(model, trained, TEXTS, batch_size=2)  # left-padded batches
    ids = [model.encode(text).input_ids for text in TEXTS]
    with torch.no_grad():
        own = [float(model.hf(input_ids=i, labels=i).loss) * (i.shape[1] - 1) for i in ids]
    assert loss.clean == pytest.approx(sum(own) / loss.n_tokens, rel=1e-5)
    assert loss.spliced != loss.clean


def test_a_zero_reconstruction_hurts_and_skip_first_keeps_the_first_token(model, acts, wide):
    zero = _with_weights(wide, W_dec=torch.zeros(128, 64), b_dec=torch.zeros(64))
    everywhere = splice_loss(model, zero, TEXTS)
    assert everywhere.spliced != everywhere.clean  # a random-init model: near-uniform anyway
    later = collect_tokens(model, TEXTS * 4, HOOK, skip_first=True)
    skipping = train_sae(later, replace(QUICK, d_sae=128))
    assert skipping.provenance.config["skip_first"] is True
    zero_later = _with_weights(skipping, W_dec=torch.zeros(128, 64), b_dec=torch.zeros(64))
    kept = splice_loss(model, zero_later, TEXTS)
    assert kept.clean == everywhere.clean and kept.spliced != everywhere.spliced


def test_constant_norm_rescale_trains_on_unit_scale_rows_and_keeps_the_scaling(
    tmp_path, model, acts
):
    trained = train_sae(acts, replace(QUICK, normalize="constant_norm_rescale", epochs=5))
    assert trained.sae.cfg.normalize_activations == "constant_norm_rescale"
    x = acts.rows()[:8]
    with torch.no_grad():
        once, twice = trained.sae(x), trained.sae(2 * x)
    torch.testing.assert_close(twice, 2 * once)  # scale-equivariant: the input is normalised
    loaded = TrainedSAE.load(trained.save(tmp_path / "sae"), model=model)
    assert loaded == trained and loaded.sae.cfg.normalize_activations == "constant_norm_rescale"
    with pytest.raises(ConfigError):
        SAETrainConfig(normalize="layer_norm")


def test_splice_loss_refuses_head_output_saes_and_other_models(model, trained):
    heads = collect_heads(model, TEXTS)
    head_sae = train_sae(heads, replace(QUICK, batch_size=8))
    with pytest.raises(InputError, match="head outputs"):
        splice_loss(model, head_sae, TEXTS)
    with pytest.raises(InputError, match="trained on"):
        splice_loss(tiny_llama(seed=1), trained, TEXTS)
    with pytest.raises(InputError, match="empty"):
        splice_loss(model, trained, [])
