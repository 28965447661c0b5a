"""ACT head search: the full fast search vs the one-head-at-a-time path, in one run.

The old path (before the search started candidates at their layer) ran, per candidate head,
every calibration item through a full forward with ACT on that head alone, plus one plain
baseline. Timing all 243 heads that way takes about an hour on 2 cores, so this script times
`--old-heads` seeded heads of it and extrapolates linearly (every head costs the same full
forwards). Then it times the full new search (`search_heads`, all candidates) on the same
calibration splits: the default tasks of `interp effect act`, whole. Prints both and the
ratio. `python benchmarks/act_search.py [--old-heads 3]`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from interp.heads import HeadSet
from interp.interventions.act import ACT, ActConfig, act_candidates
from interp.interventions.act_search import (
    DEFAULT_TASKS,
    SearchConfig,
    calibration_metric,
    search_heads,
)
from interp.models import load_model
from interp.tasks import load_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-heads", type=int, default=3, help="heads timed on the old path")
    args = parser.parse_args()
    model = load_model()
    tasks = [load_task(name, "calibration") for name in DEFAULT_TASKS]
    candidates = list(act_candidates(model.geometry))
    act, config = ActConfig(), SearchConfig()
    items = sum(len(task.items) for task in tasks)
    print(
        f"{len(candidates)} candidate heads, {items} calibration items ({', '.join(DEFAULT_TASKS)})"
    )
    print(f"torch threads: {torch.get_num_threads()}")

    start = time.perf_counter()
    calibration_metric(model, tasks, config)  # the old path's baseline
    baseline_s = time.perf_counter() - start
    sample = np.random.default_rng(0).choice(len(candidates), args.old_heads, replace=False)
    start = time.perf_counter()
    for index in sample:
        with ACT(HeadSet([candidates[index]]), act).applied(model):
            calibration_metric(model, tasks, config)
    per_head_s = (time.perf_counter() - start) / args.old_heads
    old_s = baseline_s + per_head_s * len(candidates)
    print(f"old path: baseline {baseline_s:.1f} s, {per_head_s:.1f} s per head")
    print(f"old path, all heads (extrapolated from {args.old_heads}): {old_s:.0f} s")

    start = time.perf_counter()
    found = search_heads(model, tasks, act, config)
    new_s = time.perf_counter() - start
    skipped = int((found.scores.data["skipped"] != "").sum())
    print(
        f"new path, all heads: {new_s:.0f} s ({len(candidates) - skipped} searched,"
        f" {skipped} without hidden sinks; {len(found.selected)} kept)"
    )
    print(f"speed-up: {old_s / new_s:.1f}x")


if __name__ == "__main__":
    main()
