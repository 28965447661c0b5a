import pytest
import torch

from interp.errors import InputError
from interp.heads import Head, HeadGeometry, HeadSet

GEOMETRY = HeadGeometry(n_layers=3, n_heads=4, n_kv_heads=2, d_head=16, d_model=64)


def test_head_labels_parse_both_notations():
    assert Head(12, 3).label == "L12H3"
    assert Head.parse("L12H3") == Head(12, 3)
    assert Head.parse("12.3") == Head(12, 3)
    with pytest.raises(InputError):
        Head.parse("layer 12")


def test_headset_is_sorted_deduplicated_and_masks():
    heads = HeadSet(["L2H1", Head(0, 3), "L2H1"])
    assert heads.labels == ["L0H3", "L2H1"]
    mask = heads.mask(GEOMETRY)
    assert mask.shape == (3, 4) and mask.sum() == 2 and mask[2, 1] and mask[0, 3]
    assert heads.layers == [0, 2] and heads.heads_in(2) == [1]


def test_mask_rejects_heads_outside_the_model():
    with pytest.raises(InputError, match="does not exist"):
        HeadSet(["L3H0"]).mask(GEOMETRY)


def test_gqa_group_addressing():
    assert GEOMETRY.group_size == 2
    assert [GEOMETRY.kv_head(h) for h in range(4)] == [0, 0, 1, 1]
    assert len(GEOMETRY.all_heads()) == 12


def test_set_algebra():
    a = HeadSet(["L0H0", "L1H1"])
    assert a.union(["L2H2"]) == HeadSet(["L0H0", "L1H1", "L2H2"])
    assert a.difference([Head(0, 0)]) == HeadSet(["L1H1"])
    assert torch.equal(HeadSet().mask(GEOMETRY), torch.zeros(3, 4, dtype=torch.bool))


def test_one_label_or_head_is_a_set_of_one():
    assert HeadSet("L1H2") == HeadSet(["L1H2"]) == HeadSet(Head(1, 2))
    assert len(HeadSet("12.3")) == 1
