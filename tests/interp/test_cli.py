"""The command line as a shell user meets it: one-line errors, exit codes, result folders."""

import json
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from interp.cli import app

runner = CliRunner()


def test_help_explains_every_option():
    result = runner.invoke(app, ["score", "sinks", "--help"])
    assert result.exit_code == 0
    for option in ("--model", "--prompts", "--out", "--threshold", "--min-queries", "--static"):
        assert option in result.output


def test_version_prints_the_toolkit_version_without_importing_torch():
    from interp.version import toolkit_version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"interp {toolkit_version()}\n"
    script = (
        "import sys\nfrom interp.cli import app\nsys.argv = ['interp', '--version']\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("interp ")


def test_bad_model_spec_is_one_line_and_nonzero(tmp_path):
    result = runner.invoke(app, ["score", "sinks", "--model", str(tmp_path / "x.gguf")])
    assert result.exit_code == 2
    assert result.output.count("error:") == 1 and "Traceback" not in result.output


def test_empty_prompt_file_is_rejected_before_loading(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = runner.invoke(app, ["score", "sinks", "--prompts", str(empty)])
    assert result.exit_code == 2 and "holds no prompts" in result.output


def test_malformed_jsonl_names_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"prompt": "no text field"}\n')
    result = runner.invoke(app, ["score", "sinks", "--prompts", str(bad)])
    assert result.exit_code == 2 and "bad.jsonl:2" in result.output


@pytest.mark.integration
def test_overlong_prompt_is_rejected(tmp_path, default_model):
    long = tmp_path / "long.txt"
    long.write_text("word " * 9000)
    result = runner.invoke(app, ["score", "sinks", "--prompts", str(long), "--no-static"])
    assert result.exit_code == 2 and "more than the model's context of 8192" in result.output


@pytest.mark.integration
def test_score_sinks_writes_a_complete_result_folder(tmp_path, default_model):
    out = tmp_path / "run"
    result = runner.invoke(app, ["score", "sinks", "--out", str(out), "--no-static"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "scores_per_head.csv")
    assert len(table) == 270
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["provenance"]["analyzer"] == "sinks" and manifest["rows"] == 270
    assert (out / "figures" / "sink_share.html").is_file()
    late = table[table.layer >= 3]
    assert (late.first_token_dominant > 0.5).mean() > 0.5
