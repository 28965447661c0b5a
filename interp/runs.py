"""Run folders: a resumable log of finished work, and the manifest of what a run did.

`WorkLog(folder, identity)` is the record of a stoppable run's finished work items; the
work driver (`interp.work`) fills it and skips what it holds, so any long run (retrieval
scoring, the masking test, the anchors passes, the ACT head search) stops and resumes,
from Python as from the CLI. Each finished item is one JSON line `{"key": ..., "rows":
[...]}` in `work.jsonl`; the items of a batch are written with one `write` and flushed, so
an item is either recorded whole or not at all; a line cut short by a crash is dropped
when the log is reopened. The run's identity (a provenance record minus its date: model,
weights, analyzer, config, inputs) is stored in `run.json` when the folder is first used;
reopening the log with another identity (another model, config or input set) is refused
with the fields that differ, so a resume can never mix rows of two runs. The identity also
holds `LOG_LAYOUT`, the form of the recorded rows: a folder written by a toolkit whose rows
had another form is refused in one line rather than misread.

`claim_folder(folder, record)` holds a result folder for one command: an exclusive lock
(`.lock`, released when the command ends or its process dies) refuses a second live run,
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
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from interp.errors import InputError
from interp.results import Provenance, sha256_file, toolkit_version

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

    def __init__(self, folder: str | Path, identity: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / LOG_FILE
        identity = {**identity, "log_layout": LOG_LAYOUT}
        identity_path = self.folder / IDENTITY_FILE
        if not identity_path.is_file():
            identity_path.write_text(_dumps(identity) + "\n", encoding="utf-8")
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
        self.done: dict[str, list[dict[str, Any]]] = self._read()

    def _read(self) -> dict[str, list[dict[str, Any]]]:
        if not self.path.is_file():
            return {}
        raw = self.path.read_bytes()
        complete = raw[: raw.rfind(b"\n") + 1]
        if len(complete) < len(raw):  # a line cut short by a crash: drop it before appending
            with self.path.open("r+b") as handle:
                handle.truncate(len(complete))
        done = {}
        for number, line in enumerate(complete.decode("utf-8").splitlines(), start=1):
            try:
                record = json.loads(line)
                done[_key_text(record["key"])] = record["rows"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise InputError(f"{self.path}:{number} is not a work record ({exc}).") from exc
        return done

    def is_done(self, key: Hashable) -> bool:
        return _key_text(key) in self.done

    def rows(self, key: Hashable) -> list[dict[str, Any]]:
        """The rows recorded for `key` (KeyError if it has none)."""
        return self.done[_key_text(key)]

    def record(self, key: Hashable, rows: list[dict[str, Any]]) -> None:
        """Append one finished item: one write of one line, then flush to disk."""
        self.record_all([(key, rows)])

    def record_all(self, items: Sequence[tuple[Hashable, list[dict[str, Any]]]]) -> None:
        """Append finished items (a batch): one write of their lines, then flush to disk."""
        lines = [
            json.dumps({"key": key, "rows": rows}, ensure_ascii=False) + "\n"  # column order kept
            for key, rows in items
        ]
        with self.path.open("ab") as handle:
            handle.write("".join(lines).encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        for key, rows in items:
            self.done[_key_text(key)] = rows


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
    try:
        created = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        handle = (folder / LOCK_FILE).open("a")
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
            if created and [p.name for p in folder.iterdir()] == [LOCK_FILE]:
                # A run that failed before writing anything leaves no empty folder behind.
                (folder / LOCK_FILE).unlink()
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
    if any(p.is_file() and p.name != LOCK_FILE for p in folder.rglob("*")):
        raise InputError(
            f"{folder} is not empty and holds no finished interp run (no {MANIFEST_FILE});"
            " use an empty or new --out."
        )


def _options(params: dict[str, Any]) -> dict[str, Any]:
    """The options that make two runs the same run (the output folder itself aside)."""
    return {k: v for k, v in params.items() if k != "out"}


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
