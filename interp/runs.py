"""Run folders: a resumable log of finished work, and the manifest of what a run did.

`WorkLog(folder, identity)` is the record of a stoppable run's finished work items; the
work driver (`interp.work`) fills it and skips what it holds, so any long run (retrieval
scoring, the masking test, the anchors passes, the ACT head search) stops and resumes,
from Python as from the CLI. Each finished item is one JSON line `{"key": ..., "rows":
[...]}` in `work.jsonl`, or in `work.<i>-of-<N>.jsonl` for shard i of N (`interp.shards`;
two processes never write one file). The log reads every such file of its folder, so it
holds the work of every shard, even of an earlier split into another number of shards. The
items of a batch are written with one `write` and flushed, so an item is either recorded
whole or not at all; a line cut short by a crash is dropped (cut from this process's own
file when the log is opened; skipped in another shard's, which may be mid-write). The
run's identity (a provenance record minus its date: model, weights, analyzer, config,
inputs) is stored in `run.json` when the folder is first used, created whole by one atomic
link (of ranks started together, the first wins and the others check against it);
reopening the log with another identity (another model, config or input set) is refused
with the fields that differ, so a resume can never mix rows of two runs. The identity also
holds `LOG_LAYOUT`, the form of the recorded rows: a folder written by a toolkit whose rows
had another form is refused in one line rather than misread.

`claim_folder(folder, record)` holds a result folder for one command: an exclusive lock
(`.lock`, or `.lock.<i>-of-<N>` for a shard; released when the command ends or its process
dies) refuses a second live run,
and a folder holding another run's results (another command or other options, by its
manifest) or files that are no run's is refused too.

`RunRecord` is what a command writes to `manifest.json` at the end: argv and the parsed
options, versions of the toolkit, torch and transformers, every input file's path and
SHA-256, the files this run wrote (only those, even in a reused folder), and wall time.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import platform
import time
from collections.abc import Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from interp.errors import InputError
from interp.results import Provenance, sha256_file, toolkit_version
from interp.shards import Shard, current_shard

LOG_FILE = "work.jsonl"
IDENTITY_FILE = "run.json"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".lock"
# The form of the rows in work.jsonl: raised whenever a release changes what an item records
# (2: effects arms record {"baseline", "intervened"} per item, the ablation and causal check too).
LOG_LAYOUT = 2
# Fields of an identity that may change between a run and its resumption.
_RESUMABLE_ACROSS = ("toolkit_version", "created")


def run_identity(provenance: Provenance) -> dict[str, Any]:
    """What identifies a run for resuming: its provenance without the creation date."""
    identity = provenance.to_dict()
    identity.pop("created")
    return identity


class WorkLog:
    """Finished work items of one run, one atomic JSON line each (see the module doc)."""

    def __init__(
        self, folder: str | Path, identity: dict[str, Any], shard: Shard | None = None
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.shard = shard or current_shard()
        self.path = self.folder / log_name(self.shard)
        identity = {**identity, "log_layout": LOG_LAYOUT}
        identity_path = self.folder / IDENTITY_FILE
        if not identity_path.is_file():
            _create_whole(identity_path, _dumps(identity) + "\n")
        self.stored_identity: dict[str, Any] = json.loads(identity_path.read_text("utf-8"))
        differ = [
            name
            for name in sorted(set(identity) | set(self.stored_identity))
            if name not in _RESUMABLE_ACROSS
            and _dumps(identity.get(name)) != _dumps(self.stored_identity.get(name))
        ]
        if differ == ["log_layout"]:
            raise InputError(
                f"{self.folder} holds work recorded by an earlier release of the toolkit, in a"
                " form this one cannot read. Use another --out (or delete the folder to start"
                " over)."
            )
        if differ:
            raise InputError(
                f"{self.folder} holds a run with another {', '.join(differ)}; resuming would"
                " mix two runs' rows. Use another --out (or delete the folder to start over)."
            )
        self.done: dict[str, list[dict[str, Any]]] = {}
        self._read: dict[Path, tuple[int, int]] = {}  # file -> (bytes, lines) read so far
        if self.shard.mode != "merge":  # a merge writes nothing, not even a cut
            self._cut_short_line()
        self.refresh()

    def _cut_short_line(self) -> None:
        """Drop a line of this process's own file cut short by a crash, before appending."""
        if self.path.is_file():
            raw = self.path.read_bytes()
            complete = raw.rfind(b"\n") + 1
            if complete < len(raw):
                with self.path.open("r+b") as handle:
                    handle.truncate(complete)

    def refresh(self) -> int:
        """Read the items every log file of the folder gained since it was last read (other
        shards write theirs meanwhile); returns how many items are new to this log.

        Raises:
            InputError: a complete line is not a work record.
        """
        added = 0
        for path in log_files(self.folder):
            start, lines = self._read.get(path, (0, 0))
            with path.open("rb") as handle:
                handle.seek(start)
                raw = handle.read()
            complete = raw[: raw.rfind(b"\n") + 1]  # another shard's last line may be mid-write
            for number, line in enumerate(complete.decode("utf-8").splitlines(), lines + 1):
                try:
                    record = json.loads(line)
                    key, rows = _key_text(record["key"]), record["rows"]
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise InputError(f"{path}:{number} is not a work record ({exc}).") from exc
                added += key not in self.done
                self.done[key] = rows
            self._read[path] = (start + len(complete), lines + complete.count(b"\n"))
        return added

    def is_done(self, key: Hashable) -> bool:
        return _key_text(key) in self.done

    def rows(self, key: Hashable) -> list[dict[str, Any]]:
        """The rows recorded for `key` (KeyError if it has none)."""
        return self.done[_key_text(key)]

    def record(self, key: Hashable, rows: list[dict[str, Any]]) -> None:
        """Append one finished item: one write of one line, then flush to disk."""
        self.record_all([(key, rows)])

    def record_all(self, items: Sequence[tuple[Hashable, list[dict[str, Any]]]]) -> None:
        """Append finished items (a batch) to this process's file: one write of their lines,
        then flush to disk."""
        lines = [
            json.dumps({"key": key, "rows": rows}, ensure_ascii=False) + "\n"  # column order kept
            for key, rows in items
        ]
        _, count = self._read.get(self.path, (0, 0))
        with self.path.open("ab") as handle:
            handle.write("".join(lines).encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
            self._read[self.path] = (handle.tell(), count + len(lines))  # no need to reread
        for key, rows in items:
            self.done[_key_text(key)] = rows


def log_name(shard: Shard) -> str:
    """The file a shard writes its items to: work.jsonl, or work.<i>-of-<N>.jsonl."""
    return LOG_FILE if shard.count == 1 else f"work.{shard.label}.jsonl"


def log_files(folder: str | Path) -> list[Path]:
    """The work log files of a run folder: the one process's and every shard's."""
    folder = Path(folder)
    found = [folder / LOG_FILE, *folder.glob("work.*-of-*.jsonl")]
    return sorted(path for path in found if path.is_file())


def _create_whole(path: Path, text: str) -> None:
    """Create `path` holding `text`, all or nothing; the first of racing writers wins."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text, encoding="utf-8")
    try:
        os.link(partial, path)  # fails if another process created it first
    except FileExistsError:
        pass
    finally:
        partial.unlink()


def _key_text(key: Hashable) -> str:
    return _dumps(list(key) if isinstance(key, tuple) else key)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


@contextmanager
def claim_folder(folder: Path, record: RunRecord) -> Iterator[Path]:
    """Hold `folder` for the run `record` describes (see the module doc); yields the folder.

    Raises:
        InputError: the folder cannot be created, another live run holds it, or it holds
            another run's results or files that belong to no run.
    """
    shard = current_shard()
    lock = folder / (LOCK_FILE if shard.count == 1 else f"{LOCK_FILE}.{shard.label}")
    try:
        created = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        handle = lock.open("a")
    except OSError as exc:
        raise InputError(f"Cannot write the output folder {folder}: {exc.strerror}.") from exc
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(
                f"Another live run is writing {folder}; wait for it or use another --out."
            ) from None
        try:
            _refuse_foreign_contents(folder, record)
            yield folder
        finally:
            if created and all(p.name.startswith(LOCK_FILE) for p in folder.iterdir()):
                # A run that failed before writing anything leaves no empty folder behind
                # (the other ranks' locks aside: the last of them removes it).
                lock.unlink()
                with suppress(OSError):
                    folder.rmdir()


def _refuse_foreign_contents(folder: Path, record: RunRecord) -> None:
    manifest = folder / MANIFEST_FILE
    if manifest.is_file():
        try:
            earlier = json.loads(manifest.read_text("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            earlier = {}
        same = earlier.get("command") == record.command and _dumps(
            _options(earlier.get("params", {}))
        ) == _dumps(_options(json.loads(_dumps(record.params))))
        if not same:
            raise InputError(
                f"{folder} holds the results of another run ({earlier.get('command', '?')}"
                " with other options); use another --out."
            )
        return
    if (folder / IDENTITY_FILE).is_file():
        return  # a resumable run stopped before its end: WorkLog checks it is the same run
    if any(p.is_file() and not p.name.startswith(LOCK_FILE) for p in folder.rglob("*")):
        raise InputError(
            f"{folder} is not empty and holds no finished interp run (no {MANIFEST_FILE});"
            " use an empty or new --out."
        )


def _options(params: dict[str, Any]) -> dict[str, Any]:
    """The options that make two runs the same run (the output folder and share aside)."""
    return {k: v for k, v in params.items() if k not in ("out", "shard")}


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


class RunRecord:
    """The manifest of one command run; create it when the command starts.

    Example:
        >>> record = RunRecord("score sinks", argv=["interp", "score", "sinks"])
        >>> record.inputs(["data/prompts/sinks.jsonl"])  # doctest: +SKIP
        >>> record.wrote(result.save(folder))  # doctest: +SKIP
        >>> record.write(folder, rows=270)  # doctest: +SKIP
    """

    def __init__(
        self, command: str, argv: Sequence[str], params: dict[str, Any] | None = None
    ) -> None:
        self.command = command
        self.argv = list(argv)
        self.params = dict(params or {})
        self.started = dt.datetime.now(dt.UTC)
        self._clock = time.perf_counter()
        self.input_files: list[dict[str, str]] = []
        self.files: list[Path] = []

    def inputs(self, paths: Iterable[str | Path]) -> None:
        """Record input files (a folder: every file in it) with their SHA-256.

        Raises:
            InputError: a path does not exist.
        """
        for path in map(Path, paths):
            if not path.exists():
                raise InputError(f"Input {path} does not exist.")
            found = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for file in found:
                entry = {"path": str(file), "sha256": sha256_file(file)}
                if entry not in self.input_files:
                    self.input_files.append(entry)

    def wrote(self, paths: Path | Iterable[Path]) -> None:
        """Record files this run wrote."""
        for path in [paths] if isinstance(paths, Path) else paths:
            if path not in self.files:
                self.files.append(Path(path))

    def write(self, folder: str | Path, **fields: Any) -> Path:
        """Write `manifest.json` into `folder`: the record plus command-specific `fields`."""
        folder = Path(folder)
        path = folder / MANIFEST_FILE
        finished = dt.datetime.now(dt.UTC)
        manifest = {
            **fields,
            "command": self.command,
            "argv": self.argv,
            "params": self.params,
            "versions": {
                "interp-heads": toolkit_version(),
                "torch": package_version("torch"),
                "transformers": package_version("transformers"),
                "python": platform.python_version(),
            },
            "inputs": self.input_files,
            "files": sorted({_relative(p, folder) for p in self.files} | {MANIFEST_FILE}),
            "started": self.started.isoformat(timespec="seconds"),
            "finished": finished.isoformat(timespec="seconds"),
            "wall_s": round(time.perf_counter() - self._clock, 3),
        }
        path.write_text(_dumps_pretty(manifest) + "\n", encoding="utf-8")
        return path


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(path)


def _dumps_pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)
