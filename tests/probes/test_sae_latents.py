"""SAE latents per token, and heads' direct contributions to a latent, on tiny models."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from sae_lens import (
    GatedSAE,
    GatedSAEConfig,
    JumpReLUSAE,
    JumpReLUSAEConfig,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
)

from interp.activations import collect_heads, collect_tokens
from interp.errors import InputError
from interp.hook_points import record
from interp.saes import SAETrainConfig, TrainedSAE, train_sae
from probes.sae_latents import latent_attribution, top_latents
from tests.tiny import tiny_llama

HOOK = "blocks.1.hook_resid_post"
TEXTS = ["hello world", "a much longer text than the first", "the cat sat", "xyz"] * 4
QUICK = SAETrainConfig(d_sae=32, l1_coefficient=1e-3, lr=3e-3, batch_size=32, epochs=20)
PROMPT = "the cat sat on the mat"


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


@pytest.fixture(scope="module", params=["none", "constant_norm_rescale"])
def trained(request, model):
    acts = collect_tokens(model, TEXTS, HOOK)
    return train_sae(acts, replace(QUICK, normalize=request.param))


def test_top_latents_are_each_tokens_strongest_active_latents(model, trained):
    table = top_latents(model, trained, [PROMPT, "hi"], k=3).data
    assert table.columns.tolist() == [
        "example",
        "position",
        "token",
        "rank",
        "latent",
        "activation",
    ]
    ids = model.encode(PROMPT).input_ids
    x = record(model, ids, [HOOK])[HOOK][0]
    with torch.no_grad():
        acts = trained.sae.encode(x)  # [pos, d_sae]
    first = table[table.example == 0]
    assert sorted(set(first.position)) == list(range(ids.shape[1]))  # every token has some
    for row in first.itertuples():
        expected = acts[row.position].topk(3)
        assert row.latent == int(expected.indices[row.rank])
        assert row.activation == pytest.approx(float(expected.values[row.rank]))
        assert row.activation > 0
        assert row.token == model.tokenizer.decode([int(ids[0, row.position])])
    assert set(table.example) == {0, 1}


def test_head_contributions_and_the_rest_add_up_to_the_pre_activation(model, trained):
    latent = int(torch.argmax(trained.sae.W_enc.norm(dim=0)))
    scores = latent_attribution(model, trained, PROMPT, latent, position=-2)
    data = scores.data
    assert sorted(set(data.layer)) == [0, 1]  # heads after the hook cannot write it
    ids = model.encode(PROMPT).input_ids
    position = ids.shape[1] - 2
    names = [HOOK, "blocks.0.hook_resid_pre", "blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out"]
    parts = record(model, ids, names)
    x = parts[HOOK][0, position]
    sae, w = trained.sae, trained.sae.W_enc[:, latent].detach()
    normalised = sae.cfg.normalize_activations == "constant_norm_rescale"
    scale = x.shape[-1] ** 0.5 / x.norm() if normalised else 1.0
    rest = sum(float(parts[name][0, position] @ w) for name in names[1:]) * scale
    biases = float((sae.b_enc[latent] - sae.b_dec @ w).detach())
    whole = float(data.score.sum()) + float(rest) + biases
    assert data.pre_activation.iloc[0] == pytest.approx(whole, rel=1e-4, abs=1e-5)
    with torch.no_grad():
        direct = float(sae.encode(x[None])[0, latent])
    assert data.activation.iloc[0] == pytest.approx(direct, abs=1e-6)
    np.testing.assert_allclose(data.share.sum(), 1.0, rtol=1e-5)


@torch.no_grad()
def test_only_the_one_head_that_writes_the_residual_scores(model, trained):
    silenced = tiny_llama()  # the same weights; every head but L1H2 writes nothing
    for layer in silenced.hf.model.layers:
        projection = layer.self_attn.o_proj.weight
        keep = projection[:, 2 * 16 : 3 * 16].clone()
        projection.zero_()
        if layer is silenced.hf.model.layers[1]:
            projection[:, 2 * 16 : 3 * 16] = keep
    copy = replace(
        trained, provenance=replace(trained.provenance, weights_hash=silenced.weights_hash)
    )
    scores = latent_attribution(silenced, copy, PROMPT, 0).data.set_index("label")
    assert (scores.drop(index="L1H2").score == 0).all()
    assert scores.loc["L1H2", "score"] != 0
    assert scores.loc["L1H2", "share"] == 1.0


def test_bad_latents_positions_and_saes_are_input_errors(model, trained):
    with pytest.raises(InputError, match="Latent 32"):
        latent_attribution(model, trained, PROMPT, 32)
    with pytest.raises(InputError, match="Position"):
        latent_attribution(model, trained, "hi", 0, position=5)
    with pytest.raises(InputError, match="trained on"):
        top_latents(tiny_llama(seed=1), trained, PROMPT)
    with pytest.raises(InputError, match="k must"):
        top_latents(model, trained, PROMPT, k=0)
    mlp = train_sae(collect_tokens(model, TEXTS, "blocks.1.hook_mlp_out"), QUICK)
    with pytest.raises(InputError, match="residual stream"):
        latent_attribution(model, mlp, PROMPT, 0)
    heads = train_sae(collect_heads(model, TEXTS), replace(QUICK, batch_size=8))
    with pytest.raises(InputError, match="head outputs"):
        top_latents(model, heads, PROMPT)


def _plain(config_class, sae_class, hook=HOOK, **settings):
    """A random sae-lens SAE on `hook`, as loaded without interp provenance."""
    config = config_class(d_in=64, d_sae=32, **settings)
    config.metadata.hook_name = hook
    torch.manual_seed(0)
    sae = sae_class(config)
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.normal_(std=0.3)
    return TrainedSAE(sae, None)


@pytest.mark.parametrize(
    ("config_class", "sae_class", "settings"),
    [(TopKSAEConfig, TopKSAE, {"k": 4}), (JumpReLUSAEConfig, JumpReLUSAE, {})],
)
def test_plain_sae_lens_saes_of_other_architectures_give_their_own_activations(
    model, config_class, sae_class, settings
):
    trained = _plain(config_class, sae_class, **settings)
    table = top_latents(model, trained, [PROMPT], k=2).data
    ids = model.encode(PROMPT).input_ids
    with torch.no_grad():
        acts = trained.sae.encode(record(model, ids, [HOOK])[HOOK][0])
    assert len(table) > 0
    for row in table.itertuples():
        assert row.activation == pytest.approx(float(acts[row.position, row.latent]))
    latent = int(table.latent.iloc[0])
    heads = latent_attribution(model, trained, PROMPT, latent, position=0)
    assert heads.data.activation.iloc[0] == pytest.approx(float(acts[0, latent]))
    assert heads.provenance.config["sae_inputs"] is None  # made outside the toolkit


def test_saes_whose_pre_activation_does_not_split_over_heads_are_refused(model):
    with pytest.raises(InputError, match="GatedSAE has no"):
        latent_attribution(model, _plain(GatedSAEConfig, GatedSAE), PROMPT, 0)
    layer_norm = _plain(StandardSAEConfig, StandardSAE, normalize_activations="layer_norm")
    with pytest.raises(InputError, match="'layer_norm'"):
        latent_attribution(model, layer_norm, PROMPT, 0)


@pytest.mark.parametrize("reshape", ["hook_z", "none"])
def test_an_sae_on_head_outputs_reads_them_flattened_with_or_without_reshaping(model, reshape):
    hook = "blocks.1.attn.hook_z"
    trained = _plain(StandardSAEConfig, StandardSAE, hook=hook, reshape_activations=reshape)
    table = top_latents(model, trained, [PROMPT], k=1).data
    z = record(model, model.encode(PROMPT).input_ids, [hook])[hook][0]  # [pos, head, d_head]
    with torch.no_grad():
        sae = trained.sae  # standard: relu((x - b_dec) W_enc + b_enc), x the heads flattened
        hidden = (z.flatten(1) - sae.b_dec) @ sae.W_enc + sae.b_enc
    expected = hidden.relu().max(-1)
    active = expected.values > 0
    assert table.position.tolist() == torch.nonzero(active).flatten().tolist()
    assert table.latent.tolist() == expected.indices[active].tolist()
