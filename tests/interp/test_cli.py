"""The command line as a shell user meets it: one-line errors, exit codes, result folders."""

import json
import re
import subprocess
import sys

import pandas as pd
import pytest
import torch
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
    share = (late.first_token_dominant > 0.5).mean()  # the summary line reads the table
    assert f"the dominant sink for {share:.0%} of heads in layers >= 3" in result.output
    assert f"270 heads scored over {manifest['provenance']['n_inputs']} prompts" in result.output


# ---- interp circuit (issue 9) -------------------------------------------------------------


@pytest.fixture(scope="module")
def words_model(tmp_path_factory):
    from tests.circuits.word_model import saved_words_tiny

    return saved_words_tiny(tmp_path_factory.mktemp("words") / "model")


def test_circuit_ioi_writes_tables_summary_and_figures(tmp_path, words_model):
    out = tmp_path / "ioi"
    argv = ["circuit", "ioi", "--model", str(words_model), "--n", "6", "--out", str(out)]
    result = runner.invoke(app, [*argv, "--patching", "both", "--no-static"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["accuracy"] <= 1.0 and isinstance(summary["logit_difference"], float)
    assert summary["circuit"] and all(re.fullmatch(r"L\d+H\d+", h) for h in summary["circuit"])
    assert isinstance(summary["faithfulness"], float)
    assert summary["stages"][0] == "logits" and "attribution_rank_correlation" in summary
    for name in ("items", "path_patching", "circuit", "faithfulness", "activation_patching"):
        assert (out / f"ioi_{name}.parquet").is_file(), name
    assert (out / "figures" / "ioi_activation_patching.html").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"]["circuit"] == summary["circuit"]
    items = pd.read_parquet(out / "ioi_items.parquet")
    full = pd.read_parquet(out / "ioi_faithfulness.parquet").logit_difference.iloc[0]
    assert ("at or below chance" in summary["warnings"]) == (items.correct.mean() <= 0.5)
    assert ("not meaningful" in summary["warnings"]) == (full <= 0)
    assert (f"warning: {summary['warnings']}" in result.output) == bool(summary["warnings"])


def test_a_circuit_of_a_model_at_chance_or_without_logit_difference_is_flagged():
    from types import SimpleNamespace

    from circuits.circuit_analysis import task_warnings

    task = SimpleNamespace(choice_ids=torch.zeros(4, 3))  # Colored Objects: 3 colours listed
    faithful = SimpleNamespace(
        data=pd.DataFrame({"condition": ["full", "circuit"], "logit_difference": [-0.2, -0.23]})
    )
    at_zero = SimpleNamespace(data=pd.DataFrame({"correct": [False] * 4}))
    assert task_warnings(at_zero, faithful, task).split("; ") == [
        "baseline accuracy 0.000 is at or below chance (0.333)",
        "the full model's logit difference is -0.20: shares of it (faithfulness) are not"
        " meaningful",
    ]
    solved = SimpleNamespace(data=pd.DataFrame({"correct": [True, True, True, False]}))
    faithful.data.loc[0, "logit_difference"] = 1.5
    assert task_warnings(solved, faithful, task) == ""


def test_circuit_colored_objects_runs_the_stages_read_at_the_last_token(tmp_path, words_model):
    out = tmp_path / "co"
    argv = ["circuit", "colored-objects", "--model", str(words_model), "--n", "4"]
    result = runner.invoke(app, [*argv, "--patching", "none", "--out", str(out), "--no-static"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "colored_objects" and summary["n"] == 4
    assert summary["stages"] == ["logits", "name_mover_queries"]
    assert not list(out.glob("*attribution*"))


def test_circuit_overlap_writes_reuse_table_figure_and_repair_interval(tmp_path, words_model):
    out = tmp_path / "overlap"
    argv = ["circuit", "overlap", "--model", str(words_model), "--n", "6", "--repair-n", "6"]
    # two layers: IOI's chain of stages may end at the logits, so name the repair heads
    argv += ["--repair", "L1H0,L1H3", "--n-boot", "50"]
    result = runner.invoke(app, [*argv, "--out", str(out), "--no-static"])
    assert result.exit_code == 0, result.output
    reuse = pd.read_parquet(out / "reuse.parquet")
    assert set(reuse.task) == {"name_recall", "colored_objects"}
    summary = json.loads((out / "summary.json").read_text())
    assert set(reuse.stage) == {*summary["stages_compared"], "all"}
    assert reuse.set_index("task").control.to_dict() == {
        "name_recall": False,
        "colored_objects": True,
    }
    effects = pd.read_parquet(out / "repair" / "effects.parquet").set_index("metric")
    assert set(effects.index) == {"accuracy", "logit_difference"}
    assert (effects.ci_low <= effects.difference).all() and (
        effects.difference <= effects.ci_high
    ).all()
    assert (out / "figures" / "overlap.html").is_file()
    chosen, control = summary["repair"]["chosen"], summary["repair"]["random_0"]
    assert chosen["heads"] == ["L1H0", "L1H3"] and "logit_difference" in chosen
    assert chosen["logit_difference"]["warnings"].startswith("interval from 6 items")
    assert "warning: interval from 6 items" in result.output
    assert control["heads"] == ["L1H1", "L1H2"]  # the other heads of the same layer
    assert (out / "repair_random_1" / "effects.parquet").is_file()
    assert {"accuracy", "logit_difference", "circuit", "faithfulness"} <= set(summary)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["circuit", "ioi", "--n", "0"], "--n must be at least 1"),
        (["circuit", "overlap", "--seed", "-1"], "seed must lie in [0"),
        (["circuit", "ioi", "--patching", "bogus"], "'bogus' is not one of"),
        (["circuit", "colored-objects", "--max-heads", "0"], "max_heads"),
        (["circuit", "overlap", "--repair", "L99H0"], "L99H0"),
        (["circuit", "overlap", "--top-fraction", "0"], "top_fraction"),
        (["circuit", "overlap", "--negative-rule", "lowest"], "'lowest' is not one of"),
        (["circuit", "sae", "--edge-rule", "layer"], "'layer' is not one of"),
    ],
)
def test_circuit_bad_inputs_are_one_line_errors(tmp_path, words_model, argv, message):
    result = runner.invoke(app, [*argv, "--model", str(words_model), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and result.output.count("error:") == 1, result.output
    assert message in result.output and "Traceback" not in result.output
