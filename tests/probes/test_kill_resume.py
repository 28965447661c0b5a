"""Kill-and-resume: the long commands, killed at random points, resume to an uninterrupted run.

Each command runs in a subprocess on a tiny saved model. It is killed with SIGKILL at a
random point of its work (after a random number of finished tests, plus a random delay, so
some kills land mid-test and, by chance, mid-write); after some kills a record cut short is
appended by hand, as a kill in the middle of a write leaves it. The command is then rerun
until it finishes, and its tables must equal those of one uninterrupted run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probes.retrieval import RetrievalResult
from probes.retrieval_ablation import AblationResult
from tests.tiny import saved_tiny

KILLS = 10
GRID = ["--lengths", "200,250", "--depths", "3", "--max-new-tokens", "3", "--no-static"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("kill")
    saved_tiny(root / "model")
    needles = [
        {"needle": f"The key number {i} is {w}.", "question": f"Key {i}?", "answer": w}
        for i, w in enumerate(["red", "blue", "green"])
    ]
    (root / "needles.jsonl").write_text("".join(json.dumps(n) + "\n" for n in needles))
    return {"root": root, "model": root / "model", "needles": root / "needles.jsonl"}


def _interp(*args: str) -> list[str]:
    return [sys.executable, "-c", "from interp.cli import app; app()", *args]


def _finished_tests(out: Path) -> int:
    log = out / "work.jsonl"
    return log.read_bytes().count(b"\n") if log.is_file() else 0


def _kill_and_resume(args: list[str], out: Path, total: int, seed: int) -> None:
    rng = random.Random(seed)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for kill in range(KILLS):
        process = subprocess.Popen(
            _interp(*args, "--out", str(out)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        target = min(total - 1, _finished_tests(out) + rng.randrange(0, 2))
        deadline = time.monotonic() + 120
        while process.poll() is None and _finished_tests(out) < target:
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))
        process.send_signal(signal.SIGKILL)
        process.wait()
        if kill % 3 == 1 and (out / "work.jsonl").is_file():
            with (out / "work.jsonl").open("ab") as log:  # a write cut short by the kill
                log.write(b'{"key": [0, 250, 0.5], "rows": [{"needle": 0, "leng')
    finished = subprocess.run(_interp(*args, "--out", str(out)), capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr[-2000:]


def _clean_and_killed(args: list[str], folder: Path, load, seed: int):
    """(an uninterrupted run's result, the result of a run killed KILLS times and resumed)."""
    clean = subprocess.run(_interp(*args, "--out", str(folder / "clean")), capture_output=True)
    assert clean.returncode == 0, clean.stderr[-2000:]
    _kill_and_resume(args, folder / "killed", total=18, seed=seed)
    assert _finished_tests(folder / "killed") == 18  # each test recorded exactly once
    return load(folder / "clean"), load(folder / "killed")


def test_score_retrieval_killed_ten_times_equals_one_run(inputs, tmp_path) -> None:
    args = ["score", "retrieval", "--model", str(inputs["model"])]
    args += ["--needles", str(inputs["needles"]), *GRID]
    once, resumed = _clean_and_killed(args, tmp_path, RetrievalResult.load, seed=1)
    assert resumed.tests.data.equals(once.tests.data)
    assert resumed.scores.data.equals(once.scores.data)


def test_ablate_retrieval_killed_ten_times_equals_one_run(inputs, tmp_path) -> None:
    score = ["score", "retrieval", "--model", str(inputs["model"]), "--needles"]
    score += [str(inputs["needles"]), *GRID, "--out", str(tmp_path / "scores")]
    assert subprocess.run(_interp(*score), capture_output=True).returncode == 0
    args = ["ablate", "retrieval", "--model", str(inputs["model"]), "--scores"]
    args += [str(tmp_path / "scores" / "scores.parquet"), "--needles", str(inputs["needles"])]
    args += [*GRID, "--ks", "0,2", "--seeds", "2", "--n-boot", "50"]
    once, resumed = _clean_and_killed(args, tmp_path, AblationResult.load, seed=2)
    assert resumed.tests.data.equals(once.tests.data)
    assert resumed.effects.data.equals(once.effects.data)
