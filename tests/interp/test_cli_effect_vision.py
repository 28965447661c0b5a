"""`interp effect vhr` and `interp effect var` on a saved tiny random LLaVA and image task."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from interp.cli import app
from tests.interp.test_captions import write_caption_task
from tests.tiny import saved_tiny, tiny_llava, write_image_task

runner = CliRunner()
SMALL = ["--n-boot", "50", "--no-static", "--batch-size", "4"]
VAR_TINY = ["--tau", "2.5", "--min-image-share", "0.05"]  # random weights: no sinks at 20


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("effect_vision")
    model = tiny_llava(n_layers=4)
    model.hf.save_pretrained(root / "llava")
    model.processor.save_pretrained(root / "llava")
    return {
        "root": root,
        "llava": root / "llava",
        "task": write_image_task(root / "task", n_items=6),
        "text_model": saved_tiny(root / "llama"),
    }


def _invoke(folders: dict[str, Path], command: str, out: Path, *extra: str):
    argv = ["effect", command, "--model", str(folders["llava"]), "--task", str(folders["task"])]
    return runner.invoke(app, [*argv, "--out", str(out), *SMALL, *extra])


@pytest.mark.parametrize(
    ("command", "edit", "identity"),
    [("vhr", [], ["--alpha", "1"]), ("var", VAR_TINY, [*VAR_TINY, "--p", "0"])],
)
def test_effect_writes_tables_figure_and_manifest(folders, tmp_path, command, edit, identity):
    result = _invoke(folders, command, tmp_path / "edit", "--metric", "log_prob", *edit)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "edit" / "effects.csv")
    assert table.task.tolist() == ["task"] and table.n.tolist() == [6]
    assert (table.ci_low <= table.difference).all() and (table.difference <= table.ci_high).all()
    per_item = pd.read_csv(tmp_path / "edit" / "per_item.csv")
    assert len(per_item) == 6 and (per_item.baseline_score != per_item.intervened_score).any()
    assert (tmp_path / "edit" / "figures" / "effects.html").is_file()
    manifest = json.loads((tmp_path / "edit" / "manifest.json").read_text())
    assert manifest["intervention"]["intervention"] == command.upper()
    assert manifest["effects"]["config"]["metric"] == "choice_logprob"
    assert any(f["path"].endswith(".png") for f in manifest["inputs"])
    # The identity setting: the same hooks, every item's score unchanged, bit for bit.
    result = _invoke(folders, command, tmp_path / "identity", "--metric", "log_prob", *identity)
    assert result.exit_code == 0, result.output
    per_item = pd.read_csv(tmp_path / "identity" / "per_item.csv")
    assert (per_item.baseline_score == per_item.intervened_score).all()


def test_effect_errors_are_one_line(folders, tmp_path):
    text_task = tmp_path / "text.jsonl"
    text_task.write_text(json.dumps({"prompt": "Yes?", "choices": ["yes", "no"], "answer": 0}))
    broken = write_image_task(tmp_path / "broken", n_items=2)
    (broken / "images" / "001.png").write_text("not a png")
    base = ["effect", "vhr", "--model", str(folders["llava"]), *SMALL]
    cases = {
        "has no images": [*base, "--task", str(text_task)],
        "Cannot read the image file": [*base, "--task", str(broken)],
        "is a text-only model": [
            *("effect", "vhr", "--model", str(folders["text_model"]), *SMALL),
            *("--task", str(folders["task"])),
        ],
    }
    for index, (message, argv) in enumerate(cases.items()):
        result = runner.invoke(app, [*argv, "--out", str(tmp_path / f"run{index}")])
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2 and len(errors) == 1, result.output
        assert message in errors[0], result.output


@pytest.mark.parametrize("command", ["vhr", "var"])
def test_a_text_only_model_is_refused_before_its_weights_load(folders, tmp_path, command):
    for model in ([], ["--model", str(folders["text_model"])]):  # the default is text-only
        argv = ["effect", command, *model, "--task", str(folders["task"]), *SMALL]
        result = runner.invoke(app, [*argv, "--out", str(tmp_path / "x")])
        assert result.exit_code == 2, result.output
        assert "text-only model" in result.output and "shapes-llava" in result.output
        assert "loading" not in result.output  # load_model_or_fail's status line


def test_captions_and_a_sweep_write_chair_rows_and_a_sweep_figure(folders, tmp_path):
    captions = write_caption_task(tmp_path / "captions", [["a"], [], ["b"]], ["a", "b"])
    argv = ["effect", "vhr", "--model", str(folders["llava"]), "--captions", str(captions)]
    argv += ["--task", str(folders["task"]), "--out", str(tmp_path / "sweep"), *SMALL]
    result = runner.invoke(app, [*argv, "--alpha", "1", "--alpha", "3"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "sweep" / "effects.csv")
    assert table.parameter.tolist() == [1.0] * 4 + [3.0] * 4
    assert table.metric.tolist() == ["choice_accuracy", "chair_s", "hallucinated", "found"] * 2
    assert (table[table.parameter == 1.0].difference == 0).all()  # alpha 1 is the identity
    assert (tmp_path / "sweep" / "figures" / "sweep.html").is_file()
    assert "[3] captions chair_s:" in result.output
    result = runner.invoke(app, [*argv[:6], "--out", str(tmp_path / "one"), *SMALL])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "one" / "figures" / "chair.html").is_file()
    assert not (tmp_path / "one" / "figures" / "effects.html").exists()  # no choice task


def test_neither_tasks_nor_captions_is_a_one_line_error(folders, tmp_path):
    argv = ["effect", "var", "--model", str(folders["llava"]), "--out", str(tmp_path / "x")]
    result = runner.invoke(app, [*argv, *SMALL])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "--captions" in errors[0], result.output
