"""An atlas part's per-head table: every head of the model once, the method's columns prefixed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from interp.atlas_part import method_heads
from interp.errors import InputError
from interp.heads import HeadGeometry

GEOMETRY = HeadGeometry(n_layers=3, n_heads=2, n_kv_heads=1, d_head=4, d_model=8)


def test_every_head_gets_a_row_and_missing_heads_get_nan():
    columns = pd.DataFrame({"head": [1, 0], "layer": [2, 0], "score": [0.5, -1.0]})
    heads = method_heads(GEOMETRY, "m", columns)
    assert heads.columns.tolist() == ["layer", "head", "m_score"]
    assert heads[["layer", "head"]].values.tolist() == [[i // 2, i % 2] for i in range(6)]
    np.testing.assert_array_equal(heads["m_score"], [-1.0, np.nan, np.nan, np.nan, np.nan, 0.5])


def test_a_head_twice_is_refused():
    columns = pd.DataFrame({"layer": [1, 1], "head": [0, 0], "score": [0.5, 0.6]})
    with pytest.raises(InputError, match="m atlas columns hold a head twice"):
        method_heads(GEOMETRY, "m", columns)
