"""Effects: paired bootstrap, per-task table, ACT head search, the figure and the CLI."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from interp.cli import app
from interp.effects import Effects, EffectsConfig, compare, interval, measure, paired_bootstrap
from interp.errors import InputError
from interp.figures import effects_bars
from interp.heads import HeadSet
from interp.hooks import attention_hooks
from interp.interventions import AttentionEdit, HeadScale, uniform_attention
from interp.interventions.act import ACT, ActConfig
from interp.interventions.act_search import HeadSearch, SearchConfig, search_heads, selected_heads
from interp.interventions.attention_edit import unchanged_rows
from interp.models import Model
from interp.results import HeadScores
from interp.tasks import TASKS_DIR, choice_logprob, evaluate, load_task
from tests.interp.helpers import Recorder
from tests.tiny import tiny_llama

CONFIG = EffectsConfig(n_boot=500)


def test_bootstrap_intervals() -> None:
    same = np.array([1.0, 0, 1, 1, 0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the degenerate case never reaches scipy's NaN
        point = paired_bootstrap(same, same, CONFIG)
    assert point["ci_low"] == point["ci_high"] == 0.0 and point["constant"]
    assert point["baseline_low"] < same.mean() < point["baseline_high"]
    better = paired_bootstrap(np.zeros(20), np.ones(20), CONFIG)
    assert better["ci_low"] == better["ci_high"] == 1.0 and better["constant"]
    rng = np.random.default_rng(3)
    base, edited = rng.integers(0, 2, 50).astype(float), rng.integers(0, 2, 50).astype(float)
    first = paired_bootstrap(base, edited, CONFIG)
    assert first == paired_bootstrap(base, edited, CONFIG)  # seeded
    assert first["ci_low"] <= (edited - base).mean() <= first["ci_high"]
    assert not first["constant"]
    with pytest.raises(InputError):
        paired_bootstrap(base, edited[:3], CONFIG)


def test_intervals_are_scipys_paired_bca_and_percentile() -> None:
    rng = np.random.default_rng(5)
    base, edited = rng.normal(size=40), rng.normal(0.3, 1, size=40)
    for method in ("BCa", "percentile"):
        config = EffectsConfig(n_boot=300, method=method, seed=7)
        ours = paired_bootstrap(base, edited, config)
        theirs = stats.bootstrap(
            (edited - base,),
            np.mean,
            n_resamples=300,
            method=method,
            random_state=np.random.default_rng(7),
        ).confidence_interval
        assert (ours["ci_low"], ours["ci_high"]) == (theirs.low, theirs.high)
    bca = interval(edited - base, EffectsConfig(n_boot=300))
    percentile = interval(edited - base, EffectsConfig(n_boot=300, method="percentile"))
    assert bca != percentile


def test_compare_counts_moves_for_any_metric() -> None:
    row = compare(np.array([1.0, 0, 0, 1]), np.array([1.0, 1, 1, 0]), "accuracy", CONFIG)
    assert (row["baseline"], row["intervened"], row["difference"]) == (0.5, 0.75, 0.25)
    assert (row["improved"], row["worsened"], row["metric"]) == (2, 1, "accuracy")
    logprob = compare(np.array([-2.0, -1.0]), np.array([-1.5, -1.0]), "lp", CONFIG)
    assert (logprob["improved"], logprob["worsened"]) == (1, 0)


def test_rows_warn_of_few_items_one_seed_chance_baselines_and_no_change() -> None:
    ten = np.array([0.0, 1] * 5)
    moved = np.array([1.0, 1] * 5)
    assert compare(ten, moved, "accuracy", CONFIG)["warnings"] == ""  # 10 items: enough
    notes = compare(ten[:9], moved[:9], "accuracy", CONFIG, chance=0.5, seeds=1)["warnings"]
    assert notes.split("; ") == [
        "interval from 9 items (fewer than 10)",
        "one seed: no spread over seeds",
        "baseline accuracy 0.444 is at or below chance (0.500)",
    ]
    assert compare(ten, moved, "accuracy", CONFIG, chance=0.5, seeds=5)["warnings"] == (
        "baseline accuracy 0.500 is at or below chance (0.500)"
    )
    assert compare(moved, moved, "accuracy", CONFIG, chance=0.5)["warnings"] == (
        "the intervention changed no item's score"
    )


def test_measure_warns_against_its_tasks_chance_level(tiny: Model) -> None:
    task = load_task("sentiment").subsample(4)
    assert task.chance == pytest.approx(np.mean([1 / len(i.choices) for i in task.items]))
    row = measure(tiny, [task], HeadScale("L1H0", alpha=1.0), CONFIG).table.data.iloc[0]
    expected = ["interval from 4 items (fewer than 10)"]
    if row["baseline"] <= task.chance:
        expected.append(f"baseline accuracy {row['baseline']:.3f} is at or below chance (0.500)")
    assert row["warnings"].split("; ") == [*expected, "the intervention changed no item's score"]


def test_table_rows_summarise_the_items_and_results_round_trip(tiny: Model, tmp_path) -> None:
    tasks = [load_task("sentiment").subsample(4), load_task("larger").subsample(3)]
    ablation = HeadScale(["L1H0"], alpha=0.0)
    effects = measure(tiny, tasks, ablation, CONFIG, metric=choice_logprob)
    table, items = effects.table.data, effects.per_item.data
    assert table["task"].tolist() == ["sentiment", "larger"] and len(items) == 7
    for task, row in zip(tasks, table.itertuples(), strict=True):
        mine = items[items["task"] == task.name]
        # The baseline arm is the plain model (alpha = 1 is bit-identical to it).
        assert mine["baseline_score"].tolist() == choice_logprob(evaluate(tiny, task)).tolist()
        moved = mine["intervened_score"] - mine["baseline_score"]
        assert moved.abs().max() > 1e-4  # the ablation moves every task's scores
        assert row.difference == pytest.approx(moved.mean())
        assert (row.improved, row.worsened) == ((moved > 0).sum(), (moved < 0).sum())
        assert row.ci_low <= row.difference <= row.ci_high and not row.constant
    assert effects.table.provenance.config["intervention"] == ablation.to_dict()
    written = effects.save(tmp_path / "run")
    assert {p.name for p in written} >= {"effects.parquet", "per_item.parquet", "per_item.csv"}
    assert Effects.load(tmp_path / "run") == effects
    assert len(effects_bars(effects.table).data) == 2


def test_measure_takes_any_task_metric(tiny: Model) -> None:
    task = load_task("sentiment").subsample(3)
    effects = measure(tiny, [task], HeadScale("L1H0", alpha=0.0), CONFIG, metric=choice_logprob)
    row = effects.table.data.iloc[0]
    assert row["metric"] == "choice_logprob" and row["baseline"] < 0
    items = effects.per_item.data
    assert row["difference"] == pytest.approx(
        (items.intervened_score - items.baseline_score).mean()
    )


def test_the_baseline_arm_runs_the_identitys_kernels(tiny: Model) -> None:
    """An identity edit shows exactly no effect because the baseline runs its kernels.

    The unchanged rows, renormalised in float32, are ~1e-6 off the plain forward: a baseline
    run without the identity would show that as an effect.
    """
    task = load_task("sentiment").subsample(6)
    edit = AttentionEdit("L1H0,L2H3", unchanged_rows)
    assert uniform_attention("L1H0,L2H3").identity() == edit  # what a masking run compares to
    effects = measure(tiny, [task], edit, CONFIG, metric=choice_logprob)
    items = effects.per_item.data
    plain = choice_logprob(evaluate(tiny, task))
    assert not np.array_equal(items["baseline_score"].to_numpy(), plain)  # kernels differ
    assert (items.intervened_score == items.baseline_score).all()
    row = effects.table.data.iloc[0]
    assert row["difference"] == 0.0 and row["constant"]


def test_act_at_beta_one_is_the_unedited_explicit_kernel(tiny: Model) -> None:
    """beta = 1 leaves every row as computed: the explicit kernel's run without any edit."""
    task = load_task("sentiment").subsample(6)
    with attention_hooks(tiny.hf, Recorder([1, 2])):  # reads rows, so layers 1-2 run explicit
        unedited = choice_logprob(evaluate(tiny, task))
    act = ACT("L1H0,L2H3", ActConfig(beta=1.0, threshold=0.01))
    items = measure(tiny, [task], act, CONFIG, metric=choice_logprob).per_item.data
    assert items["intervened_score"].tolist() == unedited.tolist()


def test_a_real_edit_moves_the_scores_the_identity_leaves(tiny: Model) -> None:
    task = load_task("sentiment").subsample(6)
    act = ACT("L1H0,L2H3", ActConfig(threshold=0.01))
    items = measure(tiny, [task], act, CONFIG, metric=choice_logprob).per_item.data
    assert (items.intervened_score - items.baseline_score).abs().max() > 1e-4


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
    written = found.save(tmp_path / "search.parquet")
    assert [p.name for p in written] == ["search.parquet", "search.csv"]
    assert HeadSearch.load(written[0]) == found
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
    assert {
        "effects.parquet",
        "effects.csv",
        "per_item.parquet",
        "head_scores.parquet",
        "figures/effects.html",
    } <= set(manifest["files"])
    assert manifest["command"] == "effect act" and manifest["params"]["n_boot"] == 50
    task_file = str(TASKS_DIR / "sentiment" / "test.jsonl")
    assert any(entry["path"] == task_file for entry in manifest["inputs"])
    assert "sentiment:" in first.output
    assert "warning: interval from 3 items (fewer than 10)" in first.output
    saved = str(tmp_path / "a" / "head_scores.parquet")
    again = runner.invoke(app, [*common, *small, "--heads", saved, "--out", str(tmp_path / "b")])
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["heads"] == manifest["heads"]
    bad = runner.invoke(app, ["effect", "act", "--task", "nope"])
    assert bad.exit_code == 2 and "error: No task 'nope'" in bad.output


@pytest.mark.integration
def test_act_at_beta_one_shows_no_effect_on_the_default_model(default_model: Model) -> None:
    """On the real model the fused and explicit kernels differ (~1e-7 in log-prob), so a
    baseline taken from the plain model would show an 'effect' here; the identity arm shows
    none."""
    task = load_task("contrast").subsample(8)
    heads = "L4H0,L12H3,L24H5"
    effects = measure(default_model, [task], ACT(heads, ActConfig(beta=1.0)), metric=choice_logprob)
    items = effects.per_item.data
    assert (items.intervened_score == items.baseline_score).all()
    plain = measure(default_model, [task], HeadScale(heads, alpha=1.0), metric=choice_logprob)
    kernel_gap = (plain.per_item.data.baseline_score - items.baseline_score).abs().max()
    assert kernel_gap > 0  # what the old, plain-model baseline would have reported
