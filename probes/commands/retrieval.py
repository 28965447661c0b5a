"""`interp score retrieval` and `interp ablate retrieval`: retrieval heads and the causal test.

Both commands call one library workflow (`probes.retrieval.run_niah`,
`probes.retrieval_ablation.run_niah_ablation`) with the output folder: the tests run in
batches of similar length (`--batch-size`, default suited to the device), the prompt prefix
they share is prefilled once, and each finished test is recorded in the folder's work log
as its batch ends (`interp.work`: `work.jsonl`, one line per test). Run again with the same
`--out` and the tests already there are skipped, so a stopped long run loses at most one
batch and resumes; the tables are built from all rows, in the tests' order, and do not
depend on the batch size.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, get_args

import typer

from interp.cli.common import (
    DeviceMapOption,
    DeviceOption,
    DtypeOption,
    MaxMemoryOption,
    ModelOption,
    OffloadFolderOption,
    StaticOption,
    check_choice,
    echo_warnings,
    load_model_or_fail,
    parse_ints,
    placement,
    result_folder,
    start_record,
    user_errors,
    work_progress,
    write_outputs,
)

if TYPE_CHECKING:
    from probes.niah import NiahInputs

NeedlesOption = typer.Option(
    "--needles", help="JSONL with 'needle', 'question', 'answer' per line."
)
HaystackOption = typer.Option(
    "--haystack", help="Haystack .txt file(s), joined in order. Default: data/haystacks/*.txt."
)
LengthsOption = typer.Option(
    "--lengths", help="Comma-separated prompt lengths in tokens (e.g. 1000,2000,4000)."
)
LengthRuleOption = typer.Option(
    "--length-rule",
    help="'prompt': the whole prompt has --lengths tokens (toolkit); 'reference': haystack +"
    " needle have length - 200 and the question follows (Wu et al.'s code).",
)
DepthsOption = typer.Option("--depths", help="Needle depths: linspace(0, 100%, N).")
OutOption = typer.Option("--out", "-o", help="Output folder (reused to resume a run).")
ThresholdOption = typer.Option(help="A retrieval head has mean score > this (paper: 0.1).")
MaxNewOption = typer.Option(help="Greedy decoding budget (paper: 50; stops at a newline).")
BatchOption = typer.Option(
    "--batch-size", help="Tests per forward (default: what suits the device and lengths)."
)


def _inputs(
    needles: Path | None, haystack: list[Path] | None, length_rule: str, batch_size: int | None
) -> NiahInputs:
    """The NIAH inputs of both commands, checked before the model loads."""
    from probes.niah import LengthRule, NiahInputs

    return NiahInputs(
        needles=needles,
        haystack=tuple(haystack or ()),
        length_rule=check_choice(length_rule, get_args(LengthRule), "--length-rule"),
        batch_size=batch_size,
    )


def score_retrieval(
    model: Annotated[str | None, ModelOption] = None,
    needles: Annotated[Path | None, NeedlesOption] = None,
    haystack: Annotated[list[Path] | None, HaystackOption] = None,
    lengths: Annotated[str | None, LengthsOption] = None,
    depths: Annotated[int, DepthsOption] = 10,
    length_rule: Annotated[str, LengthRuleOption] = "prompt",
    max_new_tokens: Annotated[int, MaxNewOption] = 50,
    count: Annotated[str, typer.Option(help="'set' (paper) or 'events' (code).")] = "set",
    span: Annotated[str, typer.Option(help="'answer' (code) or 'needle'.")] = "answer",
    average: Annotated[
        str, typer.Option(help="'successful' (code), 'failed_as_zero' or 'all'.")
    ] = "successful",
    threshold: Annotated[float, ThresholdOption] = 0.1,
    batch_size: Annotated[int | None, BatchOption] = None,
    out: Annotated[Path | None, OutOption] = None,
    device: Annotated[str, DeviceOption] = "cpu",
    device_map: Annotated[str | None, DeviceMapOption] = None,
    max_memory: Annotated[str | None, MaxMemoryOption] = None,
    offload_folder: Annotated[Path | None, OffloadFolderOption] = None,
    dtype: Annotated[str | None, DtypeOption] = None,
    static: Annotated[bool, StaticOption] = True,
) -> None:
    """Score every head's retrieval score on a needle-in-a-haystack grid (Wu et al. 2024)."""
    record = start_record("score retrieval", locals())
    with user_errors():
        from interp.runs import LOG_FILE
        from probes import retrieval

        config = retrieval.RetrievalConfig.from_dict(
            {
                "lengths": parse_ints(lengths, minimum=1),
                "n_depths": depths,
                "max_new_tokens": max_new_tokens,
                "count": count,
                "span": span,
                "average": average,
                "threshold": threshold,
            }
        )
        inputs = _inputs(needles, haystack, length_rule, batch_size)
        folder = result_folder(out, "retrieval", model, record)
        loaded = load_model_or_fail(model, device, **placement(locals()))
        record.inputs(inputs.files("scoring.jsonl"))
        update, bar = work_progress("retrieval")
        with bar:
            result = retrieval.run_niah(loaded, config, inputs, progress=update, folder=folder)
        record.wrote([folder / LOG_FILE])
        found, tests = result.retrieval_heads(), result.tests.data
        written = write_outputs(
            folder,
            record,
            bundles=[result],
            figures=result.figures(),
            static=static,
            provenance=result.scores.provenance.to_dict(),
            geometry=vars(loaded.geometry),
            tests=len(tests),
            successful_tests=int(tests.success.sum()),
            retrieval_heads=found.label.tolist(),
        )
        typer.echo(f"{len(tests)} tests ({int(tests.success.sum())} successful) -> {folder}")
        typer.echo(
            f"{len(found)} of {len(result.scores.data)} heads score > {threshold}: "
            + ", ".join(f"{r.label} ({r.score:.2f})" for r in found.head(15).itertuples())
        )
        typer.echo(f"{len(written)} figure files in {folder / 'figures'}")


def ablate_retrieval(
    scores: Annotated[
        Path, typer.Option("--scores", help="scores.parquet written by `interp score retrieval`.")
    ],
    model: Annotated[str | None, ModelOption] = None,
    needles: Annotated[Path | None, NeedlesOption] = None,
    haystack: Annotated[list[Path] | None, HaystackOption] = None,
    lengths: Annotated[str, LengthsOption] = "1000,2000",
    depths: Annotated[int, DepthsOption] = 3,
    length_rule: Annotated[str, LengthRuleOption] = "prompt",
    ks: Annotated[str, typer.Option(help="Numbers of heads to mask.")] = "0,5,10,20,30,50",
    seeds: Annotated[int, typer.Option(help="Random-control seeds per K.")] = 5,
    masking: Annotated[str, typer.Option(help="'zero' (HeadScale 0) or 'uniform'.")] = "zero",
    positions: Annotated[str, typer.Option(help="'decode' (code) or 'all'.")] = "decode",
    random_draw: Annotated[
        str, typer.Option(help="'per_test' (paper) or 'per_seed'.")
    ] = "per_test",
    metric: Annotated[
        str, typer.Option(help="'match' (answer phrase in response) or 'rouge1' (paper).")
    ] = "match",
    threshold: Annotated[float, ThresholdOption] = 0.1,
    max_new_tokens: Annotated[int, MaxNewOption] = 50,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")] = 2000,
    interval: Annotated[
        str, typer.Option(help="Interval method: 'BCa' (default) or 'percentile'.")
    ] = "BCa",
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    batch_size: Annotated[int | None, BatchOption] = None,
    out: Annotated[Path | None, OutOption] = None,
    device: Annotated[str, DeviceOption] = "cpu",
    device_map: Annotated[str | None, DeviceMapOption] = None,
    max_memory: Annotated[str | None, MaxMemoryOption] = None,
    offload_folder: Annotated[Path | None, OffloadFolderOption] = None,
    dtype: Annotated[str | None, DtypeOption] = None,
    static: Annotated[bool, StaticOption] = True,
) -> None:
    """NIAH accuracy with top-K retrieval heads vs K random heads masked (held-out needles)."""
    record = start_record("ablate retrieval", locals())
    with user_errors():
        from interp.effects import EffectsConfig
        from interp.runs import LOG_FILE
        from probes import retrieval, retrieval_ablation

        config = retrieval_ablation.AblationConfig.from_dict(
            {
                "ks": parse_ints(ks, minimum=0) or (),
                "n_seeds": seeds,
                "masking": masking,
                "positions": positions,
                "random_draw": random_draw,
                "metric": metric,
                "threshold": threshold,
                "max_new_tokens": max_new_tokens,
            }
        )
        effects = EffectsConfig.from_dict({"n_boot": n_boot, "seed": seed, "method": interval})
        head_scores = retrieval.load_scores(scores)
        record.inputs([scores])
        inputs = _inputs(needles, haystack, length_rule, batch_size)
        folder = result_folder(out, "ablation", model, record)
        loaded = load_model_or_fail(model, device, **placement(locals()))
        record.inputs(inputs.files("heldout.jsonl"))
        update, bar = work_progress("ablation")
        with bar:
            result = retrieval_ablation.run_niah_ablation(
                loaded,
                head_scores,
                parse_ints(lengths, minimum=1) or (),
                depths,
                config,
                inputs,
                effects,
                progress=update,
                folder=folder,
            )
        record.wrote([folder / LOG_FILE])
        summary, n_tests = result.summary.data, result.tests.data.condition.eq("none").sum()
        written = write_outputs(
            folder,
            record,
            bundles=[result],
            figures=result.figures(),
            static=static,
            provenance=result.tests.provenance.to_dict(),
            scores=str(scores),
            scores_provenance=head_scores.provenance.to_dict(),
            tests=int(n_tests),
            ablation_summary=summary.to_dict("records"),
        )
        typer.echo(f"{n_tests} tests x {len(result.curve.data)} conditions -> {folder}")
        shown = summary.drop(columns="warnings")
        typer.echo(shown.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
        echo_warnings(summary, lambda row: f"K={row.k}")
        typer.echo(f"{len(written)} figure files in {folder / 'figures'}")
