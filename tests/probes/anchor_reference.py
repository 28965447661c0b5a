"""A direct, unoptimized reference for the anchor metrics, from full [L, H, N, N] patterns.

Written from the paper's formulas with Python loops over positions, on one trace at a time
(no padding), so it shares no code with probes.anchors' blocked, batched hooks.
"""

from __future__ import annotations

import numpy as np
import torch

from interp.models import Model
from probes.anchor_traces import Trace


def patterns(model: Model, trace: Trace) -> np.ndarray:
    """[layer, head, N, N] float64 eager attention of one unpadded trace."""
    before = model.hf.config._attn_implementation
    model.hf.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model.hf(torch.tensor([trace.ids]), output_attentions=True)
    finally:
        model.hf.set_attn_implementation(before)
    return torch.stack([a[0] for a in out.attentions]).double().numpy()


def back_distance(pattern: np.ndarray, response: range) -> tuple[np.ndarray, int]:
    """[layer, head] Σ_{t∈R} Σ_{s≤t} A[t,s](t−s), and |R|."""
    n_layers, n_heads = pattern.shape[:2]
    total = np.zeros((n_layers, n_heads))
    for t in response:
        for s in range(t + 1):
            total += pattern[:, :, t, s] * (t - s)
    return total, len(response)


def waad(mean_local: np.ndarray, t: int, window: int) -> float:
    return sum(mean_local[t, s] * min(t - s, window) for s in range(t + 1))


def fai(mean_global: np.ndarray, s: int, response: range, h_lo: int, h_hi: int) -> float:
    later = [t for t in response if s + h_lo <= t and (not h_hi or t <= s + h_hi)]
    return float(np.mean([mean_global[t, s] for t in later])) if later else float("nan")
