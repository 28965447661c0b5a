"""`interp score anchors` on a saved tiny model: outputs, resume, trace-file errors."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from interp.cli import app
from interp.results import TokenScores
from probes.anchor_credit import read_credit
from tests.tiny import saved_tiny

runner = CliRunner()
ARGS = ["--problems", "3", "--max-new-tokens", "24", "--no-chat", "--h-lo", "2", "--h-hi", "8"]
ARGS += ["--causal-seeds", "2", "--continuation", "3", "--n-boot", "100", "--no-static"]
ARGS += ["--causal-checks", "perturb,block", "--alternatives", "2", "--rollout", "3"]


def test_score_anchors_writes_tables_credit_figures_and_resumes(tmp_path) -> None:
    model = saved_tiny(tmp_path / "model")
    out = tmp_path / "run"
    args = ["score", "anchors", "--model", str(model), *ARGS, "--out", str(out)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    tokens = TokenScores.load(out / "tokens.parquet")
    assert set(tokens.data.trace) == {"math-00", "math-01", "math-02"}
    assert {"waad", "fai", "delta_waad", "is_preplan", "is_anchor"} <= set(tokens.data.columns)
    credit = read_credit(out / "credit.jsonl")
    assert [len(r["gamma"]) for r in credit] == tokens.data.groupby("trace").size().tolist()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["traces"] == 3 and len(manifest["causal"]) == 6
    assert [r["metric"] for r in manifest["perturb"]] == ["jaccard", "jaccard_trace"]
    assert {"figures/token_strip.html", "figures/local_head_map.html"} <= set(manifest["files"])
    causal = pd.read_parquet(out / "causal_effects.parquet")
    perturbed = pd.read_parquet(out / "perturb_items.parquet")
    statistics = pd.read_parquet(out / "statistics.parquet")

    # Stop after the generation and two traces of pass 1: the rerun finishes the same run.
    log = out / "work.jsonl"
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:3]))
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "resuming anchor passes: 2 of 6 trace-passes already done" in again.output
    assert TokenScores.load(out / "tokens.parquet").data.equals(tokens.data)
    assert pd.read_parquet(out / "causal_effects.parquet").equals(causal)
    assert pd.read_parquet(out / "perturb_items.parquet").equals(perturbed)
    assert pd.read_parquet(out / "statistics.parquet").equals(statistics)


def test_bad_trace_file_is_one_error_line(tmp_path) -> None:
    model = saved_tiny(tmp_path / "model")
    bad = tmp_path / "traces.jsonl"
    bad.write_text('{"prompt": "q", "response": "a"}\n{"prompt": "q"}\n')
    result = runner.invoke(
        app, ["score", "anchors", "--model", str(model), "--traces", str(bad), "--no-static"]
    )
    assert result.exit_code == 2
    assert "traces.jsonl:2: missing field 'response'" in result.output
    assert result.output.count("error:") == 1 and "Traceback" not in result.output


def test_bad_options_are_one_error_line_before_loading(tmp_path) -> None:
    for option, message in (
        (["--q", "1.5"], "AnchorConfig.q must lie in"),
        (["--shift", "2"], "Invalid value for '--shift'"),
        (["--rule", "both"], "Invalid value for '--rule'"),
        (["--problems", "0"], "--problems must lie in 1..44"),
        (["--h-lo", "50", "--h-hi", "20"], "is below h_lo"),
        (["--band", "top"], "Invalid value for '--band'"),
        (["--causal-checks", "perturb,ablate"], "causal_checks takes one or more of"),
        (["--rollout", "0"], "PerturbConfig.rollout must lie in"),
    ):
        result = runner.invoke(app, ["score", "anchors", *option, "--out", str(tmp_path / "x")])
        assert result.exit_code == 2 and message in result.output, (option, result.output)
        assert "loading" not in result.output and not (tmp_path / "x").exists()


def test_traces_too_short_for_anchors_still_write_what_was_measured(tmp_path) -> None:
    model = saved_tiny(tmp_path / "model")
    short = tmp_path / "short.jsonl"
    short.write_text(
        json.dumps({"prompt": "What is 2+2?", "response": "four"})
        + "\n"
        + json.dumps({"prompt": "Say hi.", "response": "hi"})
        + "\n"
    )
    out = tmp_path / "run"
    args = ["score", "anchors", "--model", str(model), "--traces", str(short), "--h-lo", "10"]
    result = runner.invoke(app, [*args, "--n-boot", "20", "--no-static", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "no statistics or causal check: no trace has both" in result.output
    assert set(TokenScores.load(out / "tokens.parquet").data.trace) == {"line-1", "line-2"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["statistics"] == [] and "h_lo=10" in manifest["statistics_empty"]
    assert not (out / "statistics.parquet").exists()


def test_trace_files_and_budgets_are_refused_before_loading(tmp_path) -> None:
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes("caf\u00e9\n".encode("latin-1"))
    not_json = tmp_path / "not_json.jsonl"
    not_json.write_text('{"prompt": "q", "response": "a"}\nnot json\n')
    for option, message in (
        (["--traces", str(latin1)], "is not UTF-8 text"),
        (["--traces", str(tmp_path)], "is a folder, not a file"),
        (["--traces", str(not_json)], "not_json.jsonl:2: not valid JSON"),
        (["--max-new-tokens", "8", "--h-lo", "10"], "needs at least 11 tokens"),
        (["--max-new-tokens", "1"], "needs at least 2 tokens"),  # h_lo 1: and two for ΔWAAD
        (["--max-new-tokens", "4", "--h-lo", "4"], "needs at least 5 tokens"),
    ):
        result = runner.invoke(app, ["score", "anchors", *option, "--out", str(tmp_path / "x")])
        assert result.exit_code == 2 and message in result.output, (option, result.output)
        assert result.output.count("error:") == 1 and "Traceback" not in result.output
        assert "loading" not in result.output and not (tmp_path / "x").exists()


def test_find_anchors_is_what_score_anchors_writes(tmp_path) -> None:
    from interp.generation import GenerationConfig
    from interp.models import load_model
    from probes.anchor_causal import CausalConfig
    from probes.anchor_perturb import PerturbConfig
    from probes.anchor_workflow import AnchorRunConfig, find_anchors
    from probes.anchors import AnchorConfig
    from tests.written import assert_tables_written

    model = saved_tiny(tmp_path / "model")
    out = tmp_path / "run"
    result = runner.invoke(app, ["score", "anchors", "--model", str(model), *ARGS, "-o", str(out)])
    assert result.exit_code == 0, result.output
    config = AnchorRunConfig(
        anchors=AnchorConfig(h_lo=2, h_hi=8),
        perturb=PerturbConfig(alternatives=2, rollout=3),
        causal=CausalConfig(n_seeds=2, continuation=3),
        causal_checks=("perturb", "block"),
        generation=GenerationConfig(max_new_tokens=24, temperature=0.7),
        problems=3,
        chat=False,
        n_boot=100,
    )
    run = find_anchors(load_model(str(model)), config)
    assert run.causal is not None and run.perturb is not None
    tables = {**run.tables(), "causal_effects": run.causal.effects}
    tables |= {"perturb_effects": run.perturb.effects, "perturb_items": run.perturb.per_item}
    assert_tables_written(tables | {"causal_items": run.causal.per_item}, out, tmp_path / "py")
    written = json.loads((out / "manifest.json").read_text())
    fields = run.manifest_fields()
    shared = ("traces", "response_tokens", "local_heads", "global_heads")
    assert {k: fields[k] for k in shared} == {k: written[k] for k in shared}
