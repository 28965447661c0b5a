"""`interp sae train|latents` and `interp circuit sae` on tiny models: folders, numbers, errors."""

import json

import pandas as pd
import pytest
from sae_lens import StandardSAE, StandardSAEConfig
from typer.testing import CliRunner

from interp.cli import app
from interp.errors import InputError
from interp.saes import TrainedSAE
from interp.saes_workflow import hook_name, split_texts
from tests.circuits.word_model import saved_words_tiny
from tests.tiny import saved_tiny

runner = CliRunner()
SMALL = ["--d-sae", "16", "--epochs", "2", "--batch-size", "16", "--holdout-every", "3"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("sae_cli")
    saved_tiny(root / "model")
    saved_tiny(root / "other", seed=1)
    texts = [f"The {w} sat on the mat and looked at the {w}." for w in ("cat", "dog", "owl")]
    (root / "texts.txt").write_text("\n\n".join(texts * 2))
    (root / "empty.txt").write_text("\n\n  \n")
    (root / "one_token.txt").write_text("a\n\nb\n\nc")  # the byte tokenizer: one token each
    return root


@pytest.fixture(scope="module")
def trained_folder(files):
    out = files / "trained"
    argv = ["sae", "train", "--model", str(files / "model"), "--layer", "1"]
    result = runner.invoke(
        app, [*argv, "--texts", str(files / "texts.txt"), *SMALL, "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out


def _one_error(result) -> str:
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    return errors[0]


def test_hook_names_from_a_point_and_a_layer_or_a_full_name():
    assert hook_name("hook_resid_post", 3) == "blocks.3.hook_resid_post"
    assert hook_name("blocks.3.hook_mlp_out", None) == "blocks.3.hook_mlp_out"
    assert hook_name("blocks.3.hook_mlp_out", 3) == "blocks.3.hook_mlp_out"
    for hook, layer, message in [
        ("hook_resid_post", None, "needs --layer"),
        ("blocks.3.hook_resid_post", 4, "names layer 3"),
        ("hook_resid_mid", 3, "Unknown hook point"),
        ("blocks.3.attn.hook_z", None, "Unknown hook point"),
        ("hook_resid_post", -1, "at least 0"),
    ]:
        with pytest.raises(InputError, match=message):
            hook_name(hook, layer)


def test_every_nth_text_is_held_out():
    assert split_texts(list("abcdefg"), 3) == (list("bcef"), list("adg"))
    with pytest.raises(InputError, match="none to train"):
        split_texts(["a"], 8)


def test_train_writes_a_loadable_sae_the_scores_and_a_manifest(files, trained_folder):
    summary = json.loads((trained_folder / "summary.json").read_text())
    assert summary["hook"] == "blocks.1.hook_resid_post"
    assert summary["train_texts"] == 4 and summary["heldout_texts"] == 2
    assert summary["loss_spliced"] - summary["loss_clean"] == pytest.approx(
        summary["loss_increase"]
    )
    assert 0 < summary["l0"] <= 16
    manifest = json.loads((trained_folder / "manifest.json").read_text())
    assert {"sae/cfg.json", "sae/sae_weights.safetensors", "summary.json"} <= set(manifest["files"])
    trained = TrainedSAE.load(trained_folder / "sae", hook="blocks.1.hook_resid_post")
    assert trained.sae.cfg.normalize_activations == "constant_norm_rescale"
    assert trained.provenance.n_inputs == 4


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--layer", "1", "--hook", "hook_resid_middle"], "Unknown hook point"),
        (["--layer", "7"], "out of range"),
        (["--layer", "1", "--texts", "empty.txt"], "no prompts"),
        (["--hook", "blocks.1.hook_resid_post", "--layer", "2"], "names layer 1"),
        (["--layer", "1", "--normalize", "layer_norm"], "--normalize"),
        (["--layer", "1", "--texts", "one_token.txt", "--skip-first"], "No activation rows"),
    ],
)
def test_train_bad_input_is_one_line(files, tmp_path, extra, message):
    extra = [str(files / e) if e.endswith(".txt") else e for e in extra]
    if "--texts" not in extra:
        extra += ["--texts", str(files / "texts.txt")]
    argv = ["sae", "train", "--model", str(files / "model"), *extra, *SMALL, "-o", str(tmp_path)]
    assert message in _one_error(runner.invoke(app, argv))


def test_latents_tables_and_the_sae_of_another_model(files, trained_folder, tmp_path):
    sae = str(trained_folder / "sae")
    argv = ["sae", "latents", "--sae", sae, "--prompt", "The cat sat.", "--no-static"]
    result = runner.invoke(
        app, [*argv, "--model", str(files / "model"), "--latent", "3", "-o", str(tmp_path / "a")]
    )
    assert result.exit_code == 0, result.output
    latents = pd.read_parquet(tmp_path / "a" / "latents.parquet")
    assert set(latents.position) <= set(range(12)) and (latents.activation > 0).all()
    heads = pd.read_parquet(tmp_path / "a" / "latent_3_heads.parquet")
    assert len(heads) == 2 * 4 and (heads.latent == 3).all()  # layers 0-1 write resid_post 1
    other = [*argv, "--model", str(files / "other"), "-o", str(tmp_path / "b")]
    assert "trained on" in _one_error(runner.invoke(app, other))
    missing = [*argv, "--model", str(files / "model"), "--sae", str(tmp_path)]
    assert "No SAE" in _one_error(runner.invoke(app, [*missing, "-o", str(tmp_path / "c")]))


def test_circuit_sae_scores_seeds_against_a_reference(tmp_path):
    words = saved_words_tiny(tmp_path / "words")
    argv = ["circuit", "sae", "--model", str(words), "--n", "6", "--epochs", "20", "--no-static"]
    result = runner.invoke(app, [*argv, "--seeds", "2", "-o", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    aucs = pd.read_parquet(tmp_path / "a" / "ioi_sae_auc.parquet")
    assert aucs.seed.tolist() == [0, 1]
    assert summary["node_auc"]["per_seed"] == aucs.node_auc.tolist()
    assert summary["node_auc"]["mean"] == pytest.approx(aucs.node_auc.mean())
    a, b = aucs.node_auc  # the reference's spread: population std, |a - b| / 2 for two seeds
    assert summary["node_auc"]["std"] == pytest.approx(abs(a - b) / 2)
    assert summary["node_auc"]["ddof"] == 0
    per_seed = pd.read_parquet(tmp_path / "a" / "ioi_sae_nodes.parquet")
    assert len(per_seed) == 2 * 2 * 4  # seeds x heads of the word model (2 layers x 4)
    assert set(per_seed[per_seed.in_circuit].label) == set(summary["circuit"])
    reference = str(tmp_path / "a" / "ioi_circuit.parquet")
    assert summary["warnings"] == "" and "warning" not in result.output
    again = runner.invoke(
        app, [*argv, "--reference", reference, "--seeds", "1", "-o", str(tmp_path / "b")]
    )
    assert again.exit_code == 0, again.output
    one_seed = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert one_seed["circuit"] == summary["circuit"]
    assert one_seed["warnings"] == "one seed: no spread over seeds"
    assert "warning: one seed" in again.output
    other = saved_tiny(tmp_path / "other")
    wrong = ["circuit", "sae", "--model", str(other), "--reference", reference]
    assert "not on" in _one_error(runner.invoke(app, [*wrong, "-o", str(tmp_path / "c")]))


def test_latents_of_a_plain_sae_lens_sae(files, tmp_path):
    config = StandardSAEConfig(d_in=64, d_sae=16)
    config.metadata.hook_name = "blocks.1.hook_resid_post"
    StandardSAE(config).save_model(tmp_path / "plain")
    argv = ["sae", "latents", "--sae", str(tmp_path / "plain"), "--prompt", "The cat sat."]
    argv += ["--model", str(files / "model"), "--latent", "3", "--no-static"]
    result = runner.invoke(app, [*argv, "-o", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    heads = pd.read_parquet(tmp_path / "a" / "latent_3_heads.parquet")
    assert len(heads) == 2 * 4 and heads.score.abs().sum() > 0
    config.d_in = 48
    StandardSAE(config).save_model(tmp_path / "narrow")
    argv[argv.index(str(tmp_path / "plain"))] = str(tmp_path / "narrow")
    assert "48-wide" in _one_error(runner.invoke(app, [*argv, "-o", str(tmp_path / "b")]))


def test_train_and_score_is_what_train_writes(files, trained_folder):
    import torch

    from interp.models import load_model
    from interp.saes import SAETrainConfig
    from interp.saes_workflow import SAERunConfig, load_texts, train_and_score

    config = SAERunConfig(
        hook="blocks.1.hook_resid_post",
        holdout_every=3,
        sae=SAETrainConfig(  # the command's defaults, and SMALL
            d_sae=16,
            l1_coefficient=0.5,
            lr=1e-3,
            batch_size=16,
            epochs=2,
            normalize="constant_norm_rescale",
        ),
    )
    model = load_model(str(files / "model"))
    run = train_and_score(model, load_texts([files / "texts.txt"]), config)
    written = json.loads((trained_folder / "summary.json").read_text())
    timed = {key for key in written if key.endswith("_s")}  # wall times
    assert timed and {k: v for k, v in run.summary.items() if k not in timed} == {
        k: v for k, v in written.items() if k not in timed
    }
    saved = TrainedSAE.load(trained_folder / "sae").sae.state_dict()
    mine = run.trained.sae.state_dict()
    assert mine.keys() == saved.keys()
    assert all(torch.equal(mine[key], saved[key]) for key in mine)


def test_read_latents_is_what_latents_writes(files, trained_folder, tmp_path):
    from interp.models import load_model
    from probes.sae_latents import read_latents
    from tests.written import assert_tables_written

    sae, prompt = trained_folder / "sae", "The cat sat."
    argv = ["sae", "latents", "--sae", str(sae), "--prompt", prompt, "--no-static"]
    argv += ["--model", str(files / "model"), "--latent", "3", "-o", str(tmp_path / "a")]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    model = load_model(str(files / "model"))
    reading = read_latents(model, TrainedSAE.load(sae), prompt, latent=3)
    assert set(reading.tables()) == {"latents", "latent_3_heads"}
    assert_tables_written(reading.tables(), tmp_path / "a", tmp_path / "py")
    assert set(reading.figures) == {"latent_3_heads"}
