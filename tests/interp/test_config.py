"""Config validation shared by every analyzer and intervention config."""

from __future__ import annotations

import math

import pytest

from interp.errors import ConfigError
from interp.interventions.act import ActConfig
from interp.interventions.act_search import SearchConfig
from probes.retrieval import RetrievalConfig
from probes.sinks import SinkConfig


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(
    ("config", "field"),
    [
        (SinkConfig, "threshold"),
        (SinkConfig, "massive_threshold"),
        (ActConfig, "beta"),
        (ActConfig, "threshold"),
        (SearchConfig, "min_gain"),  # has no range check of its own
        (RetrievalConfig, "threshold"),
    ],
)
def test_non_finite_numbers_are_refused(config, field, bad):
    with pytest.raises(ConfigError, match=f"{field} must be a finite number"):
        config(**{field: bad})


def test_finite_values_still_pass():
    assert SearchConfig(min_gain=0.01).min_gain == 0.01
    assert ActConfig(beta=1.0).beta == 1.0
