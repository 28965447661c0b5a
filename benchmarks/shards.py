"""A retrieval grid split over 2 torchrun ranks of 1 thread each vs 1 process of 1 thread.

Runs `interp score retrieval` on the default model's grid (every scoring needle x
`--lengths` x `--depths`) twice in this one run: as one process with one torch thread
(OMP_NUM_THREADS=1), then under `torchrun --standalone --nproc_per_node 2` (gloo on CPU;
torchrun gives each rank one thread). Each run is a fresh command, so both pay their
start-up (imports, the model load: each rank loads its own copy, in parallel). Prints each
run's wall time, the manifest's wall_s (the command's body: model load and work, imports
excluded; rank 0's under torchrun), their ratios, whether the two runs' tables are equal
(exactly), and the load average before and after: the ratio means something only on cores
nothing else is using.

Usage: python benchmarks/shards.py [--lengths 500,1000] [--depths 2] [--keep FOLDER]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

TABLES = ("scores", "tests")


def timed(command: list[str], env: dict[str, str]) -> float:
    """Run `command` to its end; its wall time in seconds (it must succeed)."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[:6])} ... failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


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
    walls = [timed(one, env), timed([*two, "--out", str(root / "two")], env)]
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
    print(f"{'command wall s':>22} {walls[0]:8.1f} {walls[1]:8.1f} {walls[0] / walls[1]:7.2f}x")
    print(f"{'manifest wall_s':>22} {work[0]:8.1f} {work[1]:8.1f} {work[0] / work[1]:7.2f}x")
    print(f"tables equal: {equal}")
    if args.keep is None:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
