"""`interp score anchors`: preplan and anchor tokens in reasoning traces (Li et al. 2025).

Runs `probes.anchor_workflow.find_anchors` with the output folder: generate traces for the
shipped problems (or read the user's), split the band's heads into local and global, score
every response token, report the peak statistics and the causal check with intervals, and
draw the figures. Every stage records its finished work in the folder's one work log, so a
stopped run resumes with the same `--out`. Per-token credit γ is exported as JSONL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from interp.cli.common import (
    DeviceMapOption,
    DeviceOption,
    DtypeOption,
    MaxMemoryOption,
    ModelOption,
    OffloadFolderOption,
    StaticOption,
    echo_warnings,
    load_model_or_fail,
    parse_ints,
    placement,
    result_folder,
    stage_bars,
    start_record,
    user_errors,
    write_outputs,
)

TracesOption = typer.Option(
    "--traces",
    help="JSONL of your traces ('prompt'/'response' text or 'prompt_ids'/'response_ids')."
    " Text is used as it is (no chat template). Default: answer the shipped problems.",
)
UNITS = {"generation": "problem", "anchor passes": "trace-pass", "causal check": "trace"}
COLUMNS = ["metric", "n", "baseline", "intervened", "difference", "ci_low", "ci_high"]


def score_anchors(
    model: Annotated[str | None, ModelOption] = None,
    traces: Annotated[Path | None, TracesOption] = None,
    problems: Annotated[int, typer.Option(help="How many shipped problems to answer.")] = 44,
    chat: Annotated[
        bool, typer.Option("--chat/--no-chat", help="Wrap generated prompts in the chat template.")
    ] = True,
    max_new_tokens: Annotated[int, typer.Option(help="Response budget per problem.")] = 256,
    temperature: Annotated[float, typer.Option(help="0 = greedy (paper: 0.7).")] = 0.7,
    seed: Annotated[int, typer.Option(help="Seed of sampling and random controls.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Traces per forward.")] = 4,
    window: Annotated[int, typer.Option(help="WAAD window W (paper: 10).")] = 10,
    h_lo: Annotated[
        int, typer.Option(help="FAI's nearest query offset (paper's analysis: 1; RL: 10).")
    ] = 1,
    h_hi: Annotated[
        int,
        typer.Option(help="FAI's farthest query offset (0 = response end, analysis; RL: 100)."),
    ] = 0,
    band: Annotated[
        str,
        typer.Option(help="'all' layers (paper's analysis) or 'middle': 5 middle layers (RL)."),
    ] = "all",
    q: Annotated[float, typer.Option(help="Top-q share for preplan and anchors (0.4).")] = 0.4,
    shift: Annotated[int, typer.Option(help="1 attaches row t-1 to token t.")] = 0,
    layers: Annotated[
        str | None, typer.Option(help="Band layers, comma-separated (default: --band).")
    ] = None,
    rule: Annotated[str, typer.Option(help="Credit rule: coupled, global or local.")] = "coupled",
    gamma_amp: Annotated[float, typer.Option(help="γ of credited tokens (paper: 1.5).")] = 1.5,
    alpha: Annotated[float, typer.Option(help="Coupled rule's α (placeholder 0.5).")] = 0.5,
    k: Annotated[int, typer.Option(help="Coupled rule's look-back k (placeholder 3).")] = 3,
    causal_seeds: Annotated[int, typer.Option(help="Random-token draws per trace.")] = 5,
    continuation: Annotated[int, typer.Option(help="Greedy tokens compared (Jaccard).")] = 32,
    causal: Annotated[
        bool, typer.Option("--causal/--no-causal", help="Run the causal check.")
    ] = True,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")] = 2000,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder.")] = None,
    device: Annotated[str, DeviceOption] = "cpu",
    device_map: Annotated[str | None, DeviceMapOption] = None,
    max_memory: Annotated[str | None, MaxMemoryOption] = None,
    offload_folder: Annotated[Path | None, OffloadFolderOption] = None,
    dtype: Annotated[str | None, DtypeOption] = None,
    static: Annotated[bool, StaticOption] = True,
) -> None:
    """Find preplan and anchor tokens in reasoning traces; export per-token credit."""
    record = start_record("score anchors", locals())
    with user_errors():
        from interp.generation import GenerationConfig
        from interp.prompts import data_path
        from probes import anchor_causal, anchor_credit, anchor_workflow, anchors

        config = anchor_workflow.AnchorRunConfig(
            anchors=anchors.AnchorConfig.from_dict(
                {
                    "window": window,
                    "h_lo": h_lo,
                    "h_hi": h_hi,
                    "q": q,
                    "shift": shift,
                    "layers": parse_ints(layers, minimum=0) or (),
                    "layer_band": band,
                    "batch_size": batch_size,
                }
            ),
            credit=anchor_credit.CreditConfig.from_dict(
                {"rule": rule, "gamma_amp": gamma_amp, "alpha": alpha, "k": k}
            ),
            causal=anchor_causal.CausalConfig(
                n_seeds=causal_seeds, continuation=continuation, seed=seed
            ),
            run_causal=causal,
            generation=GenerationConfig(
                max_new_tokens=max_new_tokens, temperature=temperature, seed=seed
            ),
            problems=problems,
            chat=chat,
            n_boot=n_boot,
            seed=seed,
        )
        anchor_workflow.check_inputs(config, traces)
        folder = result_folder(out, "anchors", model, record)
        loaded = load_model_or_fail(model, device, **placement(locals()))
        record.inputs([traces or data_path("problems", "problems.jsonl")])
        with stage_bars(UNITS, resumable=("anchor passes", "causal check")) as update:
            run = anchor_workflow.find_anchors(loaded, config, traces, update, folder=folder)
        record.wrote(run.save_files(folder, config.credit))
        written = write_outputs(
            folder,
            record,
            bundles=[run.causal] if run.causal is not None else [],
            tables=run.tables(),
            figures=run.figures,
            static=static,
            **run.manifest_fields(),
        )
        typer.echo(f"{len(run.traces)} traces, {len(run.tokens)} response tokens -> {folder}")
        if run.statistics is not None:
            typer.echo(run.statistics.data[["statistic", *COLUMNS]].to_string(index=False))
            echo_warnings(run.statistics.data, lambda row: row.statistic)
        else:
            typer.echo(f"no statistics or causal check: {run.statistics_empty}")
        if run.causal is not None:
            typer.echo(run.causal.effects.data[["comparison", *COLUMNS]].to_string(index=False))
            echo_warnings(run.causal.effects.data, lambda row: row.comparison)
        typer.echo(f"{len(written)} figure files in {folder / 'figures'}")
