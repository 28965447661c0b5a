"""Effects: paired bootstrap, per-task table, ACT head search, the figure and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from interp.cli import app
from interp.effects import EffectsConfig, effect_row, measure, paired_bootstrap
from interp.errors import InputError
from interp.figures import effects_bars
from interp.heads import HeadSet
from interp.interventions import HeadScale
from interp.interventions.act import ActConfig
from interp.interventions.act_search import SearchConfig, search_heads, selected_heads
from interp.models import Model
from interp.results import EffectTable, HeadScores
from interp.tasks import TaskRun, load_task
from tests.tiny import tiny_llama

CONFIG = EffectsConfig(n_boot=500)


def test_bootstrap_intervals() -> None:
    same = np.array([1.0, 0, 1, 1, 0, 1])
    interval = paired_bootstrap(same, same, CONFIG)
    assert interval["ci_low"] == interval["ci_high"] == 0.0
    assert interval["baseline_low"] < same.mean() < interval["baseline_high"]
    better = paired_bootstrap(np.zeros(20), np.ones(20), CONFIG)
    assert better["ci_low"] == better["ci_high"] == 1.0
    rng = np.random.default_rng(3)
    base, edited = rng.integers(0, 2, 50).astype(float), rng.integers(0, 2, 50).astype(float)
    first = paired_bootstrap(base, edited, CONFIG)
    assert first == paired_bootstrap(base, edited, CONFIG)  # seeded
    assert first["ci_low"] <= (edited - base).mean() <= first["ci_high"]
    with pytest.raises(InputError):
        paired_bootstrap(base, edited[:3], CONFIG)


def run(predictions: list[int]) -> TaskRun:
    return TaskRun("t", [np.zeros(2)] * 4, np.array([0, 0, 1, 1]), np.array(predictions))


def test_effect_row_counts_changes() -> None:
    row = effect_row(run([0, 1, 1, 0]), run([0, 0, 0, 1]), CONFIG)
    assert (row["baseline"], row["intervened"], row["difference"]) == (0.5, 0.75, 0.25)
    assert (row["improved"], row["worsened"]) == (2, 1)


def test_identity_has_no_effect_and_table_round_trips(tiny: Model, tmp_path) -> None:
    tasks = [load_task("sentiment").subsample(4), load_task("larger").subsample(3)]
    effects = measure(tiny, tasks, HeadScale(HeadSet(["L1H0"]), alpha=1.0), CONFIG)
    table = effects.table.data
    assert table["task"].tolist() == ["sentiment", "larger"]
    assert table["difference"].eq(0).all() and table[["improved", "worsened"]].eq(0).all().all()
    assert len(effects.per_item) == 7
    path = effects.table.save(tmp_path / "effects.parquet")
    assert EffectTable.load(path) == effects.table
    assert len(effects_bars(effects.table).data) == 2


def test_search_scores_every_candidate_and_round_trips(tmp_path) -> None:
    model = tiny_llama(n_layers=4)
    tasks = [load_task("sentiment", "calibration").subsample(3)]
    act = ActConfig(threshold=0.01)  # long byte-level prompts: weak sinks in a random model
    found = search_heads(model, tasks, act, SearchConfig(metric="log_prob", max_heads=3))
    table = found.scores.data
    assert len(table) == 3 and set(table["layer"]) == {2}  # layers 2..L-2 of 4 layers
    assert table["score"].abs().gt(0).all()  # every head moved the continuous metric
    assert found.selected == HeadSet(r.label for r in table.itertuples() if r.score > 0)
    loaded = HeadScores.load(found.scores.save(tmp_path / "heads.parquet"))
    assert loaded == found.scores and selected_heads(loaded) == found.selected
    with pytest.raises(InputError, match="candidate"):
        search_heads(model, tasks, act, candidates=HeadSet())


def test_cli_effect_act_writes_results(tmp_path) -> None:
    model = tiny_llama(n_layers=4)
    model.hf.save_pretrained(tmp_path / "model")
    model.tokenizer.save_pretrained(tmp_path / "model")
    common = ["effect", "act", "--model", str(tmp_path / "model"), "--task", "sentiment"]
    small = ["--test-items", "3", "--n-boot", "50", "--no-static"]
    search = ["--calibration-items", "2", "--max-heads", "2", "--metric", "log_prob"]
    runner = CliRunner()
    first = runner.invoke(
        app,
        [*common, *small, *search, "--threshold", "0.01", "--out", str(tmp_path / "a")],
    )
    assert first.exit_code == 0, first.output
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert {"effects.parquet", "effects.csv", "head_scores.parquet", "figures/effects.html"} <= set(
        manifest["files"]
    )
    assert "sentiment:" in first.output
    saved = str(tmp_path / "a" / "head_scores.parquet")
    again = runner.invoke(app, [*common, *small, "--heads", saved, "--out", str(tmp_path / "b")])
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["heads"] == manifest["heads"]
    bad = runner.invoke(app, ["effect", "act", "--task", "nope"])
    assert bad.exit_code == 2 and "error: No task 'nope'" in bad.output
