"""Time and peak memory of one analyzer call, the same way for every benchmark.

On CUDA, peak memory is `torch.cuda.max_memory_allocated` above the level before the call.
On CPU the allocator keeps freed pages, so two calls in one process hide each other's peaks:
each measurement runs in a fresh process (`isolated`), which loads the model, warms up on a
short input, and reports the peak resident set size above the level before the call.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Measurement:
    seconds: float
    peak_bytes: int
    method: str


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize()


def measure(fn: Callable[[], Any], device: torch.device | str = "cpu") -> Measurement:
    """Wall time and peak memory of one call of `fn` above the level before it."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        return Measurement(
            seconds, torch.cuda.max_memory_allocated() - before, "cuda max_memory_allocated"
        )
    before = _rss_bytes()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return Measurement(seconds, max(0, peak - before), "peak RSS in a fresh process")


def report(measurement: Measurement) -> None:
    """Child side of `isolated`: print the measurement as the last line."""
    print("MEASUREMENT " + json.dumps(asdict(measurement)), flush=True)


def isolated(script: str, *args: str) -> Measurement:
    """Run `python script *args` (which calls `report`) and return its measurement."""
    done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True)
    lines = [s for s in done.stdout.splitlines() if s.startswith("MEASUREMENT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{script} {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return Measurement(**json.loads(lines[-1].removeprefix("MEASUREMENT ")))


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"
