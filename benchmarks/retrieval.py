"""Retrieval-head analyzer vs plain greedy generation: time and peak memory at 1k-8k tokens.

For each context length one NIAH test is built on the default model (or --model). The
analyzer (`probes.retrieval.score_test`: fused-kernel prefill, one attention row per layer
per decode step, argmax inside the hook) and plain greedy generation (`model.hf.generate`,
same prompt, same number of new tokens, default attention kernel) run alternately
`--repeats` times; the fastest run of each is reported, and the ratios analyzer / plain.

Peak memory: on CUDA, torch.cuda.max_memory_allocated above the memory allocated before the
call; on CPU, the peak resident set size (RSS, sampled every millisecond by a thread) above
the RSS before the call. The output says which.

Usage: python benchmarks/retrieval.py [--lengths 1000,2000,4000,8000] [--device cpu]
"""

from __future__ import annotations

import argparse
import gc
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil
import torch

from interp.models import load_model
from probes import niah, retrieval


class PeakRSS:
    """Samples this process's RSS in a thread; `peak - start` is the growth in bytes."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.process = psutil.Process()

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def measure(fn: Callable[[], Any], device: torch.device) -> tuple[float, float, Any]:
    """(seconds, peak memory growth in MiB, result) of one call."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        start = time.perf_counter()
        result = fn()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        return seconds, (torch.cuda.max_memory_allocated() - before) / 2**20, result
    with PeakRSS() as rss:
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
    return seconds, (rss.peak - rss.start) / 2**20, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--lengths", default="1000,2000,4000,8000")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    model = load_model(args.model, device=args.device)
    device = model.device
    lengths = [int(n) for n in args.lengths.split(",")]
    needle = niah.load_needles()[:1]
    haystack = niah.load_haystack()
    config = retrieval.RetrievalConfig(max_new_tokens=args.max_new_tokens)
    memory = "CUDA max_memory_allocated" if device.type == "cuda" else "CPU peak RSS (sampled)"
    print(f"model {model.spec} on {device}; peak memory = {memory} growth during the call")
    print(
        f"{'tokens':>7} {'new':>4} {'plain s':>8} {'analyzer s':>10} {'time x':>7}"
        f" {'plain MiB':>10} {'analyzer MiB':>12} {'memory x':>9}"
    )
    with torch.no_grad():
        for length in lengths:
            test = niah.build_tests(model, needle, haystack, [length], 1, args.max_new_tokens)[0]
            ids = test.input_ids[None].to(device)
            if length == lengths[0]:  # warm-up: first-call allocations are not the method's
                retrieval.score_test(model, test, config)
                model.hf.generate(ids, max_new_tokens=2, do_sample=False)
            plain, analyzer = [], []
            for _ in range(args.repeats):
                analyzer.append(
                    measure(lambda t=test: retrieval.score_test(model, t, config), device)
                )
                n_new = len(analyzer[-1][2][2])

                def generate(n: int = n_new, ids: torch.Tensor = ids) -> Any:
                    return model.hf.generate(
                        ids, max_new_tokens=n, min_new_tokens=n, do_sample=False
                    )

                plain.append(measure(generate, device))
            t_plain = min(p[0] for p in plain)
            t_ours = min(a[0] for a in analyzer)
            m_plain = min(p[1] for p in plain)
            m_ours = min(a[1] for a in analyzer)
            print(
                f"{len(test.input_ids):>7} {n_new:>4} {t_plain:>8.2f} {t_ours:>10.2f}"
                f" {t_ours / t_plain:>7.2f} {m_plain:>10.1f} {m_ours:>12.1f}"
                f" {m_ours / max(m_plain, 1e-9):>9.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
