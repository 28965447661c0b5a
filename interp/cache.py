"""Build a cache folder once, safely across processes.

Two processes that load the same GGUF file for the first time must not both convert it, and a
conversion killed half-way must not leave a folder that looks complete. `build_once` takes an
exclusive lock (`<folder>.lock`, released by the OS when its holder dies), checks again
whether another process finished meanwhile, removes any temporary folder a killed builder
left, builds into `<folder>.tmp<pid>` and renames it into place. A waiting process therefore
reuses the first one's result. POSIX only (fcntl), like the rest of the cache paths.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # blocks until the holder finishes or dies
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def temporary_folders(folder: Path) -> list[Path]:
    """Half-built copies of `folder` (`<name>.tmp<pid>`) that builders left behind."""
    return sorted(folder.parent.glob(f"{folder.name}.tmp*"))


def build_once(folder: Path, build: Callable[[Path], None], complete: str) -> Path:
    """Return `folder`, calling `build(tmp)` to create it unless it already holds `complete`.

    Args:
        folder: the cache folder to create.
        build: writes the folder's files into the temporary folder it is given.
        complete: a file name whose presence marks a finished folder (e.g. config.json).
    """
    if (folder / complete).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(folder.with_name(folder.name + ".lock")):
        if (folder / complete).is_file():  # another process built it while we waited
            return folder
        # Holding the lock, no live builder exists: any temporary folder is an orphan.
        for orphan in temporary_folders(folder):
            shutil.rmtree(orphan, ignore_errors=True)
        if folder.exists():  # incomplete leftovers of an older, non-atomic layout
            shutil.rmtree(folder)
        tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
        try:
            build(tmp)
            tmp.replace(folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder
