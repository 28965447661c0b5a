from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import torch

from interp.errors import InputError
from interp.heads import HeadSet
from interp.results import (
    Bundle,
    EffectTable,
    HeadScores,
    ItemTable,
    Provenance,
    TokenScores,
    csv_path,
)


def provenance(**overrides):
    fields = dict(
        model="tiny",
        weights_hash="abc",
        analyzer="test",
        config={"tau": 0.1},
        inputs_hash="h",
        n_inputs=2,
    )
    return Provenance(**{**fields, **overrides})


def test_from_matrix_is_tidy():
    scores = HeadScores.from_matrix(np.arange(6.0).reshape(2, 3), provenance())
    assert list(scores.data.columns[:4]) == ["layer", "head", "label", "score"]
    assert scores.data.label.tolist() == ["L0H0", "L0H1", "L0H2", "L1H0", "L1H1", "L1H2"]
    assert np.array_equal(scores.matrix(), np.arange(6.0).reshape(2, 3))


def test_parquet_round_trip_is_exact(tmp_path):
    extra = {"hits": np.array([[1, 2, 3], [4, 5, 6]])}
    scores = HeadScores.from_matrix(np.random.rand(2, 3), provenance(), extra)
    loaded = HeadScores.load(scores.save(tmp_path / "s.parquet"))
    assert loaded == scores
    assert loaded != HeadScores(scores.data, provenance(model="other"))


def test_provenance_keeps_how_the_model_ran_and_reads_older_results(tmp_path):
    ran = provenance(dtype="bfloat16", placement="device_map cpu: 3 modules, disk: 2 modules")
    scores = HeadScores.from_matrix(np.zeros((2, 3)), ran)
    loaded = HeadScores.load(scores.save(tmp_path / "s.parquet")).provenance
    assert (loaded.dtype, loaded.placement) == (ran.dtype, ran.placement)
    older = {k: v for k, v in ran.to_dict().items() if k not in ("dtype", "placement")}
    assert Provenance.from_dict(older).dtype is None


def test_models_fill_dtype_and_placement():
    from interp.tiny_models import tiny_llama

    model = tiny_llama()
    assert model.provenance_fields()["dtype"] == "float32"
    assert model.provenance_fields()["placement"] == "cpu"
    model.hf.to(torch.bfloat16)
    assert model.provenance_fields()["dtype"] == "bfloat16"


def test_top_and_above_select_heads():
    scores = HeadScores.from_matrix(np.array([[0.5, 0.05], [0.2, 0.2]]), provenance())
    assert scores.top(1) == HeadSet(["L0H0"])
    assert scores.top(3) == HeadSet(["L0H0", "L1H0", "L1H1"])
    assert scores.above(0.1) == HeadSet(["L0H0", "L1H0", "L1H1"])


def test_per_head_averages_examples():
    frame = pd.DataFrame(
        {
            "layer": [0, 0],
            "head": [0, 0],
            "label": ["L0H0"] * 2,
            "example": [0, 1],
            "score": [0.2, 0.4],
        }
    )
    assert HeadScores(frame, provenance()).per_head().score.tolist() == pytest.approx([0.3])


def test_missing_columns_and_foreign_files_are_rejected(tmp_path):
    with pytest.raises(InputError):
        TokenScores(pd.DataFrame({"example": [0]}), provenance())
    path = tmp_path / "plain.parquet"
    pd.DataFrame({"layer": [0]}).to_parquet(path)
    with pytest.raises(InputError, match="provenance"):
        HeadScores.load(path)


def test_item_tables_with_lists_round_trip_with_a_csv_copy(tmp_path):
    frame = pd.DataFrame({"item": [0, 1], "scores": [[0.5, 1.0], [0.0, 2.0]], "text": ["a", "b"]})
    table = ItemTable(frame, provenance())
    path = table.save(tmp_path / "items.parquet", csv=True)
    assert ItemTable.load(path) == table
    copy = pd.read_csv(csv_path(path))
    assert copy["scores"].tolist() == ["[0.5, 1.0]", "[0.0, 2.0]"]


@dataclass(frozen=True)
class _Pair(Bundle):
    FILES: ClassVar[dict[str, str]] = {"scores": "head_scores"}

    scores: HeadScores
    items: ItemTable


def test_bundles_save_every_table_and_load_equal(tmp_path):
    pair = _Pair(
        HeadScores.from_matrix(np.ones((1, 2)), provenance()),
        ItemTable(pd.DataFrame({"item": [3]}), provenance()),
    )
    written = pair.save(tmp_path / "out")
    assert sorted(p.name for p in written) == [
        "head_scores.csv",
        "head_scores.parquet",
        "items.csv",
        "items.parquet",
    ]
    assert _Pair.load(tmp_path / "out") == pair
    assert pair.provenance == provenance()


def test_effect_lines_name_the_swept_value_the_metric_when_several_and_each_warning():
    rows = pd.DataFrame(
        {
            "parameter": [2.0, 2.0],
            "task": ["pope", "pope"],
            "metric": ["accuracy", "log_prob"],
            "n": [10, 10],
            "baseline": [0.5, -1.25],
            "intervened": [0.625, -1.5],
            "difference": [0.125, -0.25],
            "ci_low": [0.0, -0.5],
            "ci_high": [0.25, 0.0],
            "improved": [2, 0],
            "worsened": [1, 3],
            "warnings": ["", "interval from 10 items"],
        }
    )
    assert EffectTable(rows, provenance()).summary_lines() == [
        "[2] pope accuracy: 0.500 -> 0.625 (+0.125, 95% CI [+0.000, +0.250], +2/-1 of 10)",
        "[2] pope log_prob: -1.250 -> -1.500 (-0.250, 95% CI [-0.500, +0.000], +0/-3 of 10)",
        "  warning: interval from 10 items",
    ]
    one = EffectTable(rows.iloc[:1].drop(columns="parameter"), provenance())
    assert one.summary_lines() == [
        "pope: 0.500 -> 0.625 (+0.125, 95% CI [+0.000, +0.250], +2/-1 of 10)"
    ]
