"""The atlas's ACT columns are the head search's gains, NaN and marked where it has none."""

from __future__ import annotations

import numpy as np
import pytest
from pandas.testing import assert_frame_equal

from interp.atlas_part import AtlasSettings
from interp.heads import HeadSet
from interp.interventions.act import ActConfig
from interp.interventions.act_search import NO_SINK, SearchConfig, search_heads
from probes import atlas_act
from probes.atlas_act import act, act_columns, calibration_tasks, search_config
from tests.interp.test_act_search import TASKS
from tests.stops import Stop, logged, stop_after
from tests.tiny import tiny_llama


@pytest.fixture(scope="module")
def model():
    return tiny_llama(n_layers=5)  # candidates: layers 2 and 3


def test_columns_are_the_search_gains_with_no_hidden_sink_marked(model):
    # At this threshold the tiny model has hidden sinks in some heads, not all (checked).
    candidates = HeadSet("L2H0,L2H1,L2H2,L2H3,L3H0,L3H1,L3H2,L3H3")
    rule = ActConfig(threshold=0.192)
    found = search_heads(model, TASKS, rule, SearchConfig(metric="log_prob"), candidates)
    scores = found.scores.data.set_index("label")
    heads = act_columns(found, model.geometry)
    assert len(heads) == 20
    assert heads.columns.tolist() == [
        "layer", "head", "act_gain", "act_no_hidden_sink", "act_selected",
    ]  # fmt: skip
    heads["label"] = [f"L{r.layer}H{r.head}" for r in heads.itertuples()]
    heads = heads.set_index("label")
    skipped = scores["skipped"] == NO_SINK
    assert 0 < skipped.sum() < len(scores)  # both kinds of searched head
    assert 0 < scores["selected"].sum() < (~skipped).sum()  # run heads both kept and not
    run = scores.index[~skipped]
    np.testing.assert_array_equal(heads.loc[run, "act_gain"], scores.loc[run, "score"])
    assert heads.loc[scores.index[skipped], "act_gain"].isna().all()
    assert heads["act_no_hidden_sink"].tolist() == [
        bool(label in scores.index and skipped[label]) for label in heads.index
    ]
    assert heads["act_selected"].tolist() == [
        bool(label in scores.index and scores.loc[label, "selected"]) for label in heads.index
    ]
    untried = heads.index.difference(scores.index)
    assert len(untried) == 12 and heads.loc[untried, "act_gain"].isna().all()
    assert heads.dtypes[["act_no_hidden_sink", "act_selected"]].tolist() == [bool, bool]


def test_act_runs_the_search_and_resumes_in_its_folder(model, tmp_path, monkeypatch):
    monkeypatch.setattr(atlas_act, "calibration_tasks", lambda _settings: TASKS)
    settings = AtlasSettings(quick=True, seed=1)
    whole = act(model, settings, None, None)
    search = SearchConfig(metric="log_prob", seed=1)
    found = search_heads(model, TASKS, ActConfig(), search)
    assert_frame_equal(whole.heads, act_columns(found, model.geometry))
    assert whole.tables["head_scores"].equals(found.scores.data)
    assert whole.settings["search"] == search.to_dict()
    assert whole.settings["tasks"] == {"a": 5, "b": 3}

    stop = stop_after(1)
    with pytest.raises(Stop):  # after the first batch: 8 of the 24 (item, choice) sequences
        act(model, settings, tmp_path, lambda _stage, done, total: stop(done, total))
    assert logged(tmp_path) == 8
    resumed = act(model, settings, tmp_path, None)
    assert logged(tmp_path) == 24
    assert_frame_equal(resumed.heads, whole.heads)


def test_quick_mode_subsamples_the_default_tasks_and_scores_log_probs():
    assert search_config(AtlasSettings(seed=2)) == SearchConfig(seed=2)  # the command's
    assert search_config(AtlasSettings(quick=True)).metric == "log_prob"
    full = calibration_tasks(AtlasSettings())
    quick = calibration_tasks(AtlasSettings(quick=True, seed=3))
    assert [t.name for t in quick] == [t.name for t in full]
    assert all(
        len(t.items) == atlas_act.QUICK_ITEMS < len(f.items)
        for t, f in zip(quick, full, strict=True)
    )
    assert set(quick[0].items) <= set(full[0].items)
    assert quick != calibration_tasks(AtlasSettings(quick=True, seed=4))
