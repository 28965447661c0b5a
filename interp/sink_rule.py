"""The attention-sink rule of ACT (Yu et al. 2024, arXiv 2406.15765; code GATECH-EIC/ACT).

For a head's post-softmax attention P over N tokens, key j's mean received attention is
m_j = sum_{i>=j} P_ij / (N - j): the mean over the queries that can see j. Key j is a sink iff
m_j > tau, tau = 0.1 absolute in the reference code; `threshold_mode="relative"` uses
alpha / N instead (alpha = 5, a form some descriptions give; unverified, docs/methods.md §2).

Both the sink analyzer (`probes.sinks`) and the ACT intervention use these pure functions,
so the rule lives in one place. With padding, the denominator counts the valid queries that
see key j, and padded keys (seen by no query) are never sinks. Memory: [.., key] floats.
"""

from __future__ import annotations

from typing import Literal, Protocol

import torch
from jaxtyping import Bool, Float
from torch import Tensor

ThresholdMode = Literal["absolute", "relative"]


class SinkRule(Protocol):
    """The rule's parameters, as the sink analyzer's and ACT's configs both carry them.

    threshold: tau (absolute cutoff on m_j); threshold_mode: "absolute" or "relative"
    (cutoff relative_alpha / N); min_queries: keys seen by fewer valid queries are never sinks.
    """

    threshold: float
    threshold_mode: ThresholdMode
    relative_alpha: float
    min_queries: int


def mean_received(
    column_sums: Float[Tensor, "... key"], seen_by: Float[Tensor, "... key"]
) -> Float[Tensor, "... key"]:
    """m_j = column_sums_j / seen_by_j, 0 where no query sees key j.

    Args:
        column_sums: sum over (valid) query rows of the attention each key receives.
        seen_by: how many valid query rows see each key (N - j without padding);
            broadcastable to `column_sums`.
    """
    return column_sums / seen_by.clamp_min(1) * (seen_by > 0)


def sink_mask(
    column_sums: Float[Tensor, "... key"], seen_by: Float[Tensor, "... key"], rule: SinkRule
) -> tuple[Bool[Tensor, "... key"], Float[Tensor, "... key"]]:
    """Sinks S = {j : m_j > cutoff and key j is seen by >= rule.min_queries queries}.

    The cutoff is `rule.threshold` (absolute) or `rule.relative_alpha / N`, N = the number of
    keys some query sees (the valid tokens of the row). Returns (sink mask, m).
    """
    m = mean_received(column_sums, seen_by)
    if rule.threshold_mode == "absolute":
        cutoff = torch.as_tensor(rule.threshold, dtype=m.dtype)
    else:
        n_valid = (seen_by > 0).sum(-1, keepdim=True).clamp_min(1)
        cutoff = rule.relative_alpha / n_valid.to(m.dtype)
    sinks = (m > cutoff) & (seen_by >= rule.min_queries) & (seen_by > 0)
    return sinks, m
