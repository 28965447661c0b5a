"""Run folders: the resumable work log, the manifest, and a rerun into a used folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from interp.cli import app
from interp.errors import InputError
from interp.runs import IDENTITY_FILE, LOG_FILE, LOG_LAYOUT, RunRecord, WorkLog, run_identity
from tests.interp.test_results import provenance
from tests.tiny import saved_tiny

IDENTITY = run_identity(provenance())


def test_work_log_drops_a_line_cut_short_and_keeps_its_identity(tmp_path: Path) -> None:
    log = WorkLog(tmp_path, IDENTITY)
    log.record(["a"], [{"x": 1}])
    with (tmp_path / LOG_FILE).open("a") as handle:
        handle.write('{"key": ["b"], "rows": [{"x"')  # a crash mid-line
    reopened = WorkLog(tmp_path, {**IDENTITY, "toolkit_version": "9.9"})  # may differ
    assert reopened.is_done(["a"]) and not reopened.is_done(["b"])
    reopened.record(["b"], [{"x": 2}])
    lines = (tmp_path / LOG_FILE).read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == [["a"], ["b"]]
    assert reopened.stored_identity == {**IDENTITY, "log_layout": LOG_LAYOUT}  # the first run's
    (tmp_path / LOG_FILE).write_text("not json\n")
    with pytest.raises(InputError, match=f"{LOG_FILE}:1"):
        WorkLog(tmp_path, IDENTITY)


@pytest.mark.parametrize(
    "change",
    [
        {"model": "another"},
        {"weights_hash": "other-weights"},
        {"config": {"masking": "uniform"}},
        {"inputs_hash": "other-needles"},
    ],
)
def test_resuming_another_run_is_refused_naming_what_differs(tmp_path: Path, change) -> None:
    WorkLog(tmp_path, IDENTITY).record(["a"], [{"x": 1}])
    (name,) = change
    with pytest.raises(InputError, match=f"another {name}; resuming would mix"):
        WorkLog(tmp_path, {**IDENTITY, **change})


def test_a_folder_of_an_earlier_row_layout_is_refused_in_one_line(tmp_path: Path) -> None:
    WorkLog(tmp_path, IDENTITY).record(["a"], [{"x": 1}])
    written = json.loads((tmp_path / IDENTITY_FILE).read_text())
    earlier = {k: v for k, v in written.items() if k != "log_layout"}  # before layouts
    (tmp_path / IDENTITY_FILE).write_text(json.dumps(earlier))
    with pytest.raises(InputError, match="recorded by an earlier release") as refused:
        WorkLog(tmp_path, IDENTITY)
    assert "\n" not in str(refused.value)


def test_run_record_lists_inputs_outputs_versions_and_time(tmp_path: Path) -> None:
    data = tmp_path / "inputs"
    data.mkdir()
    (data / "a.txt").write_text("alpha")
    record = RunRecord("score x", ["interp", "score", "x"], {"depths": 3})
    record.inputs([data, data / "a.txt"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "table.parquet").write_text("t")
    record.wrote([out / "table.parquet"])
    manifest = json.loads(record.write(out, rows=2).read_text())
    assert manifest["inputs"] == [
        {
            "path": str(data / "a.txt"),
            "sha256": "8ed3f6ad685b959ead7022518e1af76cd816f8e8ec7ccdda1ed4018e8f2223f8",
        }
    ]
    assert manifest["files"] == ["manifest.json", "table.parquet"]
    assert manifest["argv"] == ["interp", "score", "x"] and manifest["params"] == {"depths": 3}
    assert set(manifest["versions"]) >= {"interp-heads", "torch", "transformers"}
    assert manifest["wall_s"] >= 0 and manifest["rows"] == 2 and manifest["command"] == "score x"


def _sinks_args(tmp_path: Path) -> list[str]:
    model = saved_tiny(tmp_path / "model")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The cat sat on the mat.\n\nA second prompt here.")
    return ["score", "sinks", "--model", str(model), "--prompts", str(prompts), "--no-static"]


def test_rerun_into_a_used_folder_lists_only_its_own_files(tmp_path: Path) -> None:
    args = _sinks_args(tmp_path)
    out = tmp_path / "run"
    assert CliRunner().invoke(app, [*args, "--out", str(out)]).exit_code == 0
    stale = out / "figures" / "old_figure.html"
    stale.write_text("from an earlier run of the same command")
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert "figures/old_figure.html" not in manifest["files"]
    assert {"scores.parquet", "scores_per_head.csv", "figures/sink_share.html"} <= set(
        manifest["files"]
    )
    assert all((out / name).is_file() for name in manifest["files"])
    assert manifest["inputs"][0]["path"] == args[5]
    assert manifest["params"]["prompts"] == args[5]


def _refused(args: list[str], match: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.count("error:") == 1 and "Traceback" not in result.output
    assert match in result.output, result.output


def test_folders_of_other_runs_and_files_are_refused_before_the_work(tmp_path) -> None:
    args = _sinks_args(tmp_path)
    out = tmp_path / "run"
    assert CliRunner().invoke(app, [*args, "--out", str(out)]).exit_code == 0
    before = sorted(p.name for p in out.rglob("*"))
    _refused([*args, "--threshold", "0.2", "--out", str(out)], "another run")
    assert sorted(p.name for p in out.rglob("*")) == before  # nothing was mixed in
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("someone's notes")
    _refused([*args, "--out", str(foreign)], "not empty")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    _refused([*args, "--out", str(a_file)], "Cannot write the output folder")
    _refused([*args, "--out", str(tmp_path / ("x" * 300))], "Cannot write the output folder")
    bad_model = [*args[:3], str(tmp_path / "missing.gguf"), *args[4:]]
    _refused([*bad_model, "--out", str(tmp_path / "fresh")], "No GGUF file")
    assert not (tmp_path / "fresh").exists()  # a run that wrote nothing leaves no folder


def _hold(folder: str, ready, release) -> None:
    from interp.runs import RunRecord, claim_folder

    with claim_folder(Path(folder), RunRecord("score sinks", [], {})):
        ready.set()
        release.wait(60)


def test_a_second_live_run_on_one_folder_is_refused(tmp_path) -> None:
    import multiprocessing

    args = _sinks_args(tmp_path)
    out = tmp_path / "run"
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold, args=(str(out), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        _refused([*args, "--out", str(out)], "Another live run is writing")
        assert not (out / "manifest.json").exists()
    finally:
        release.set()
        holder.join(60)
    result = CliRunner().invoke(app, [*args, "--out", str(out)])  # free again once it ends
    assert result.exit_code == 0, result.output
