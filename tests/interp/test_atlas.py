"""The head atlas: its registry, its join, its relations and its resume (tiny models).

The analyzer methods run on a tiny Llama with small settings (`SMALL`, patched over the
methods' quick settings); each atlas column must equal the single analyzer's on the same
settings. Registry behaviour (a missing module, a method that does not apply, an unknown
name) uses stand-in methods defined here, reached by dotted name as the real ones are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from interp import atlas as atlas_module
from interp.atlas import AtlasPart, AtlasSettings, NotApplicable, build_atlas, check_methods
from interp.atlas_relations import flagged, relations
from interp.attention_example import AttentionExample
from interp.cli import app
from interp.errors import InputError
from interp.generation import GenerationConfig
from interp.models import load_model
from interp.prompts import data_path, load_prompts
from interp.runs import LOG_FILE
from probes import atlas_methods, head_kinds, sinks
from probes.anchor_workflow import AnchorRunConfig, find_anchors
from probes.retrieval import RetrievalConfig, run_niah
from tests.stops import Stop, count_items, stop_after
from tests.tiny import saved_tiny, tiny_llava

SMALL = {
    "sinks": {"prompts": 2},
    "retrieval": {"lengths": (200,), "n_depths": 1, "max_new_tokens": 3},
    "head_kinds": {"n_sequences": 2, "length": 8},
    "anchors": {"problems": 1, "max_new_tokens": 8},
}
ANALYZERS = ["sinks", "retrieval", "head_kinds", "anchors"]
QUICK = AtlasSettings(quick=True, top_k=3)


@pytest.fixture(autouse=True)
def _small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(atlas_methods, "QUICK", SMALL)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(saved_tiny(tmp_path_factory.mktemp("atlas") / "tiny"))


def test_each_column_equals_its_analyzer_on_the_same_settings(model, tmp_path) -> None:
    folder = tmp_path / "atlas"
    found = build_atlas(model, ANALYZERS, QUICK, folder)
    heads = found.heads.data
    assert heads.columns[:4].tolist() == ["layer", "head", "kv_group", "label"]
    assert len(heads) == 12 and heads.kv_group.tolist() == [0, 0, 1, 1] * 3
    prompts = load_prompts(data_path("prompts", "sinks.jsonl"))[:2]
    sink_heads = sinks.run(model, prompts).heads.per_head()
    # The resumable analyzers read the atlas's work logs (their own runs on these settings,
    # or they would refuse the folder) instead of decoding and generating again.
    assert (folder / "retrieval" / "scoring" / LOG_FILE).is_file()
    assert (folder / "anchors" / LOG_FILE).is_file()
    config = RetrievalConfig(**SMALL["retrieval"])
    retrieval = run_niah(model, config, folder=folder / "retrieval" / "scoring").scores.data
    kinds = head_kinds.run(model, head_kinds.HeadKindConfig(**SMALL["head_kinds"])).data
    generation = GenerationConfig(max_new_tokens=8)
    setup = AnchorRunConfig(problems=1, generation=generation, run_causal=False, chat=False)
    anchors = find_anchors(model, setup, folder=folder / "anchors").heads.data
    expected = {
        "sinks_sink_share": sink_heads.score,
        "sinks_first_token_share": sink_heads.first_token_share,
        "sinks_hidden_sink_share": sink_heads.hidden_sink_share,
        "sinks_massive_share": sink_heads.massive_share,
        "retrieval_score": retrieval.score,
        "retrieval_activation": retrieval.activation,
        "head_kinds_previous_token": kinds.previous_token,
        "head_kinds_duplicate_token": kinds.duplicate_token,
        "head_kinds_induction": kinds.induction,
        "anchors_distance": anchors.score,
        "anchors_class": anchors.role,
    }
    assert list(heads.columns[4:]) == list(expected)
    for column, values in expected.items():
        assert heads[column].tolist() == values.tolist(), column
    assert found.provenance.config["methods"]["head_kinds"]["n_sequences"] == 2
    assert (heads.anchors_distance.nunique(), heads.head_kinds_induction.nunique()) == (12, 12)


def test_a_stopped_atlas_resumes_to_the_uninterrupted_one(model, tmp_path, monkeypatch) -> None:
    methods = ["sinks", "head_kinds"]
    whole = build_atlas(model, methods, QUICK, tmp_path / "whole")
    runs = count_items(monkeypatch, atlas_methods, "sinks", arg=0)
    stop = stop_after(1)

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "atlas":
            stop(done, total)

    with pytest.raises(Stop):  # killed after sinks is recorded, before head_kinds
        build_atlas(model, methods, QUICK, tmp_path / "stopped", progress)
    resumed = build_atlas(model, methods, QUICK, tmp_path / "stopped")
    assert runs == [1]  # the resumed atlas did not run sinks again
    for name in ("heads", "relations", "flagged"):
        ours, theirs = getattr(resumed, name), getattr(whole, name)
        pd.testing.assert_frame_equal(ours.data, theirs.data)
        assert ours.provenance.config == theirs.provenance.config
    assert resumed.example == whole.example


def _part(method: str, values: np.ndarray) -> AtlasPart:
    layer, head = np.divmod(np.arange(12), 4)
    heads = pd.DataFrame({"layer": layer, "head": head, f"{method}_score": values})
    return AtlasPart(heads, {"scores": heads}, {"n": len(values)})


def rising(model, settings, folder, progress) -> AtlasPart:
    return _part("rising", np.arange(12.0))


def falling(model, settings, folder, progress) -> AtlasPart:
    return _part("falling", -np.arange(12.0))


def not_for_text(model, settings, folder, progress) -> AtlasPart:
    raise NotApplicable("needs a vision-language model")


def test_missing_and_inapplicable_methods_are_skipped(model, tmp_path, monkeypatch) -> None:
    here = "tests.interp.test_atlas"
    registry = {
        "rising": f"{here}:rising",
        "ghost": "probes.no_such_module:ghost",
        "vision": f"{here}:not_for_text",
        "falling": f"{here}:falling",
    }
    monkeypatch.setattr(atlas_module, "METHODS_BY_NAME", registry)
    found = build_atlas(model, None, AtlasSettings(top_k=3), tmp_path)
    assert list(found.parts) == ["rising", "falling"]
    assert found.skipped == {
        "ghost": "its module probes.no_such_module is not installed",
        "vision": "needs a vision-language model",
    }
    row = found.relations.data.iloc[0]
    assert (row.method_a, row.method_b, row.spearman, row.jaccard) == (
        "rising_score",
        "falling_score",
        -1.0,
        0.0,
    )
    files = found.save(tmp_path / "saved")
    assert tmp_path / "saved" / "rising" / "scores.parquet" in files
    assert AttentionExample.load(tmp_path / "saved" / "example.npz") == found.example
    assert found.example.patterns.shape[:2] == (3, 4)
    np.testing.assert_allclose(found.example.patterns.sum(-1), 1.0, atol=1e-5)
    with pytest.raises(InputError, match=r"Unknown atlas method 'risng'\. Did you mean 'rising'"):
        check_methods(["risng"])


def test_methods_that_start_at_a_middle_layer_skip_a_model_that_cannot() -> None:
    found = build_atlas(tiny_llava(), ["head_kinds", "circuits", "act"], AtlasSettings(quick=True))
    assert list(found.parts) == ["head_kinds"]
    assert set(found.skipped) == {"circuits", "act"}
    assert all("at a middle layer" in why for why in found.skipped.values())


def test_relations_and_flags_rank_the_score_columns() -> None:
    heads = pd.DataFrame(
        {
            "layer": [0, 0, 1, 1],
            "head": [0, 1, 0, 1],
            "label": ["L0H0", "L0H1", "L1H0", "L1H1"],
            "a_x": [4.0, 3.0, 2.0, 1.0],
            "a_x_low": [0.0, 0.0, 0.0, 0.0],  # an interval bound: not a score column
            "b_y": [1.0, 3.0, 2.0, 4.0],
            "b_flag": [True, False, True, False],  # boolean: not a score column
            "c_z": [0.0, 0.0, 0.0, 5.0],  # one head above the minimum: a top set of one
            "c_partial": [np.nan, 1.0, 2.0, 3.0],  # not defined for every head
        }
    )
    table = relations(heads, ["a", "b", "c"], k=2)
    pairs = list(zip(table.method_a, table.method_b, strict=True))
    assert pairs == [("a_x", "b_y"), ("a_x", "c_z"), ("b_y", "c_z")]
    # ranks a: 4 3 2 1, b: 1 3 2 4 -> d = 3, 0, 0, 3 -> rho = 1 - 6 * 18 / 60 = -0.8
    np.testing.assert_allclose(table.spearman, [-0.8, -0.7745966692414834, 0.7745966692414834])
    # top 2: a {L0H0, L0H1}, b {L1H1, L0H1}, c {L1H1}
    np.testing.assert_allclose(table.jaccard, [1 / 3, 0.0, 0.5])
    marks = flagged(heads, ["a", "b", "c"], k=2)
    assert marks.label.tolist() == ["L0H1", "L1H1"] and marks.n_methods.tolist() == [2, 2]
    assert marks.columns.tolist()[-2:] == ["methods", "columns"]
    assert marks["columns"].tolist() == [["a_x", "b_y"], ["b_y", "c_z"]]


def test_the_command_writes_the_atlas_and_refuses_unknown_methods(tmp_path) -> None:
    runner = CliRunner()
    refused = runner.invoke(app, ["atlas", "--methods", "sinks,nope", "-o", str(tmp_path / "x")])
    assert refused.exit_code == 2 and not (tmp_path / "x").exists()
    assert refused.output.strip().splitlines() == [
        "error: Unknown atlas method 'nope'. Valid options: 'act', 'anchors', 'circuits',"
        " 'head_kinds', 'retrieval', ... (7 in all)."
    ]
    model = saved_tiny(tmp_path / "tiny")
    out = tmp_path / "out"
    args = ["atlas", "--methods", "head_kinds,sinks", "--quick", "--top-k", "2", "--no-static"]
    done = runner.invoke(app, [*args, "-m", str(model), "-o", str(out)])
    assert done.exit_code == 0, done.output
    heads = pd.read_parquet(out / "heads.parquet")
    assert len(heads) == 12 and "head_kinds_induction" in heads and "sinks_sink_share" in heads
    best = heads.sort_values(["head_kinds_induction", "layer", "head"]).label.iloc[-1]
    assert f"head_kinds_induction: {best} (" in done.output
    assert (out / "manifest.json").is_file() and (out / "head_kinds" / "scores.parquet").is_file()
    assert Path(out / "example.npz").is_file() and (out / "atlas.html").is_file()
    assert (out / "figures" / "grid_head_kinds_induction.html").is_file()
