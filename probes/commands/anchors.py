"""`interp score anchors`: preplan and anchor tokens in reasoning traces (Li et al. 2025).

Runs `probes.anchor_workflow.find_anchors` with the output folder: generate traces for the
shipped problems (or read the user's), split the band's heads into local and global, score
every response token, report the peak statistics and the causal checks with intervals
(`--causal-checks`: the paper's perturbation experiment by default, attention blocking as
`block`), and draw the figures. Every stage records its finished work in the folder's one
work log, so a stopped run resumes with the same `--out`. Per-token credit γ is exported as JSONL.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from interp.cli.common import stage_bars
from interp.cli.options import Fields, Run, command
from interp.generation import GenerationConfig
from probes.anchor_causal import CausalConfig
from probes.anchor_credit import CreditConfig
from probes.anchor_perturb import PerturbConfig
from probes.anchor_workflow import AnchorRunConfig
from probes.anchors import AnchorConfig

STAGES = ("anchors", "credit", "perturb", "causal", "generation")
UNITS = {
    "generation": "problem",
    "anchor passes": "trace-pass",
    "perturbation": "position",
    "causal check": "trace",
}
TracesOption = typer.Option(
    help="JSONL of your traces ('prompt'/'response' text or 'prompt_ids'/'response_ids')."
    " Text is used as it is (no chat template). Default: answer the shipped problems."
)


@command("score anchors", resumable=True)
def score_anchors(
    run: Run,
    config: Annotated[AnchorRunConfig, Fields(rename={"run_causal": "causal"}, skip=STAGES)],
    anchors: Annotated[AnchorConfig, Fields(rename={"layer_band": "band"})],
    credit: CreditConfig,
    perturb: PerturbConfig,
    causal: Annotated[CausalConfig, Fields(rename={"n_seeds": "causal_seeds"})],
    generation: Annotated[
        GenerationConfig, Fields(defaults={"max_new_tokens": 256, "temperature": 0.7})
    ],
    traces: Annotated[Path | None, TracesOption] = None,
) -> None:
    """Find preplan and anchor tokens in reasoning traces; export per-token credit."""
    from interp.prompts import data_path
    from probes.anchor_workflow import check_inputs, find_anchors

    config = dataclasses.replace(
        config,
        anchors=anchors,
        credit=credit,
        perturb=perturb,
        causal=causal,
        generation=generation,
    )
    check_inputs(config, traces)
    folder = run.folder()
    model = run.load_model()
    run.record.inputs([traces or data_path("problems", "problems.jsonl")])
    with stage_bars(UNITS, resumable=("anchor passes", "perturbation", "causal check")) as update:
        found = find_anchors(model, config, traces, update, folder=folder)
    if run.writes:  # rank 0 alone under torchrun
        run.record.wrote(found.save_files(folder, config.credit))
    run.write(
        bundles=found.bundles(),
        tables=found.tables(),
        figures=found.figures,
        **found.manifest_fields(),
    )
    run.report(found.summary_lines())
