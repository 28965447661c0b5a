"""The shared sink rule: m_j with valid-query denominators, absolute and relative cutoffs."""

from __future__ import annotations

import torch

from interp.interventions.act import ActConfig
from interp.sink_rule import mean_received, sink_mask


def test_mean_received_counts_only_queries_that_see_the_key() -> None:
    sums = torch.tensor([2.0, 0.6, 0.3, 0.0])
    seen_by = torch.tensor([4.0, 3.0, 2.0, 0.0])  # key 3 is padding: nobody sees it
    assert torch.allclose(mean_received(sums, seen_by), torch.tensor([0.5, 0.2, 0.15, 0.0]))


def test_cutoffs_and_min_queries() -> None:
    sums = torch.tensor([2.0, 0.6, 0.3, 0.0, 0.0])
    seen_by = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.0])
    sinks, _ = sink_mask(sums, seen_by, ActConfig())  # tau = 0.1
    assert sinks.tolist() == [True, True, True, False, False]
    sinks, _ = sink_mask(sums, seen_by, ActConfig(min_queries=3))
    assert sinks.tolist() == [True, True, False, False, False]
    # Relative: alpha / N with N = 4 keys seen by some query (the padded key is not counted).
    sinks, _ = sink_mask(sums, seen_by, ActConfig(threshold_mode="relative", relative_alpha=0.7))
    assert sinks.tolist() == [True, True, False, False, False]  # cutoff 0.175
