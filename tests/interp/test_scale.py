"""Models split by accelerate's device_map (CPU + disk offload) and in bf16 give the plain
model's results: sinks, retrieval scoring, HeadScale and ACT effects.

Tolerances: the offloaded float32 model is compared exactly (offloading moves weights,
never changes arithmetic). The offloaded bf16 model is compared with stated bounds, each
about twice the largest deviation seen on these inputs (noted beside it).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import interp.models
from interp.cli import app
from interp.effects import Effects, EffectsConfig, measure
from interp.errors import InputError
from interp.hooks import decoder_layers, residual_hooks
from interp.interventions import HeadScale
from interp.interventions.act import ACT
from interp.midway import decoder_from
from interp.models import Model, load_model
from interp.placement import parse_device_map, parse_dtype, parse_max_memory
from interp.prompts import data_path
from interp.tasks import choice_logprob, load_task
from probes import niah, retrieval, sinks
from tests.tiny import saved_tiny

OFFLOADED = (2, 14, 27)  # decoder layers whose weights stay on disk
HEADS = ["L2H1", "L14H3", "L27H8", "L5H0"]  # in offloaded layers, and one on the CPU
PROMPT = "The quick brown fox jumps over the lazy dog. Then it runs into the forest and hides."


def _split() -> dict[str, str]:
    layers = {f"model.layers.{i}": "disk" if i in OFFLOADED else "cpu" for i in range(30)}
    return layers | dict.fromkeys(["model.embed_tokens", "model.norm", "lm_head"], "cpu")


@pytest.fixture(scope="module")
def offloaded(tmp_path_factory) -> Model:
    return load_model(device_map=_split(), offload_folder=tmp_path_factory.mktemp("offload"))


@pytest.fixture(scope="module")
def offloaded_bf16(tmp_path_factory) -> Model:
    folder = tmp_path_factory.mktemp("offload_bf16")
    return load_model(device_map=_split(), dtype="bfloat16", offload_folder=folder)


# ----------------------------------------------------------------------------------------
# Unit: placement arguments


@pytest.mark.parametrize(
    "kwargs",
    [
        {"device": "cpu", "device_map": "auto"},
        {"device_map": "fastest"},
        {"max_memory": {"cpu": "1GiB"}},
        {"offload_folder": "/tmp/x"},
        {"device_map": {"model.layers.0": "tape"}},
        {"dtype": "float8"},
    ],
)
def test_bad_placement_is_one_line_input_error(kwargs) -> None:
    with pytest.raises(InputError) as info:
        load_model(**kwargs)
    assert "\n" not in str(info.value)


def test_command_line_placement_parsing() -> None:
    assert parse_device_map("auto") == "auto"
    assert parse_device_map('{"model.layers.3": "disk"}') == {"model.layers.3": "disk"}
    assert parse_max_memory("cpu=4GiB, 0=20GiB") == {"cpu": "4GiB", 0: "20GiB"}
    assert parse_dtype("torch.bfloat16") is torch.bfloat16
    for bad in (lambda: parse_device_map("[1]"), lambda: parse_max_memory("cpu:4GiB")):
        with pytest.raises(InputError):
            bad()


# ----------------------------------------------------------------------------------------
# Integration: the default model split between CPU and disk


@pytest.mark.integration
def test_offloaded_layers_are_on_disk(default_model, offloaded) -> None:
    layers = decoder_layers(offloaded.hf)
    assert all(p.is_meta for i in OFFLOADED for p in layers[i].parameters())
    assert not any(p.is_meta for p in layers[0].parameters())
    assert offloaded.device == torch.device("cpu")  # the input embedding's execution device
    # from_hf fingerprints offloaded weights from accelerate's weights map: same hash.
    wrapped = Model.from_hf(offloaded.hf, offloaded.tokenizer)
    assert (
        wrapped.weights_hash
        == Model.from_hf(default_model.hf, default_model.tokenizer).weights_hash
    )


@pytest.mark.integration
def test_sinks_offloaded(default_model, offloaded, offloaded_bf16) -> None:
    plain = sinks.run(default_model, [PROMPT])
    split = sinks.run(offloaded, [PROMPT])
    pd.testing.assert_frame_equal(plain.heads.data, split.heads.data, check_exact=True)
    pd.testing.assert_frame_equal(plain.massive.data, split.massive.data, check_exact=True)
    low = sinks.run(offloaded_bf16, [PROMPT]).heads
    runs = [r.heads.provenance for r in (plain, split)] + [low.provenance]
    assert [(r.dtype, r.placement.split(" ")[0]) for r in runs] == [
        ("float32", "cpu"),
        ("float32", "device_map"),
        ("bfloat16", "device_map"),
    ]
    assert "disk" in split.heads.provenance.placement
    # A head's score sums the shares of the keys past the sink threshold (m_j > 0.1): a key
    # near it may cross in bf16, a jump of its whole share (seen: L11H7, 11 -> 13 sinks,
    # +0.143, on a fresh venv of this commit's pins). Such jumps are few and come with a
    # changed sink count; elsewhere the score moves only by rounding.
    flipped = plain.heads.data.n_sinks != low.data.n_sinks
    deviation = (plain.heads.data.score - low.data.score).abs()
    assert deviation[~flipped].max() <= 0.1  # seen: 0.058 (scores span 0.46..1)
    jumps = deviation > 0.1
    assert jumps.sum() <= 3 and flipped[jumps].all()  # seen: 1 of 270
    assert deviation.mean() <= 0.01  # seen: 0.003


@pytest.mark.integration
def test_retrieval_offloaded(default_model, offloaded, offloaded_bf16) -> None:
    needles = niah.load_needles(data_path("needles", "scoring.jsonl"))[:1]
    config = retrieval.RetrievalConfig(lengths=(300,), n_depths=1, max_new_tokens=16)

    def score(model: Model) -> tuple[int, retrieval.RetrievalResult]:
        tests = niah.build_tests(model, needles, niah.load_haystack(), (300,), 1, 16)
        start, stop = tests[0].answer_span if config.span == "answer" else tests[0].needle_span
        n_tokens = tests[0].input_ids[start:stop].unique().numel()  # count="set": distinct ids
        return n_tokens, retrieval.run(model, tests, config)

    (n_span, plain), (_, split), (_, low) = map(score, (default_model, offloaded, offloaded_bf16))
    assert (plain.scores.data.score > 0).sum() >= 5  # the test exercises the scoring
    pd.testing.assert_frame_equal(plain.scores.data, split.scores.data, check_exact=True)
    assert plain.tests.data.response.tolist() == split.tests.data.response.tolist()
    assert plain.tests.data.response.tolist() == low.tests.data.response.tolist()
    # bf16: a head's score moves by at most one needle token's share (seen: one token).
    deviation = (plain.scores.data.score - low.scores.data.score).abs().max()
    assert deviation <= 1 / n_span + 1e-9


def _effects(model: Model, intervention: HeadScale | ACT) -> Effects:
    task = load_task("sentiment").subsample(4, 0)
    return measure(model, [task], intervention, EffectsConfig(n_boot=20), metric=choice_logprob)


@pytest.mark.integration
@pytest.mark.parametrize(
    "intervention", [HeadScale(HEADS, alpha=0.0), ACT(HEADS)], ids=["HeadScale", "ACT"]
)
def test_intervention_effects_offloaded(
    default_model, offloaded, offloaded_bf16, intervention
) -> None:
    plain = _effects(default_model, intervention)
    assert plain.table.data.difference.abs().item() > 0.005  # a real effect to compare
    split = _effects(offloaded, intervention)
    pd.testing.assert_frame_equal(plain.table.data, split.table.data, check_exact=True)
    pd.testing.assert_frame_equal(plain.per_item.data, split.per_item.data, check_exact=True)
    low = _effects(offloaded_bf16, intervention).per_item.data
    items = plain.per_item.data
    change = items.intervened_score - items.baseline_score
    low_change = low.intervened_score - low.baseline_score
    # Per-item effect on the answer's log-prob, in nats (seen: 0.057 HeadScale, 0.024 ACT).
    assert (change - low_change).abs().max() <= 0.15


@pytest.mark.integration
def test_decoder_from_offloaded(offloaded) -> None:
    """Starting at an offloaded layer (the layer list swapped) gives the full logits."""
    start = OFFLOADED[0]
    batch = offloaded.encode(PROMPT)
    saved: dict[int, torch.Tensor] = {}
    with torch.no_grad(), residual_hooks(offloaded.hf, saved.__setitem__, layers=[start]):
        full = offloaded.hf(**batch).logits
    positions = torch.arange(batch.input_ids.shape[1])[None]
    with torch.no_grad(), decoder_from(offloaded.hf, start):
        midway = offloaded.hf(
            inputs_embeds=saved[start],
            attention_mask=batch.attention_mask,
            position_ids=positions,
            use_cache=False,
        ).logits
    torch.testing.assert_close(midway, full, rtol=0, atol=1e-5)


@pytest.mark.integration
def test_cli_passes_the_placement_through(tmp_path, monkeypatch) -> None:
    calls: list[dict] = []
    real = interp.models.load_model

    def spy(spec=None, **kwargs):
        calls.append(kwargs)
        return real(spec, **kwargs)

    monkeypatch.setattr(interp.models, "load_model", spy)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPT)
    args = ["score", "sinks", "--prompts", str(prompts), "--no-static", "--dtype", "bfloat16"]
    split = ["--device-map", json.dumps(_split()), "--offload-folder", str(tmp_path / "off")]
    result = CliRunner().invoke(app, [*args, *split, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert calls == [
        {
            "device": None,
            "dtype": "bfloat16",
            "device_map": _split(),
            "max_memory": None,
            "offload_folder": tmp_path / "off",
        }
    ]
    assert len(pd.read_csv(tmp_path / "run" / "scores_per_head.csv")) == 270
    both = CliRunner().invoke(app, [*args, "--device", "cuda:0", "--device-map", "auto"])
    assert both.exit_code == 2 and "not both" in both.output


@pytest.mark.parametrize(
    "option",
    [
        ["--device-map", "bogus"],
        ["--device-map", '{"model.layers.0": "tape"}'],
        ["--dtype", "float8"],
        ["--max-memory", "cpu"],
        ["--max-memory", "cpu=1GiB"],  # without --device-map
    ],
)
def test_bad_placement_options_are_one_line_errors(tmp_path, option) -> None:
    model = saved_tiny(tmp_path / "model")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPT)
    args = ["score", "sinks", "--model", str(model), "--prompts", str(prompts), "--no-static"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "run"), *option])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("error:")
