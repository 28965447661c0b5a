"""build_once: one build across concurrent processes, no orphans, no half-built folder."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from interp.cache import build_once, temporary_folders


def _slow_build(tmp: Path, log: Path) -> None:
    with log.open("a") as handle:
        handle.write("built\n")
    tmp.mkdir()
    time.sleep(0.5)  # long enough that the second process arrives mid-build
    (tmp / "config.json").write_text("{}")


def _load(folder: str, log: str) -> None:
    build_once(Path(folder), lambda tmp: _slow_build(tmp, Path(log)), complete="config.json")


def test_concurrent_first_builds_build_once_and_leave_no_temp(tmp_path):
    folder, log = tmp_path / "cache" / "abc", tmp_path / "log"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_load, args=(str(folder), str(log))) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    assert log.read_text().splitlines() == ["built"]
    assert (folder / "config.json").is_file()
    assert temporary_folders(folder) == []


def test_orphans_of_a_killed_build_are_removed(tmp_path):
    folder = tmp_path / "abc"
    orphan = tmp_path / "abc.tmp12345"
    orphan.mkdir()
    (orphan / "config.json").write_text("{}")  # killed after the config, before the rename

    def build(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "config.json").write_text("{}")

    build_once(folder, build, "config.json")
    assert not orphan.exists()
    assert (folder / "config.json").is_file()


def test_a_failed_build_leaves_nothing(tmp_path):
    folder = tmp_path / "abc"

    def broken(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "weights").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        build_once(folder, broken, "config.json")
    assert not folder.exists()
    assert temporary_folders(folder) == []


def test_cached_conversions_ignore_temporary_folders(tmp_path, monkeypatch):
    from interp.gguf import cached_conversions

    monkeypatch.setenv("INTERP_CACHE", str(tmp_path))
    for name in ("0123456789abcdef", "0123456789abcdef.tmp999"):
        (tmp_path / "gguf" / name).mkdir(parents=True)
        (tmp_path / "gguf" / name / "config.json").write_text("{}")
    assert [p.name for p in cached_conversions()] == ["0123456789abcdef"]
