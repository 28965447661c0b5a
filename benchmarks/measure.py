"""Time and peak memory of a callable, the same way on CPU and CUDA.

On CUDA peak memory is `torch.cuda.max_memory_allocated` above the level before the call;
on CPU it is the peak resident set size above the level before the call, sampled every
2 ms by a background thread (allocations shorter than that can be missed).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Measurement:
    seconds: float
    peak_bytes: int
    method: str


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * _PAGE


def measure(
    fn: Callable[[], Any], device: torch.device | str = "cpu", repeat: int = 1
) -> Measurement:
    """Best-of-`repeat` wall time and peak memory above the starting level."""
    device = torch.device(device)
    best, peak = float("inf"), 0
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start_bytes = torch.cuda.memory_allocated()
            start = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
            peak = max(peak, torch.cuda.max_memory_allocated() - start_bytes)
            continue
        start_bytes, high, done = _rss(), [0], threading.Event()

        def sample(high: list[int] = high, done: threading.Event = done) -> None:
            while not done.is_set():
                high[0] = max(high[0], _rss())
                time.sleep(0.002)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        done.set()
        sampler.join()
        best = min(best, elapsed)
        peak = max(peak, max(high[0], _rss()) - start_bytes)
    method = "cuda max_memory_allocated" if device.type == "cuda" else "RSS sampled every 2 ms"
    return Measurement(best, peak, method)


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"
