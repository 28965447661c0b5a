"""Time and peak memory of one analyzer call, the same way for every benchmark.

On CUDA, peak memory is `torch.cuda.max_memory_allocated` above the level before the call.
On CPU the allocator keeps freed pages, so two calls in one process hide each other's peaks:
each measurement runs in a fresh process (`isolated`), which loads the model, warms up on a
short input, and reports the peak resident set size above the level before the call.
"""

from __future__ import annotations

import argparse
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


def analyzer_vs_forward(
    script: str,
    name: str,
    child: Callable[[str, int, str], None],
    lengths: list[int],
    doc: str,
) -> None:
    """The main of a script that times `name` against a plain forward per length.

    Each measurement runs `script --child MODE TOKENS` in a fresh process (MODE "forward"
    or "analyzer"); the table adds what all layers' float32 patterns would take.
    """
    from interp.models import load_model

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=lengths)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "TOKENS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.device)
        return
    config = load_model().hf.config
    n_layers, n_heads = config.num_hidden_layers, config.num_attention_heads
    print(f"default model on {args.device}: {n_layers} layers x {n_heads} heads")
    print(
        f"{'tokens':>7} {'forward s':>9} {name + ' s':>10} {'time x':>7} {'forward mem':>12}"
        f" {name + ' mem':>12} {'mem x':>6} {'all patterns':>13} {name + '/patterns':>17}"
    )
    for n_tokens in args.lengths:
        common = ("--device", args.device, "--child")
        plain = isolated(script, *common, "forward", str(n_tokens))
        analyzer = isolated(script, *common, "analyzer", str(n_tokens))
        patterns = n_layers * n_heads * n_tokens**2 * 4
        print(
            f"{n_tokens:>7} {plain.seconds:>9.2f} {analyzer.seconds:>10.2f}"
            f" {analyzer.seconds / plain.seconds:>7.2f} {gib(plain.peak_bytes):>12}"
            f" {gib(analyzer.peak_bytes):>12} {analyzer.peak_bytes / plain.peak_bytes:>6.2f}"
            f" {gib(patterns):>13} {analyzer.peak_bytes / patterns:>17.3f}",
            flush=True,
        )
    print(f"memory: {plain.method}; all patterns = layers x heads x N^2 x 4 bytes (float32)")
