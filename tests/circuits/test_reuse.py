"""Circuit overlap per stage: top sets, shared share and Jaccard on hand-made scores."""

import numpy as np
import pytest

from circuits.reuse import ReuseConfig, overlap, stage_circuits, top_heads
from interp.errors import ConfigError, InputError
from interp.heads import HeadSet
from interp.results import HeadScores
from tests.interp.test_results import provenance


def scores(*top: tuple[int, int], value: float = 1.0, shape=(5, 10)) -> HeadScores:
    """A [layer, head] table with small noise and `value` at the listed heads."""
    matrix = np.random.default_rng(len(top)).uniform(-0.01, 0.01, shape)
    for layer, head in top:
        matrix[layer, head] = value
    return HeadScores.from_matrix(matrix, provenance())


def test_top_fraction_of_all_heads_ranked_by_score_or_magnitude():
    table = scores((0, 1), (4, 9), value=-2.0)  # 50 heads: 2% = 1 head, 6% = 3 heads
    assert top_heads(table, ReuseConfig(), 50) == HeadSet("L0H1")  # by |score|
    assert len(top_heads(table, ReuseConfig(top_fraction=0.06), 50)) == 3
    assert len(top_heads(table, ReuseConfig(top_fraction=0.06), 100)) == 6
    assert "L0H1" not in top_heads(table, ReuseConfig(rank_by="score"), 50)  # negatives last


def test_later_stages_take_their_share_of_all_the_models_heads():
    # the second stage scores only the 20 heads below its receivers: still 2 of 50 heads
    full, below = scores((3, 0), (3, 1)), scores((1, 0), (1, 1), shape=(2, 10))
    sets = stage_circuits({"logits": full, "queries": below}, ReuseConfig(top_fraction=0.04))
    assert sets == {"logits": HeadSet("L3H0,L3H1"), "queries": HeadSet("L1H0,L1H1")}


def test_shared_share_and_jaccard_per_stage_and_overall():
    config = ReuseConfig(top_fraction=0.04)  # 2 heads per stage
    ioi = {"logits": scores((3, 0), (3, 1)), "queries": scores((1, 0), (1, 1))}
    other = {"logits": scores((3, 0), (2, 2)), "queries": scores((1, 0), (1, 1))}
    control = {"logits": scores((0, 5), (0, 6)), "queries": scores((3, 0), (0, 8))}
    table = overlap(
        "ioi", {"ioi": ioi, "other": other, "control": control}, config, controls=("control",)
    ).data.set_index(["task", "stage"])
    assert table.loc[("other", "logits"), "shared"] == ["L3H0"]
    assert table.loc[("other", "logits"), "shared_share"] == 0.5
    assert table.loc[("other", "logits"), "jaccard"] == pytest.approx(1 / 3)
    assert table.loc[("other", "queries"), "shared_share"] == 1.0
    assert table.loc[("other", "all"), "n_shared"] == 3
    assert table.loc[("other", "all"), "shared_share"] == 0.75  # 3 of the 4-head circuit
    # L3H0 is a logits head for ioi and a queries head for the control: not shared at a
    # stage, but both circuits hold it
    assert table.loc[("control", "all"), "shared_share"] == 0.0
    assert table.loc[("control", "all"), "jaccard"] == pytest.approx(1 / 7)
    assert table["control"].to_dict() == {k: k[0] == "control" for k in table.index}


def test_identical_circuits_share_everything():
    stage = {"logits": scores((2, 3))}
    table = overlap("a", {"a": stage, "b": stage}).data
    assert (table["shared_share"] == 1.0).all() and (table["jaccard"] == 1.0).all()


def test_mismatched_stages_and_unknown_tasks_are_one_line_errors():
    a, b = {"logits": scores((0, 0))}, {"values": scores((0, 0))}
    with pytest.raises(InputError, match="compare the same stages"):
        overlap("a", {"a": a, "b": b})
    with pytest.raises(InputError, match="reference task 'x'"):
        overlap("x", {"a": a})
    with pytest.raises(InputError, match="Control tasks"):
        overlap("a", {"a": a, "b": a}, controls=("c",))
    with pytest.raises(InputError, match="at least one stage"):
        stage_circuits({})
    with pytest.raises(ConfigError):
        ReuseConfig(top_fraction=0.0)
