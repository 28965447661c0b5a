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
load average before and after: the wall ratio means something only on free cores.

Usage: python benchmarks/shards.py [--lengths 500,1000] [--depths 2] [--keep FOLDER]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="500,1000", help="prompt lengths of the grid")
    parser.add_argument("--depths", default="2", help="needle depths per length")
    parser.add_argument("--keep", type=Path, help="keep both result folders here")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="shards-bench-"))
    grid = ["score", "retrieval", "--lengths", args.lengths, "--depths", args.depths]
    grid += ["--no-static"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    print(f"grid: 6 scoring needles x lengths {args.lengths} x {args.depths} depths")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
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
    print(f"tables equal: {equal}")
    if args.keep is None:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
