"""Retrieval-head analyzer vs plain greedy generation: one test per length, and a batched grid.

Lengths: for each context length one NIAH test is built on the default model (or --model).
The analyzer on that one test (`probes.retrieval.score_tests`: fused-kernel prefill, one
attention row per layer per decode step, argmax inside the hook) and plain greedy
generation (`model.hf.generate`, same prompt, same number of new tokens, default attention
kernel) run alternately `--repeats` times; the fastest run of each is reported, and the
ratios analyzer / plain.

Grid: every scoring needle x `--grid-lengths` x `--grid-depths` (24 tests by default) is
scored in batches (`probes.retrieval.run`, `--batch-size`, default suited to the device)
with the prompt prefixes the tests share prefilled once (the default), then in batches
without prefix sharing, then at batch 1 without it (the reference tables), and plain
greedy generation (`model.hf.generate`, batch 1) makes the same number of new tokens for
each test. Reported: the prefix tree's prefilled tokens against the prompts' tokens, each
run's wall time and main-thread CPU time (with one torch thread, the work done however
busy the machine is) and their ratios to batch-1 plain (goal <= 0.5) from this one run,
and whether the batched tables equal the batch-1 tables.

Peak memory: on CUDA, torch.cuda.max_memory_allocated above the memory allocated before the
call; on CPU, the peak resident set size (RSS, sampled every millisecond by a thread) above
the RSS before the call. The output says which.

Usage: python benchmarks/retrieval.py [--lengths 1000,2000,4000,8000] [--device cpu]
       [--grid-lengths 500,1000] [--grid-depths 2] [--part lengths|grid|both]
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

from interp.generation import Generation, generate
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


def grid(model: Any, args: argparse.Namespace) -> None:
    """Batched scoring of a test grid vs batch-1 plain greedy generation of the same tests."""
    lengths = [int(n) for n in args.grid_lengths.split(",")]
    needles = niah.load_needles()
    tests = niah.build_tests(
        model, needles, niah.load_haystack(), lengths, args.grid_depths, args.max_new_tokens
    )
    config = retrieval.RetrievalConfig(lengths=tuple(lengths), max_new_tokens=args.max_new_tokens)
    size = args.batch_size or niah.batch_size_for(model, tests, args.max_new_tokens, True)
    device = model.device

    def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
        """(wall seconds, this thread's CPU seconds, result): with one torch thread the
        CPU time is the work done, whatever else the machine runs."""
        cpu = time.thread_time()
        seconds, _, result = measure(fn, device)
        return seconds, time.thread_time() - cpu, result

    retrieval.run(model, tests[:2], config, batch_size=2)  # warm-up
    batched = timed(lambda: retrieval.run(model, tests, config, batch_size=size))
    unshared = timed(
        lambda: retrieval.run(model, tests, config, batch_size=size, share_prefix=False)
    )
    single = timed(lambda: retrieval.run(model, tests, config, batch_size=1, share_prefix=False))
    prompts = [t.input_ids for t in tests]
    decoding = niah.decoding(config.max_new_tokens)
    driver = timed(lambda: generate(model, prompts, decoding, batch_size=1))
    steps = [n_steps(g) for g in driver[2]]

    def plain() -> None:
        for test, n in zip(tests, steps, strict=True):
            ids = test.input_ids[None].to(device)
            model.hf.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)

    t_plain, c_plain, _ = timed(plain)
    reference = single[2]
    equal = all(
        run.tests.data.equals(reference.tests.data)
        and run.scores.data.equals(reference.scores.data)
        for run in (batched[2], unshared[2])
    )
    tree = niah.shared_prefixes(model, tests)
    n_tokens = [len(t.input_ids) for t in tests]
    print(
        f"grid: {len(tests)} tests ({len(needles)} needles x lengths {lengths} x"
        f" {args.grid_depths} depths; {min(n_tokens)}-{max(n_tokens)} tokens, up to"
        f" {args.max_new_tokens} new, {sum(steps)} new in all), batch size {size}"
    )
    if tree is not None:
        shared, total = tree.coverage()
        print(
            f"prefix sharing: the tree prefills {shared} of the prompts' {total} tokens"
            f" ({shared / total:.0%}; each prompt minus its last token)"
        )
    print(f"{'':>28} {'wall s':>8} {'x plain':>7} {'cpu s':>8} {'x plain':>7}")
    print(f"{'plain greedy, batch 1':>28} {t_plain:8.2f} {'':>7} {c_plain:8.2f}  (HF generate)")
    rows = [
        ("plain driver, batch 1", driver, ""),
        ("analyzer, batch 1", single, "(no prefix sharing: the reference tables)"),
        ("analyzer, batched, unshared", unshared, ""),
        ("analyzer, batched", batched, "(shared prefixes: the default)"),
    ]
    for label, (seconds, cpu, _), note in rows:
        print(
            f"{label:>28} {seconds:8.2f} {seconds / t_plain:7.2f} {cpu:8.2f}"
            f" {cpu / c_plain:7.2f}  {note}".rstrip()
        )
    print(f"batched tables (shared and unshared) equal the batch-1 tables: {equal}", flush=True)


def n_steps(generation: Generation) -> int:
    """Decode steps the driver ran: the kept tokens, plus the step that chose an EOS."""
    return len(generation.response_ids) + (generation.finish_reason == "eos")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--lengths", default="1000,2000,4000,8000")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--grid-lengths", default="500,1000")
    parser.add_argument("--grid-depths", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--part", choices=["lengths", "grid", "both"], default="both")
    args = parser.parse_args()
    model = load_model(args.model, device=args.device)
    if args.part != "lengths":
        grid(model, args)
    if args.part != "grid":
        lengths_table(model, args)


def lengths_table(model: Any, args: argparse.Namespace) -> None:
    """One test per length: the analyzer vs plain greedy generation, time and memory."""
    device = model.device
    lengths = [int(n) for n in args.lengths.split(",")]
    needle = niah.load_needles()[:1]
    haystack = niah.load_haystack()
    config = retrieval.RetrievalConfig(max_new_tokens=args.max_new_tokens)
    decoding = niah.decoding(config.max_new_tokens)
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
                retrieval.score_tests(model, [test], config)
                model.hf.generate(ids, max_new_tokens=2, do_sample=False)
            plain, analyzer = [], []
            for _ in range(args.repeats):
                analyzer.append(
                    measure(lambda t=test: retrieval.score_tests(model, [t], config), device)
                )
                n_new = n_steps(generate(model, test.input_ids, decoding)[0])

                def plain_generate(n: int = n_new, ids: torch.Tensor = ids) -> Any:
                    return model.hf.generate(
                        ids, max_new_tokens=n, min_new_tokens=n, do_sample=False
                    )

                plain.append(measure(plain_generate, device))
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
