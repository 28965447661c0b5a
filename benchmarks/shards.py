"""A retrieval grid split over 2 torchrun ranks of 1 thread each vs 1 process of 1 thread.

Runs `interp score retrieval` on the default model's grid (every scoring needle x
`--lengths` x `--depths`) twice in this one run: as one process with one torch thread
(OMP_NUM_THREADS=1), then under `torchrun --standalone --nproc_per_node 2` (gloo on CPU;
torchrun gives each rank one thread). Each run is a fresh command, so both pay their
start-up (imports, the model load: each rank loads its own copy, in parallel). Prints each
run's wall time, the manifest's wall_s (the command's body: model load and work, imports
excluded; rank 0's under torchrun), their ratios, whether the two runs' tables are equal
(exactly), the CPU time of all the processes of each run (load-independent: what the split
costs in work, model loads and prefixes each rank prefills for itself included), and the
load average before and after: the wall ratio means something only on free cores. Last, the
split itself: the distinct prompt tokens (what each process's prefix tree computes) of each
rank's share against one process's, so the cost of splitting shared prefixes is visible.

The machine's own ceiling comes first: the same fixed model work (a prefill of 4 x 1,000
tokens, then 10 decode steps of those 4 rows) timed in one process alone, then in two processes
at once, one thread each. Two independent processes are the best any split can do, so
the speed-up is read against 2 x (alone / together): on 2 cores that share their memory and
cache, two processes each run slower than one alone.

Usage: python benchmarks/shards.py [--lengths 500,1000] [--depths 10] [--keep FOLDER]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

TABLES = ("scores", "tests")


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run `command` to its end (it must succeed): its wall time and the CPU time (user +
    system) of all its processes, in seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[:6])} ... failed:\n{done.stderr[-3000:]}")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def fixed_work() -> None:
    """The ceiling's workload: prints the seconds it took, model load excluded."""
    import torch

    from interp.models import load_model

    model = load_model()
    prompts = torch.randint(100, 40_000, (4, 1000), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        start = time.perf_counter()
        cache = model.hf(prompts, use_cache=True).past_key_values
        for _ in range(10):
            cache = model.hf(prompts[:, -1:], past_key_values=cache, use_cache=True).past_key_values
    print(time.perf_counter() - start)


def ceiling(env: dict[str, str]) -> float:
    """2 x (the fixed work's time alone / its time in two processes at once)."""
    command = [sys.executable, __file__, "--fixed-work"]

    def seconds(run: subprocess.Popen) -> float:
        out, err = run.communicate()
        if run.returncode != 0:
            sys.exit(f"the fixed work failed:\n{err[-3000:]}")
        return float(out.split()[-1])

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    alone = seconds(start())
    pair = [start(), start()]
    together = [seconds(run) for run in pair]
    print(
        f"fixed work: {alone:.1f} s alone, {together[0]:.1f} and {together[1]:.1f} s as two"
        f" processes at once: the most 2 processes gain here is {2 * alone / max(together):.2f}x"
    )
    return 2 * alone / max(together)


def main() -> None:
    if sys.argv[1:] == ["--fixed-work"]:
        return fixed_work()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="500,1000", help="prompt lengths of the grid")
    parser.add_argument("--depths", default="10", help="needle depths per length (paper: 10)")
    parser.add_argument("--keep", type=Path, help="keep both result folders here")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="shards-bench-"))
    grid = ["score", "retrieval", "--lengths", args.lengths, "--depths", args.depths]
    grid += ["--no-static"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    print(f"grid: 6 scoring needles x lengths {args.lengths} x {args.depths} depths")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    most = ceiling(env)
    one = [sys.executable, "-m", "interp.cli", *grid, "--out", str(root / "one")]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    two = [*launcher, "--nproc_per_node", "2", "-m", "interp.cli", *grid]
    (wall_one, cpu_one), (wall_two, cpu_two) = (
        timed(one, env),
        timed([*two, "--out", str(root / "two")], env),
    )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    work = [json.loads((root / n / "manifest.json").read_text())["wall_s"] for n in ("one", "two")]
    equal = all(
        pd.read_parquet(root / "one" / f"{t}.parquet").equals(
            pd.read_parquet(root / "two" / f"{t}.parquet")
        )
        for t in TABLES
    )
    tests = len(pd.read_parquet(root / "one" / "tests.parquet"))
    print(f"{tests} tests")
    print(f"{'':>22} {'1 rank':>8} {'2 ranks':>8} {'speed-up':>8}")
    print(f"{'command wall s':>22} {wall_one:8.1f} {wall_two:8.1f} {wall_one / wall_two:7.2f}x")
    print(f"{'manifest wall_s':>22} {work[0]:8.1f} {work[1]:8.1f} {work[0] / work[1]:7.2f}x")
    print(f"{'CPU s, all processes':>22} {cpu_one:8.1f} {cpu_two:8.1f}")
    print(
        f"on 2 free cores the 2 ranks would take about {cpu_two / 2:.1f} s of CPU each:"
        f" {cpu_one / (cpu_two / 2):.2f}x (their CPU time, shared out, against one process's)"
    )
    print(
        f"the split's share of the machine's ceiling: {wall_one / wall_two / most:.0%} (command"
        f" wall), {work[0] / work[1] / most:.0%} (manifest wall_s)"
    )
    print(f"tables equal: {equal}")
    print(split_shares([int(n) for n in args.lengths.split(",")], int(args.depths)))
    if args.keep is None:
        shutil.rmtree(root)


def split_shares(lengths: list[int], depths: int) -> str:
    """Each of 2 ranks' distinct prompt tokens against one process's, as the split deals
    the grid's batches (the same plan and batch size as the command's)."""
    from interp.models import load_model
    from interp.shards import Shard
    from interp.work import DistinctPrefixTokens, Work
    from probes.niah import SIMILAR, NiahInputs, batch_size_for, needle_items

    model = load_model()
    tests = NiahInputs().tests(model, "scoring.jsonl", lengths, depths, 50)
    items = needle_items(tests)
    distinct = DistinctPrefixTokens([item.prompt for item in items])
    index = {item.key: n for n, item in enumerate(items)}
    size = batch_size_for(model, tests, 50, shared=True)
    work = Work(items, batch_size=size, similar=SIMILAR, shard=Shard(0, 2, "ranks"))
    shares = [
        distinct(
            [index[i.key] for b, o in zip(work.plan, work.owners, strict=True) if o == s for i in b]
        )
        for s in (0, 1)
    ]
    whole = distinct(list(index.values()))
    return (
        f"distinct prompt tokens: one process {whole}, ranks {shares[0]} and {shares[1]}"
        f" (largest share / half of one process's: {max(shares) / (whole / 2):.3f})"
    )


if __name__ == "__main__":
    main()
