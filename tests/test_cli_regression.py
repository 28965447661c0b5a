"""benchmarks/cli_regression.py's `compare` on small hand-made folders (no model)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "cli_regression.py"
_SPEC = importlib.util.spec_from_file_location("cli_regression", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
regression = importlib.util.module_from_spec(_SPEC)
sys.modules["cli_regression"] = regression  # dataclasses look the module up by name
_SPEC.loader.exec_module(regression)


def _scores() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "layer": [0, 0, 1],
            "head": [0, 1, 0],
            "score": [0.25, np.nan, 1.5],
            "label": ["L0H0", "L0H1", "L1H0"],
            "flag": [True, False, True],
            "tokens": [[1, 2], [3], []],
        }
    )


@pytest.fixture
def before(tmp_path: Path) -> Path:
    folder = tmp_path / "before"
    (folder / "score-sinks").mkdir(parents=True)
    (folder / "circuit-ioi" / "repair").mkdir(parents=True)
    _scores().to_parquet(folder / "score-sinks" / "scores.parquet")
    pd.DataFrame({"arm": ["repair", "random"], "effect": [0.4, -0.1]}).to_parquet(
        folder / "circuit-ioi" / "repair" / "effects.parquet"
    )
    (folder / "score-sinks" / "manifest.json").write_text('{"wall_s": 1.0}')
    return folder


@pytest.fixture
def after(before: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "after"
    shutil.copytree(before, folder)
    (folder / "score-sinks" / "manifest.json").write_text('{"wall_s": 2.0}')  # not compared
    return folder


def _edit(folder: Path, table: str, edit) -> None:
    path = folder / table
    frame = pd.read_parquet(path)
    edit(frame)
    frame.to_parquet(path)


def test_equal_tables_pass(before: Path, after: Path, capsys) -> None:
    assert regression.compare(before, after, []) == 0
    out = capsys.readouterr().out
    assert "equal              score-sinks/scores.parquet" in out
    assert "2 tables: 2 equal" in out


def test_reordered_columns_pass(before: Path, after: Path) -> None:
    frame = _scores()
    frame[frame.columns[::-1]].to_parquet(after / "score-sinks" / "scores.parquet")
    assert regression.compare(before, after, []) == 0


def test_changed_numeric_cell_fails(before: Path, after: Path, capsys) -> None:
    _edit(
        after,
        "score-sinks/scores.parquet",
        lambda f: f.__setitem__("score", [0.25, np.nan, 1.5 + 1e-12]),
    )
    assert regression.compare(before, after, []) == 1
    out = capsys.readouterr().out
    assert "DIFFERS" in out and "score: 1 of 3 rows, max abs diff 1e-12" in out


def test_nan_against_number_fails(before: Path, after: Path) -> None:
    _edit(after, "score-sinks/scores.parquet", lambda f: f.__setitem__("score", [0.25, 0.0, 1.5]))
    assert regression.compare(before, after, []) == 1


def test_missing_table_fails(before: Path, after: Path, capsys) -> None:
    (after / "circuit-ioi" / "repair" / "effects.parquet").unlink()
    assert regression.compare(before, after, []) == 1
    assert "circuit-ioi/repair/effects.parquet: missing in AFTER" in capsys.readouterr().out
    assert regression.compare(after, before, []) == 1  # and the other way round


def test_changed_string_fails(before: Path, after: Path, capsys) -> None:
    _edit(
        after, "score-sinks/scores.parquet", lambda f: f.__setitem__("label", ["L0H0", "x", "L1H0"])
    )
    assert regression.compare(before, after, []) == 1
    assert "label: 1 of 3 rows (first: row 1, 'L0H1' -> 'x')" in capsys.readouterr().out


def test_changed_list_cell_fails(before: Path, after: Path) -> None:
    _edit(after, "score-sinks/scores.parquet", lambda f: f.__setitem__("tokens", [[1, 2], [4], []]))
    assert regression.compare(before, after, []) == 1


def test_structure_changes_fail(before: Path, after: Path) -> None:
    _edit(after, "score-sinks/scores.parquet", lambda f: f.__setitem__("extra", 1))
    assert regression.compare(before, after, []) == 1
    _scores().iloc[:2].to_parquet(after / "score-sinks" / "scores.parquet")
    assert regression.compare(before, after, []) == 1


def test_reordered_rows_fail_and_say_so(before: Path, after: Path, capsys) -> None:
    _scores().iloc[::-1].to_parquet(after / "score-sinks" / "scores.parquet")
    assert regression.compare(before, after, []) == 1
    assert "the same rows in another order" in capsys.readouterr().out


def test_allow_names_intended_changes(before: Path, after: Path, capsys) -> None:
    _edit(after, "score-sinks/scores.parquet", lambda f: f.__setitem__("score", [0.5, np.nan, 1.5]))
    assert regression.compare(before, after, ["score-sinks:scores:score"]) == 0
    assert "differs (allowed)  score-sinks/scores.parquet" in capsys.readouterr().out
    assert regression.compare(before, after, ["score-sinks:scores:s*"]) == 0  # fnmatch
    assert regression.compare(before, after, ["score-sinks:scores:label"]) == 1  # other column
    assert regression.compare(before, after, ["circuit-ioi:scores:score"]) == 1  # other command
    # a change the entry does not name still fails
    _edit(after, "score-sinks/scores.parquet", lambda f: f.__setitem__("head", [0, 1, 1]))
    assert regression.compare(before, after, ["score-sinks:scores:score"]) == 1


def test_allow_star_covers_a_missing_table(before: Path, after: Path) -> None:
    (after / "circuit-ioi" / "repair" / "effects.parquet").unlink()
    assert regression.compare(before, after, ["circuit-ioi:repair/effects:effect"]) == 1
    assert regression.compare(before, after, ["circuit-ioi:repair/effects:*"]) == 0


def test_main_parses_repeated_allow(before: Path, after: Path) -> None:
    _edit(after, "score-sinks/scores.parquet", lambda f: f.__setitem__("score", [0.5, np.nan, 1.5]))
    _edit(after, "score-sinks/scores.parquet", lambda f: f.__setitem__("flag", [False] * 3))
    argv = ["compare", str(before), str(after), "--allow", "score-sinks:scores:score"]
    assert regression.main(argv) == 1
    assert regression.main([*argv, "--allow", "score-sinks:scores:flag"]) == 0
    with pytest.raises(SystemExit):
        regression.main([*argv, "--allow", "no-colons"])


def test_every_documented_command_is_listed() -> None:
    commands = {" ".join(c.argv[:2]) for c in regression.COMMANDS}
    assert commands == {
        "score sinks", "score retrieval", "ablate retrieval", "effect act", "score anchors",
        "circuit ioi", "circuit overlap", "circuit sae", "sae train", "score vision",
        "effect vhr", "effect var",
    }  # fmt: skip
    for c in regression.COMMANDS:  # each writes to its own folder, named as the command
        assert c.argv[c.argv.index("--out") + 1] == c.name


def test_summaries_are_compared_without_wall_times(before: Path, after: Path, capsys) -> None:
    summary = {"loss": 3.5, "circuit": ["L0H0", "L1H2"], "auc": {"mean": 0.6}, "train_s": 1.0}
    (before / "sae-train").mkdir()
    (before / "sae-train" / "summary.json").write_text(json.dumps(summary))
    (after / "sae-train").mkdir()
    (after / "sae-train" / "summary.json").write_text(json.dumps({**summary, "train_s": 9.0}))
    assert regression.compare(before, after, []) == 0
    assert "equal              sae-train/summary.json" in capsys.readouterr().out
    changed = {**summary, "auc": {"mean": 0.7}}
    (after / "sae-train" / "summary.json").write_text(json.dumps(changed))
    assert regression.compare(before, after, []) == 1
    assert "auc.mean: 1 of 1 rows" in capsys.readouterr().out
    assert regression.compare(before, after, ["sae-train:summary:auc.mean"]) == 0
    changed = {**summary, "circuit": ["L0H0"]}
    (after / "sae-train" / "summary.json").write_text(json.dumps(changed))
    assert regression.compare(before, after, []) == 1


def test_only_adds_a_missing_dependency(tmp_path: Path) -> None:
    names = [c.name for c in regression._selected(["circuit-sae"], tmp_path)]
    assert names == ["circuit-ioi", "circuit-sae"]
    (tmp_path / "circuit-ioi").mkdir()
    assert [c.name for c in regression._selected(["circuit-sae"], tmp_path)] == ["circuit-sae"]
