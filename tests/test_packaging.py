"""`pip install .` (not editable) works: the wheel holds every module and the shipped data.

Builds the wheel from a copy of the sources (so the checkout gets no build/ or egg-info
folder), installs it into a temporary target and loads shipped files from there, in a
fresh interpreter started outside the repository. About 5 s.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("interp", "probes", "circuits")
DATA_SUFFIXES = {".md", ".json", ".jsonl", ".txt", ".safetensors"}


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True, capture_output=True)


def test_wheel_ships_every_module_and_the_data_and_installs(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in (*PACKAGES, "data"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    _pip("wheel", "--no-deps", "--no-build-isolation", "-q", str(source), "-w", str(tmp_path))
    wheel = next(tmp_path.glob("*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())

    modules = {
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert sorted(modules - names) == []  # pyproject's package list misses none
    data = {
        "interp/_data/" + path.relative_to(ROOT / "data").as_posix()
        for path in (ROOT / "data").rglob("*")
        if path.suffix in DATA_SUFFIXES
    }
    assert "interp/_data/tasks/sentiment/test.jsonl" in data
    assert sorted(data - names) == []

    target = tmp_path / "target"
    _pip("install", "--no-deps", "-q", "--target", str(target), str(wheel))
    # interp.prompts alone (no torch import keeps this fast) finds and reads the data.
    script = (
        "import interp\n"
        "from interp.prompts import DATA_DIR, data_path, read_jsonl\n"
        f"assert interp.__file__.startswith({str(target)!r}), interp.__file__\n"
        f"assert DATA_DIR == __import__('pathlib').Path({str(target)!r}) / 'interp' / '_data'\n"
        "task = read_jsonl(data_path('tasks', 'sentiment', 'test.jsonl'), 'Task')\n"
        "needles = read_jsonl(data_path('needles', 'scoring.jsonl'), 'Needle')\n"
        "print(len(task), len(needles))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    n_items, n_needles = map(int, done.stdout.split())
    assert n_items > 0 and n_needles > 0
