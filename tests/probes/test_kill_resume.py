"""Kill-and-resume: the long runs, stopped at any point, resume to an uninterrupted run.

Each command runs in a subprocess on a tiny saved model. It is killed with SIGKILL at a
random point of its work (after a random number of finished tests, plus a random delay, so
some kills land mid-test and, by chance, mid-write); after some kills a record cut short is
appended by hand, as a kill in the middle of a write leaves it. The command is then rerun
until it finishes, and its tables must equal those of one uninterrupted run.

From Python, `probes.retrieval.run` and `run_ablation` are stopped by their progress
callback (`tests.stops`) and run again with the same folder: the resumed tables equal an
uninterrupted run's and the tests already logged are not run again.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pandas.testing import assert_frame_equal

from interp.effects import EffectsConfig
from interp.errors import InputError
from interp.results import HeadScores, Provenance
from interp.runs import run_identity
from probes import niah, retrieval
from probes import retrieval_ablation as ablation
from probes.retrieval import RetrievalResult
from probes.retrieval_ablation import AblationResult
from tests.stops import Stop, count_items, logged, stop_after
from tests.tiny import saved_tiny, write_needles

KILLS = 10
GRID = ["--lengths", "200,250", "--depths", "3", "--max-new-tokens", "3", "--no-static"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("kill")
    saved_tiny(root / "model")
    needles = write_needles(root / "needles.jsonl")
    return {"root": root, "model": root / "model", "needles": needles}


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


def _needle_tests(tiny) -> list[niah.NeedleTest]:
    hay = " ".join(f"Sentence number {i} is about a quiet harbour town." for i in range(80))
    words = ["red", "blue"]
    needles = [
        niah.Needle(f"The key number {i} is {w}.", f"Key {i}?", w) for i, w in enumerate(words)
    ]
    return niah.build_tests(tiny, needles, hay, [150, 170], 2, 3)  # 8 tests, 2 lengths


def test_retrieval_stopped_from_python_resumes_to_one_run(tiny, tmp_path, monkeypatch) -> None:
    tests = _needle_tests(tiny)
    config = retrieval.RetrievalConfig(max_new_tokens=3)
    once = retrieval.run(tiny, tests, config, batch_size=2)
    with pytest.raises(Stop):
        retrieval.run(tiny, tests, config, stop_after(4), batch_size=2, folder=tmp_path)
    assert logged(tmp_path) == 4  # two batches of two
    sizes = count_items(monkeypatch, retrieval, "scored_rows")
    resumed = retrieval.run(tiny, tests, config, batch_size=2, folder=tmp_path)
    assert sizes == [2, 2] and logged(tmp_path) == len(tests)
    assert_frame_equal(resumed.tests.data, once.tests.data, check_exact=True)
    assert_frame_equal(resumed.scores.data, once.scores.data, check_exact=True)
    assert run_identity(resumed.scores.provenance) == run_identity(once.scores.provenance)
    other = retrieval.RetrievalConfig(max_new_tokens=3, count="events")
    with pytest.raises(InputError, match="another config; resuming would mix"):
        retrieval.run(tiny, tests, other, batch_size=2, folder=tmp_path)
    with pytest.raises(InputError, match="another inputs_hash"):
        retrieval.run(tiny, tests[:4], config, batch_size=2, folder=tmp_path)


def test_ablation_stopped_from_python_resumes_to_one_run(tiny, tmp_path, monkeypatch) -> None:
    tests = _needle_tests(tiny)
    provenance = Provenance("m", "w", "retrieval", {}, "h", 1)
    scores = HeadScores.from_matrix(np.arange(12, dtype=float).reshape(3, 4) / 20, provenance)
    config = ablation.AblationConfig(ks=(0, 2), n_seeds=2, max_new_tokens=3, threshold=0.45)
    effects = EffectsConfig(n_boot=50)

    def run(**kwargs):
        return ablation.run_ablation(tiny, tests, scores, config, effects=effects, **kwargs)

    once = run(batch_size=3)
    with pytest.raises(Stop):
        run(batch_size=3, progress=stop_after(4), folder=tmp_path)
    # Batches of 2 (a needle's two depths: batches hold whole needles), the 170-token tests
    # apart from the 150-token ones (lengths differ by > 10%): the first two are logged.
    assert logged(tmp_path) == 4
    sizes = count_items(monkeypatch, ablation, "masked_responses")
    resumed = run(batch_size=3, folder=tmp_path)
    assert sizes == [2] * 8  # the two unlogged batches, under K = 0, top-2, 2 random
    for name in ("tests", "curve", "effects", "summary"):
        assert_frame_equal(getattr(resumed, name).data, getattr(once, name).data, check_exact=True)
    with pytest.raises(InputError, match="another config"):
        ablation.run_ablation(
            tiny, tests, scores, ablation.AblationConfig(ks=(0, 1)), folder=tmp_path
        )
