"""ACT head search: like-with-like gains, the noise floor, skipped heads, the fast path."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal
from typer.testing import CliRunner

from interp.cli import app
from interp.errors import InputError
from interp.heads import Head, HeadSet
from interp.interventions import act_search
from interp.interventions.act import ACT, ActConfig
from interp.interventions.act_search import (
    NO_SINK,
    SearchConfig,
    calibration_metric,
    search_heads,
)
from interp.models import Model
from interp.tasks import Item, Task
from tests.stops import Stop, count_items, logged, stop_after
from tests.tiny import tiny_llama

WORDS = ["red fox", "blue sky", "green tea", "old map", "hot sun", "cold ice", "big dog", "dry"]
ITEMS = tuple(Item(f"{w} is", ("ok", "no", "maybe"), i % 3) for i, w in enumerate(WORDS))
# Two tasks, one with a prefix; short prompts, so the tiny model has hidden sinks at 0.04.
TASKS = [Task("a", ITEMS[:5]), Task("b", ITEMS[5:], prefix="Say:\n")]
SENSITIVE = ActConfig(threshold=0.04)
ALL_HEADS = HeadSet(Head(layer, head) for layer in range(3) for head in range(4))


def test_fast_search_matches_one_head_at_a_time(tiny: Model) -> None:
    config = SearchConfig(metric="log_prob", batch_size=3)
    found = search_heads(tiny, TASKS, SENSITIVE, config, ALL_HEADS)
    table = found.scores.data
    assert table["label"].tolist() == ALL_HEADS.labels
    assert (table["skipped"] == "").all()  # every head has a hidden sink somewhere here
    for head, value in zip(ALL_HEADS, table["metric_value"], strict=True):
        with ACT(HeadSet([head]), SENSITIVE).applied(tiny):
            slow = calibration_metric(tiny, TASKS, config)
        # Batches differ in size and padding, so float32 sums may round differently.
        assert value == pytest.approx(slow, abs=1e-6)
    gain = table["metric_value"] - table["identity"]
    assert gain.equals(table["score"]) and gain.abs().max() > 1e-3
    floor = found.noise_floor
    assert 0 <= floor < 1e-5 and (table["noise_floor"] == floor).all()
    assert found.selected == HeadSet(table.label[table.score > max(0.0, floor)])


def test_search_over_several_blocks_equals_one_block(tiny: Model, monkeypatch) -> None:
    from interp import explicit_attention

    config = SearchConfig(metric="log_prob", batch_size=3)
    whole = search_heads(tiny, TASKS, SENSITIVE, config, ALL_HEADS).scores.data
    # A few query rows per block: sink detection and the edit take the two-pass route.
    monkeypatch.setattr(explicit_attention, "_BLOCK_BYTES", 4 * 4 * 12 * 20 * 2)
    blocked = search_heads(tiny, TASKS, SENSITIVE, config, ALL_HEADS).scores.data
    assert (blocked["skipped"] == whole["skipped"]).all()
    assert blocked["score"].to_numpy() == pytest.approx(whole["score"].to_numpy(), abs=1e-6)


def test_beta_one_gains_exactly_nothing_and_keeps_no_head(tiny: Model) -> None:
    identity = ActConfig(threshold=0.04, beta=1.0)
    found = search_heads(tiny, TASKS, identity, SearchConfig(metric="log_prob"), ALL_HEADS)
    table = found.scores.data
    assert (table["skipped"] == "").sum() > 0
    assert (table["score"] == 0.0).all() and len(found.selected) == 0


def test_heads_without_hidden_sinks_are_reported_as_skipped(tiny: Model) -> None:
    config = SearchConfig(metric="log_prob", min_gain=-1.0)  # would keep any head it ran
    found = search_heads(tiny, TASKS, ActConfig(threshold=0.9), config, ALL_HEADS)
    table = found.scores.data
    assert (table["skipped"] == NO_SINK).all()
    assert (table["score"] == 0.0).all() and (table["metric_value"] == table["identity"]).all()
    assert len(found.selected) == 0


def test_max_heads_searches_a_seeded_subset(tiny: Model) -> None:
    def searched(seed: int) -> tuple[str, ...]:
        config = SearchConfig(metric="log_prob", max_heads=3, seed=seed)
        table = search_heads(tiny, TASKS[:1], SENSITIVE, config, ALL_HEADS).scores.data
        return tuple(table["label"])

    subsets = [searched(seed) for seed in (0, 1, 2)]
    assert all(len(s) == 3 and set(s) <= set(ALL_HEADS.labels) for s in subsets)
    assert len(set(subsets)) == 3  # the seed picks the subset (these three seeds differ)
    assert searched(1) == subsets[1]


def test_a_search_stopped_from_python_resumes_to_one_search(tiny, tmp_path, monkeypatch) -> None:
    config = SearchConfig(metric="log_prob", batch_size=3)
    once = search_heads(tiny, TASKS, SENSITIVE, config, ALL_HEADS)
    with pytest.raises(Stop):  # after the first batch of three sequences
        search_heads(tiny, TASKS, SENSITIVE, config, ALL_HEADS, stop_after(1), folder=tmp_path)
    assert logged(tmp_path) == 3
    sizes = count_items(monkeypatch, act_search, "_batch_arms", arg=2)
    resumed = search_heads(tiny, TASKS, SENSITIVE, config, ALL_HEADS, folder=tmp_path)
    assert sum(sizes) == logged(tmp_path) - 3 > 0  # only the sequences not yet logged ran
    assert_frame_equal(resumed.scores.data, once.scores.data, check_exact=True)
    assert resumed.selected == once.selected and resumed.noise_floor == once.noise_floor
    fewer = HeadSet(ALL_HEADS.labels[:4])
    with pytest.raises(InputError, match="another candidates"):
        search_heads(tiny, TASKS, SENSITIVE, config, fewer, folder=tmp_path)
    with pytest.raises(InputError, match="another config"):
        search_heads(tiny, TASKS, SENSITIVE, SearchConfig(batch_size=3), ALL_HEADS, folder=tmp_path)


def _task_folder(root, name: str) -> str:
    folder = root / name
    folder.mkdir()
    meta = {"description": "tiny", "instruction": "Say.", "shots": 1}
    (folder / "task.json").write_text(json.dumps(meta))
    lines = [
        json.dumps({"prompt": item.prompt, "choices": list(item.choices), "answer": item.answer})
        for item in ITEMS
    ]
    (folder / "calibration.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "test.jsonl").write_text("\n".join(lines[:4]) + "\n")
    return str(folder)


@pytest.mark.parametrize("seed", [0, 1])
def test_cli_with_beta_one_keeps_no_head(tmp_path, seed: int) -> None:
    model = tiny_llama(n_layers=5)  # searched layers 2..3
    model.hf.save_pretrained(tmp_path / "model")
    model.tokenizer.save_pretrained(tmp_path / "model")
    task = _task_folder(tmp_path, "words")
    out = tmp_path / "run"
    args = ["effect", "act", "--model", str(tmp_path / "model"), "--task", task]
    args += ["--beta", "1.0", "--threshold", "0.04", "--metric", "log_prob"]
    args += ["--seed", str(seed), "--n-boot", "50", "--out", str(out), "--no-static"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "ACT on 0 heads" in result.output
    table = pd.read_csv(out / "head_scores.csv", keep_default_na=False)
    assert len(table) == 8 and (table["skipped"] == "").sum() > 0
    assert (table["score"] == 0.0).all() and not table["selected"].any()


@pytest.mark.integration
def test_beta_one_keeps_no_head_on_the_default_model(default_model: Model) -> None:
    from interp.tasks import load_task

    tasks = [load_task("sentiment", "calibration").subsample(3)]
    heads = HeadSet(Head(layer, head) for layer in (4, 12, 24) for head in range(9))
    config = SearchConfig(metric="log_prob")
    found = search_heads(default_model, tasks, ActConfig(beta=1.0), config, heads)
    table = found.scores.data
    assert (table["skipped"] == "").sum() > 5
    assert (table["score"] == 0.0).all() and len(found.selected) == 0
    assert found.noise_floor > 0  # the SDPA baseline differs: why gains are not taken from it
