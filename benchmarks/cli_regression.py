"""Before/after regression harness for the CLI workflows: run them small, compare the tables.

Issue 22 moves every CLI workflow into the library; its acceptance is that every command's
tables are unchanged. This script runs the commands at small settings (a minute or so each
on 2 CPU cores) and compares two such runs table by table.

Usage (from the repository root, with the environment's Python):

    python benchmarks/cli_regression.py run OUT [--only NAME ...] [--timeout S]
    python benchmarks/cli_regression.py compare BEFORE AFTER [--allow NAME:TABLE:COLUMN ...]
    python benchmarks/cli_regression.py list          # the commands and their argv

`run` writes each command's output folder to OUT/<name>/, its console output to
OUT/_logs/<name>.log, the inputs it generates (shapes-llava's POPE and caption tasks, by
`interp shapes tasks --scenes 8`) to OUT/_inputs/, and OUT/commands.json: for every command
its exact argv (paths relative to OUT, which is the command's working directory), exit code
and wall time, plus the git commit and the `interp` package that ran. Each command runs in a
fresh Python process that calls the CLI's own entry point, `interp.cli:app` (what the
`interp` console script calls), with this checkout first on PYTHONPATH, so the tables are
what a user gets from this code, no RNG or cache state leaks from one command into the next,
and `--only` reruns give the same tables as a full run. A command's folder is deleted
before it runs (no resume from an earlier run's work log). Text commands use the default
model (SmolLM2-135M-Instruct); vision ones shapes-llava. Figures are HTML only
(`--no-static`). `ablate-retrieval` reads `score-retrieval`'s scores and `circuit-sae`
reads `circuit-ioi`'s circuit (as its `--reference`), so `--only` adds the command they need
when OUT does not hold its folder yet.

`compare` checks every parquet table, and every result summary (`summary.json`, read as
one row of dotted keys: `sae train` writes no table), found recursively in either folder:
it exists in both, same columns (order-insensitive), same row count, non-numeric columns
equal, numeric columns exactly equal (NaN equals NaN; no tolerance), rows compared in order
(when only the order differs the line says so). It prints one line per table and exits 1
on any difference not allowed. Not compared: every other file (manifest.json with its argv,
versions, input hashes and wall time; run.json; CSV copies; figures; logs; work logs; saved
SAE weights), the tables' schema metadata (the provenance: versions, argv, paths, times),
the summaries' wall-time keys (`*_s`, SUMMARY_IGNORED), and the columns in DEFAULT_ALLOW
(empty: see its comment). `--allow NAME:TABLE:COLUMN` (fnmatch patterns; NAME is the
command folder, TABLE the table's path below it without `.parquet` or `.json`, e.g.
`circuit-ioi:ioi_circuit:score` or `sae-train:summary:loss_spliced`) marks an intended
change: it is still printed, as `differs (allowed)`, but does not fail. A missing table or a
changed row count is allowed only by an entry whose COLUMN is `*`.

Wall times on a shared 2-core CPU (pre-refactor code, commit ab56bba) are in
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHAPES = "_inputs/shapes"  # `interp shapes tasks` output, relative to OUT

# Result summaries are compared too (some commands, e.g. `sae train`, write no table); their
# wall-time keys are left out. Nested keys are dotted: `node_auc.mean`.
SUMMARY = "summary.json"
SUMMARY_IGNORED = ("*_s",)

# Columns whose values legitimately differ run to run (e.g. wall times), as
# NAME:TABLE:COLUMN patterns. Empty: two full runs of the commands below on one machine
# (ab56bba, 2-core CPU, one quiet and one with other jobs on the cores) gave 60 of 60
# tables and summaries exactly equal. The tables do depend on batch sizes at float
# rounding (circuit ioi with --batch-size 64 vs 256: 3 of 752 path-patching scores differ
# by up to 2e-7), so every command here names its batch size.
DEFAULT_ALLOW: tuple[str, ...] = ()


@dataclass(frozen=True)
class Command:
    """One CLI command at its small settings; argv is relative to OUT (its working dir)."""

    name: str
    argv: tuple[str, ...]
    needs: tuple[str, ...] = field(default=())  # commands whose output it reads


def _vision(group: str, command: str, *argv: str) -> tuple[str, ...]:
    return (group, command, "-m", "shapes-llava", *argv)


# The small settings. Seeds are the commands' defaults (0) unless named; batch sizes are set
# explicitly so a changed device default cannot change the tables.
COMMANDS: tuple[Command, ...] = (
    Command("score-sinks", ("score", "sinks", "--out", "score-sinks", "--no-static")),
    Command(
        "score-retrieval",
        (
            "score", "retrieval", "--lengths", "300", "--depths", "2", "--max-new-tokens", "16",
            "--batch-size", "4", "--out", "score-retrieval", "--no-static",
        ),
    ),
    Command(
        "ablate-retrieval",
        (
            "ablate", "retrieval", "--scores", "score-retrieval/scores.parquet",
            "--lengths", "300", "--depths", "1", "--ks", "0,5", "--seeds", "1",
            "--max-new-tokens", "16", "--n-boot", "200", "--batch-size", "4",
            "--out", "ablate-retrieval", "--no-static",
        ),
        needs=("score-retrieval",),
    ),
    Command(
        "effect-act",
        (
            "effect", "act", "--task", "contrast", "--calibration-items", "8",
            "--test-items", "16", "--max-heads", "6", "--metric", "log_prob", "--n-boot", "200",
            "--out", "effect-act", "--no-static",
        ),
    ),
    Command(
        "score-anchors",
        (
            "score", "anchors", "--problems", "2", "--max-new-tokens", "48", "--batch-size", "2",
            "--causal-seeds", "1", "--continuation", "8", "--n-boot", "200",
            "--causal-checks", "perturb,block", "--alternatives", "3", "--rollout", "16",
            "--out", "score-anchors", "--no-static",
        ),
    ),
    Command(
        "circuit-ioi",
        (
            "circuit", "ioi", "--n", "8", "--per-stage", "2", "--batch-size", "256",
            "--out", "circuit-ioi", "--no-static",
        ),
    ),
    Command(
        "circuit-overlap",
        (
            "circuit", "overlap", "--n", "8", "--repair-n", "8", "--random-controls", "1",
            "--n-boot", "200", "--batch-size", "256", "--out", "circuit-overlap", "--no-static",
        ),
    ),
    Command(
        "circuit-sae",
        (
            "circuit", "sae", "--task", "ioi", "--n", "16", "--seeds", "1", "--d-sae", "64",
            "--epochs", "50", "--n-train", "4", "--batch-size", "16",
            "--reference", "circuit-ioi/ioi_circuit.parquet",
            "--out", "circuit-sae", "--no-static",
        ),
        needs=("circuit-ioi",),
    ),
    Command(
        "sae-train",
        (
            "sae", "train", "--layer", "3", "--d-sae", "256", "--epochs", "2",
            "--out", "sae-train",
        ),
    ),
    Command(
        "score-vision",
        _vision(
            "score", "vision", "--images", f"{SHAPES}/captions/images", "--batch-size", "4",
            "--out", "score-vision", "--no-static",
        ),
    ),
    Command(
        "effect-vhr",
        _vision(
            "effect", "vhr", "-t", f"{SHAPES}/pope-adversarial", "-c", f"{SHAPES}/captions",
            "--alpha", "2", "--items", "8", "--n-boot", "200", "--batch-size", "4",
            "--out", "effect-vhr", "--no-static",
        ),
    ),
    Command(
        "effect-var",
        _vision(
            "effect", "var", "-t", f"{SHAPES}/pope-adversarial", "-c", f"{SHAPES}/captions",
            "--p", "0.4", "--items", "8", "--n-boot", "200", "--batch-size", "4",
            "--out", "effect-var", "--no-static",
        ),
    ),
)  # fmt: skip
SHAPES_TASKS = ("shapes", "tasks", "--out", SHAPES, "--scenes", "8")
VISION = {"score-vision", "effect-vhr", "effect-var"}
NAMES = tuple(c.name for c in COMMANDS)

# A fresh process calling the CLI's entry point, as the `interp` console script does.
_ENTRY = "import sys; from interp.cli import app; sys.exit(app(prog_name='interp'))"
_WHICH = "import interp, sys; print(interp.__file__); print(sys.executable)"


# --------------------------------------------------------------------------------------- run


def _git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head}{'+dirty' if dirty else ''}"


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def _run_cli(argv: tuple[str, ...], out: Path, log: Path, timeout: float) -> tuple[int, float]:
    """Run `interp ARGV` in a fresh process with cwd OUT; (exit code, wall seconds)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("w") as sink:
        sink.write(f"$ interp {' '.join(argv)}\n")
        sink.flush()
        proc = subprocess.Popen(
            [sys.executable, "-c", _ENTRY, *argv],
            cwd=out,
            env=_child_env(),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            sink.write(f"\n[cli_regression] killed after {timeout:.0f} s\n")
            code = 124
    return code, time.perf_counter() - start


def _selected(only: list[str] | None, out: Path) -> list[Command]:
    if not only:
        return list(COMMANDS)
    unknown = sorted(set(only) - set(NAMES))
    if unknown:
        raise SystemExit(f"Unknown command name(s) {unknown}; known: {', '.join(NAMES)}")
    wanted = set(only)
    for c in COMMANDS:  # a dependency's output missing: run it too (COMMANDS is in order)
        if c.name in wanted:
            wanted.update(d for d in c.needs if not (out / d).is_dir())
    return [c for c in COMMANDS if c.name in wanted]


def run(out: Path, only: list[str] | None, timeout: float) -> int:
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    commands = _selected(only, out)
    record_path = out / "commands.json"
    record: dict[str, Any] = (
        json.loads(record_path.read_text()) if record_path.exists() else {"commands": {}}
    )
    which = subprocess.run(
        [sys.executable, "-c", _WHICH], cwd=out, env=_child_env(), capture_output=True, text=True
    ).stdout.split()
    record.update(
        repo=str(ROOT),
        git_commit=_git_commit(),
        interp_package=which[0] if which else "unknown",
        python=sys.executable,
        cwd="OUT: every argv path is relative to the output folder",
        program="python -c " + json.dumps(_ENTRY) + " ARGV",
    )
    print(f"interp from {record['interp_package']} (commit {record['git_commit']})", flush=True)
    steps: list[tuple[str, tuple[str, ...]]] = []
    if any(c.name in VISION for c in commands) and not (out / SHAPES).is_dir():
        steps.append(("shapes-tasks", SHAPES_TASKS))
    steps += [(c.name, c.argv) for c in commands]
    failed = []
    for name, argv in steps:
        if name in NAMES and (out / name).exists():
            shutil.rmtree(out / name)  # a fresh run, not a resume of the earlier work log
        print(f"{name:17s} interp {' '.join(argv)}", flush=True)
        code, wall = _run_cli(argv, out, out / "_logs" / f"{name}.log", timeout)
        tables = sorted(str(p.relative_to(out)) for p in (out / name).rglob("*.parquet"))
        record["commands"][name] = {
            "argv": ["interp", *argv],
            "exit_code": code,
            "wall_s": round(wall, 1),
            "log": f"_logs/{name}.log",
            "tables": tables if name in NAMES else [],
        }
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        status = "ok" if code == 0 else f"FAILED (exit {code}, see _logs/{name}.log)"
        print(f"{'':17s} {status}, {wall:.1f} s, {len(tables)} tables", flush=True)
        if code != 0:
            failed.append(name)
    print("\n".join(["", "wall times (s):", *_timings(record)]))
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


def _timings(record: dict[str, Any]) -> list[str]:
    return [
        f"  {name:17s} {entry['wall_s']:7.1f}  exit {entry['exit_code']}"
        for name, entry in record["commands"].items()
    ]


# ----------------------------------------------------------------------------------- compare


@dataclass
class TableResult:
    """One table's comparison: `problems` fail the run, `allowed` are intended changes."""

    path: str
    problems: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)
    note: str = ""

    def line(self) -> str:
        if self.problems:
            head = "DIFFERS"
            parts = self.problems + [f"{a} (allowed)" for a in self.allowed]
        elif self.allowed:
            head, parts = "differs (allowed)", self.allowed
        else:
            head, parts = "equal", []
        text = f"{head:18s} {self.path}"
        if parts:
            text += ": " + "; ".join(parts)
        return text + (f" [{self.note}]" if self.note else "")


def parse_allow(entries: list[str]) -> list[tuple[str, str, str]]:
    """NAME:TABLE:COLUMN patterns; TABLE may contain '/' (a table in a subfolder)."""
    parsed = []
    for entry in entries:
        parts = entry.split(":")
        if len(parts) != 3 or not all(parts):
            raise SystemExit(f"--allow takes NAME:TABLE:COLUMN (fnmatch patterns), got {entry!r}")
        parsed.append((parts[0], parts[1], parts[2]))
    return parsed


def _allowed(allow: list[tuple[str, str, str]], table: str, column: str) -> bool:
    """Whether NAME/TABLE.parquet's COLUMN is allowed to differ ('*': structural changes)."""
    name, _, rest = table.partition("/")
    stem = rest.removesuffix(".parquet").removesuffix(".json")
    return any(
        fnmatch.fnmatchcase(name, n)
        and fnmatch.fnmatchcase(stem, t)
        and (c == "*" if column == "*" else fnmatch.fnmatchcase(column, c))
        for n, t, c in allow
    )


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)


def _cell_equal(a: Any, b: Any) -> bool:
    """Equality of two cells of an object column: lists and arrays element-wise, NaN == NaN."""
    if isinstance(a, np.ndarray | list | tuple) or isinstance(b, np.ndarray | list | tuple):
        try:
            x, y = np.asarray(a), np.asarray(b)
        except ValueError:  # ragged
            return bool(len(a) == len(b) and all(map(_cell_equal, a, b)))
        if x.shape != y.shape:
            return False
        if x.dtype.kind in "fc" and y.dtype.kind in "fc":
            return bool(np.array_equal(x, y, equal_nan=True))
        return bool(
            len(x.ravel()) == len(y.ravel()) and all(map(_cell_equal, x.ravel(), y.ravel()))
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_cell_equal(a[k], b[k]) for k in a)
    a_missing = a is None or (isinstance(a, float) and math.isnan(a)) or a is pd.NA
    b_missing = b is None or (isinstance(b, float) and math.isnan(b)) or b is pd.NA
    if a_missing or b_missing:
        return a_missing and b_missing
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return repr(a) == repr(b)


def _column_difference(before: pd.Series, after: pd.Series) -> str | None:
    """None when equal; else what differs (rows, and the max abs diff of numeric columns)."""
    if _is_numeric(before) and _is_numeric(after):
        x = before.to_numpy(dtype=float, na_value=np.nan)
        y = after.to_numpy(dtype=float, na_value=np.nan)
        same = (x == y) | (np.isnan(x) & np.isnan(y))
        if same.all():
            if before.dtype != after.dtype:
                return f"dtype {before.dtype} -> {after.dtype}, values equal"
            return None
        diff = np.abs(x - y)[~same]
        finite = diff[np.isfinite(diff)]
        size = f"max abs diff {finite.max():.3g}" if finite.size else "NaN/inf where not"
        return f"{(~same).sum()} of {len(same)} rows, {size}"
    same = np.array([_cell_equal(a, b) for a, b in zip(before, after, strict=True)], bool)
    if same.all():
        return None
    first = int(np.flatnonzero(~same)[0])
    return (
        f"{(~same).sum()} of {len(same)} rows (first: row {first}, "
        f"{_short(before.iloc[first])} -> {_short(after.iloc[first])})"
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _reordered(before: pd.DataFrame, after: pd.DataFrame) -> bool:
    """Whether the rows are equal as a multiset (sorted by every column's text)."""
    try:
        keys = [str(c) for c in before.columns]
        a = before.astype(str).sort_values(keys, kind="stable").reset_index(drop=True)
        b = after[before.columns].astype(str).sort_values(keys, kind="stable")
        return a.equals(b.reset_index(drop=True))
    except (TypeError, ValueError):
        return False


def compare_table(
    path: str, before: Path | None, after: Path | None, allow: list[tuple[str, str, str]]
) -> TableResult:
    """Compare one table (PATH relative to the folders; None: missing on that side)."""
    result = TableResult(path)
    if before is None or after is None:
        side = "BEFORE" if before is None else "AFTER"
        target = result.allowed if _allowed(allow, path, "*") else result.problems
        target.append(f"missing in {side}")
        return result
    a, b = read_table(before), read_table(after)
    columns_a, columns_b = [str(c) for c in a.columns], [str(c) for c in b.columns]
    a.columns, b.columns = columns_a, columns_b
    for column in sorted(set(columns_a) ^ set(columns_b)):
        side = "BEFORE" if column not in columns_a else "AFTER"
        target = result.allowed if _allowed(allow, path, column) else result.problems
        target.append(f"column {column!r} missing in {side}")
    if len(a) != len(b):
        target = result.allowed if _allowed(allow, path, "*") else result.problems
        target.append(f"rows {len(a)} -> {len(b)}")
        return result
    a, b = a.reset_index(drop=True), b.reset_index(drop=True)
    common = [c for c in columns_a if c in set(columns_b)]
    for column in common:
        difference = _column_difference(a[column], b[column])
        if difference is None:
            continue
        target = result.allowed if _allowed(allow, path, column) else result.problems
        target.append(f"{column}: {difference}")
    if result.problems and _reordered(a[common], b[common]):
        result.note = "the same rows in another order"
    return result


def _tables(folder: Path) -> dict[str, Path]:
    """Every parquet table and result summary (summary.json) below FOLDER, by relative path."""
    found = [*folder.rglob("*.parquet"), *folder.rglob(SUMMARY)]
    return {str(p.relative_to(folder)): p for p in sorted(found)}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested JSON objects as dotted keys; lists stay cells."""
    if not isinstance(value, dict):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def read_table(path: Path) -> pd.DataFrame:
    """A parquet table's data (not its schema metadata); a summary.json as one row."""
    if path.suffix != ".json":
        return pd.read_parquet(path)
    flat = _flatten(json.loads(path.read_text()))
    kept = {
        k: v for k, v in flat.items() if not any(fnmatch.fnmatchcase(k, p) for p in SUMMARY_IGNORED)
    }
    frame = pd.DataFrame(index=[0])
    for key, value in kept.items():  # one at a time: a list value is one cell
        frame[key] = pd.Series([value], dtype=object if isinstance(value, list) else None)
    return frame


def compare(before: Path, after: Path, allow_entries: list[str], quiet: bool = False) -> int:
    """Print one line per table; 0 when every difference is allowed, 1 otherwise."""
    for folder in (before, after):
        if not folder.is_dir():
            raise SystemExit(f"No folder at {folder}")
    allow = parse_allow([*DEFAULT_ALLOW, *allow_entries])
    tables_a, tables_b = _tables(before), _tables(after)
    paths = sorted(set(tables_a) | set(tables_b))
    if not paths:
        print(f"no parquet tables in {before} or {after}")
        return 1
    results = [compare_table(p, tables_a.get(p), tables_b.get(p), allow) for p in paths]
    for r in results:
        if not quiet or r.problems or r.allowed:
            print(r.line())
    bad = sum(bool(r.problems) for r in results)
    allowed = sum(bool(r.allowed) and not r.problems for r in results)
    print(
        f"{len(results)} tables: {len(results) - bad - allowed} equal, {allowed} with allowed"
        f" differences only, {bad} with unexpected differences"
    )
    return 1 if bad else 0


# -------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    p_run = sub.add_parser("run", help="run the commands into OUT/<name>/")
    p_run.add_argument("out", type=Path)
    p_run.add_argument("--only", nargs="+", metavar="NAME", choices=NAMES)
    p_run.add_argument("--timeout", type=float, default=900, help="seconds per command")
    p_cmp = sub.add_parser("compare", help="compare the parquet tables of two runs")
    p_cmp.add_argument("before", type=Path)
    p_cmp.add_argument("after", type=Path)
    p_cmp.add_argument(
        "--allow", nargs="+", action="extend", default=[], metavar="NAME:TABLE:COLUMN"
    )
    p_cmp.add_argument("--quiet", action="store_true", help="print only tables that differ")
    sub.add_parser("list", help="print the commands' argv")
    args = parser.parse_args(argv)
    if args.action == "run":
        return run(args.out, args.only, args.timeout)
    if args.action == "compare":
        return compare(args.before, args.after, args.allow, args.quiet)
    for c in COMMANDS:
        print(f"{c.name:17s} interp {' '.join(c.argv)}")
    print(f"{'(vision inputs)':17s} interp {' '.join(SHAPES_TASKS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
