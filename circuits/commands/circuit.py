"""`interp circuit ioi|colored-objects|overlap`: circuits, faithfulness, reuse and repair.

`ioi` and `colored-objects` run `circuits.circuit_analysis.analyse_circuit` on the task,
`overlap` runs `circuits.overlap_repair.overlap_and_repair`; each writes the workflow's
tables, `summary.json`, figures and manifest. Method notes: docs/methods.md §8.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from interp.cli.common import (
    DeviceOption,
    ModelOption,
    StaticOption,
    check_choice,
    load_model_or_fail,
    result_folder,
    stage_bars,
    start_record,
    user_errors,
)

NOption = typer.Option("--n", help="Prompts per task (more: tighter numbers, slower).")
SeedOption = typer.Option(help="Seed of the task's prompts.")
PerStageOption = typer.Option(
    help="Heads chosen per path-patching stage (0: Merullo's 2% of all heads)."
)
MaxHeadsOption = typer.Option(help="Cap on the circuit's size (the union over stages).")
RankOption = typer.Option(
    help="'score' (heads whose corruption lowers the logit difference) or 'abs' (|score|)."
)
PatchingOption = typer.Option(
    help="Per-head maps besides path patching: 'attribution' (one forward and backward),"
    " 'activation' (every head patched), 'both' (with their rank correlation) or 'none'."
)
BatchOption = typer.Option(help="Rows per patched forward.")
OutOption = typer.Option(
    "--out", "-o", help="Output folder. Default: results/circuit-<task>-<model>-<time>."
)


def _echo_task(summary: dict[str, Any]) -> None:
    typer.echo(
        f"{summary['task']}: accuracy {summary['accuracy']:.1%}, logit difference"
        f" {summary['logit_difference']:+.2f} over {summary['n']} prompts"
    )
    typer.echo(
        f"circuit of {len(summary['circuit'])} heads keeps {summary['faithfulness']:.0%} of the"
        f" logit difference; ablating it leaves {summary['faithfulness_complement']:.0%}:"
        f" {', '.join(summary['circuit'])}"
    )
    if summary["warnings"]:
        typer.echo(f"  warning: {summary['warnings']}")
    if "check" in summary:
        check = summary["check"]
        typer.echo(
            f"on {check['n']} prompts of {check['templates']} templates discovery did not see,"
            f" it keeps {check['faithfulness']:.0%}; ablating it leaves"
            f" {check['faithfulness_complement']:.0%}"
        )


def _single(command: str, params: dict[str, Any], prepare: Any, stages: tuple[str, ...]) -> None:
    """What `circuit ioi` and `circuit colored-objects` share.

    `prepare()` reads the tasks' inputs before the model loads and returns their builder:
    model -> (task, second task of unseen templates the circuit is checked on, or None).
    """
    record = start_record(command, params)
    with user_errors():
        from circuits.circuit_analysis import PATCHING, CircuitConfig, analyse_circuit
        from circuits.commands.shared import check_counts, config_from, write_result

        check_counts(n=params["n"], seed=params["seed"])
        check_choice(params["patching"], PATCHING, "--patching")
        check_choice(params["rank_by"], ("score", "abs"), "--rank-by")
        config = config_from(CircuitConfig, params, stages=stages)
        build = prepare()
        job = "circuit-" + command.split()[-1]
        folder = result_folder(params["out"], job, params["model"], record)
        loaded = load_model_or_fail(params["model"], params["device"])
        task, unseen = build(loaded)
        with stage_bars("step") as progress:
            result = analyse_circuit(loaded, task, config, check=unseen, progress=progress)
        write_result(folder, record, result, params["static"])
        _echo_task(result.summary)
        typer.echo(f"results and figures in {folder}")


def circuit_ioi(
    model: Annotated[str | None, ModelOption] = None,
    n: Annotated[int, NOption] = 16,
    corruption: Annotated[
        str, typer.Option(help="'abc' (Wang's p_ABC) or 's2_io' (Merullo's S2 -> IO flip).")
    ] = "abc",
    seed: Annotated[int, SeedOption] = 0,
    per_stage: Annotated[int, PerStageOption] = 0,
    max_heads: Annotated[int, MaxHeadsOption] = 27,
    rank_by: Annotated[str, RankOption] = "abs",
    patching: Annotated[str, PatchingOption] = "attribution",
    check_templates: Annotated[
        Path | None,
        typer.Option(
            help='JSONL of IOI templates ({"template": ...} per line) to check the circuit\'s'
            " faithfulness on. Default: the shipped held-out templates."
        ),
    ] = None,
    batch_size: Annotated[int, BatchOption] = 256,
    out: Annotated[Path | None, OutOption] = None,
    device: Annotated[str, DeviceOption] = "cpu",
    static: Annotated[bool, StaticOption] = True,
) -> None:
    """IOI: accuracy, the circuit by four path-patching stages, its faithfulness, head maps.

    The circuit's faithfulness is measured again on templates discovery did not see.
    """
    params = dict(locals())
    from circuits.path_patching import IOI_STAGES

    def prepare() -> Any:
        """Reads the check templates (bad slots are refused before the model loads)."""
        from circuits.tasks import ioi, ioi_templates, parse_ioi_templates
        from circuits.templates import load_templates

        held = ioi_templates("heldout")
        if check_templates is not None:
            held = load_templates(check_templates, "IOI template")
        parse_ioi_templates(held)
        return lambda loaded: tuple(
            ioi(loaded, n, templates=t, corruption=corruption, seed=seed)  # type: ignore[arg-type]
            for t in (None, held)
        )

    _single("circuit ioi", params, prepare, tuple(IOI_STAGES))


def circuit_colored_objects(
    model: Annotated[str | None, ModelOption] = None,
    n: Annotated[int, NOption] = 16,
    seed: Annotated[int, SeedOption] = 42,
    per_stage: Annotated[int, PerStageOption] = 0,
    max_heads: Annotated[int, MaxHeadsOption] = 27,
    rank_by: Annotated[str, RankOption] = "abs",
    patching: Annotated[str, PatchingOption] = "attribution",
    batch_size: Annotated[int, BatchOption] = 256,
    out: Annotated[Path | None, OutOption] = None,
    device: Annotated[str, DeviceOption] = "cpu",
    static: Annotated[bool, StaticOption] = True,
) -> None:
    """Colored Objects (one-shot, mindiff): the same analysis on the stages read at END."""
    params = dict(locals())
    from circuits.circuit_analysis import END_STAGES

    def build(loaded: Any) -> tuple[Any, None]:
        from circuits.tasks import colored_objects

        return colored_objects(loaded, n, seed=seed), None

    _single("circuit colored-objects", params, lambda: build, END_STAGES)


def circuit_overlap(
    model: Annotated[str | None, ModelOption] = None,
    n: Annotated[int, NOption] = 16,
    repair_n: Annotated[
        int, typer.Option(help="Colored Objects prompts the repair is measured on.")
    ] = 40,
    seed: Annotated[int, SeedOption] = 0,
    top_fraction: Annotated[
        float, typer.Option(help="Share of all heads in each stage's top set (Merullo: 0.02).")
    ] = 0.02,
    rank_by: Annotated[str, RankOption] = "abs",
    repair: Annotated[
        str | None,
        typer.Option(
            help="Heads to repair with, e.g. 'L12H3,L13H4'. Default: IOI's top 3 heads of the"
            " S-inhibition stage and a negative mover by --negative-rule (Merullo's roles)."
        ),
    ] = None,
    negative_rule: Annotated[
        str,
        typer.Option(
            help="The negative mover: 'demoting' = the logits-stage head of largest |score|"
            " whose OV circuit demotes the colours it reads (Merullo's 19.1);"
            " 'most_negative' = the most negative score, no OV check (earlier rule)."
        ),
    ] = "demoting",
    random_controls: Annotated[
        int,
        typer.Option(help="Repairs with as many random heads of the same layers (controls)."),
    ] = 2,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the interval.")] = 2000,
    batch_size: Annotated[int, BatchOption] = 256,
    out: Annotated[Path | None, OutOption] = None,
    device: Annotated[str, DeviceOption] = "cpu",
    static: Annotated[bool, StaticOption] = True,
) -> None:
    """Circuit reuse: IOI vs name recall (control: Colored Objects), and the repair."""
    record = start_record("circuit overlap", locals())
    with user_errors():
        from circuits.commands.shared import check_counts, config_from, write_result
        from circuits.overlap_repair import OverlapConfig, overlap_and_repair
        from interp.errors import InputError
        from interp.heads import HeadSet

        check_counts(n=n, repair_n=repair_n, seed=seed, n_boot=n_boot)
        check_choice(rank_by, ("score", "abs"), "--rank-by")
        check_choice(negative_rule, ("demoting", "most_negative"), "--negative-rule")
        chosen = HeadSet(repair).labels if repair is not None else []
        if repair is not None and not chosen:
            raise InputError("--repair names no heads: give labels such as 'L12H3,L13H4'.")
        config = config_from(OverlapConfig, locals(), repair=tuple(chosen))
        folder = result_folder(out, "circuit-overlap", model, record)
        loaded = load_model_or_fail(model, device)
        with stage_bars("step") as progress:
            result = overlap_and_repair(loaded, config, progress=progress)
        write_result(folder, record, result, static)
        _echo_overlap(result)
        typer.echo(f"results and figures in {folder}")


def _echo_overlap(result: Any) -> None:
    """The reuse shares, each repair arm's effect and the tasks' warnings."""
    from circuits.circuit_analysis import END_STAGES

    if len(result.stages) < len(END_STAGES):
        typer.echo(f"note: comparing stages {result.stages}; a task's chain ended early", err=True)
    for row in result.reuse.data[result.reuse.data.stage == "all"].itertuples():
        typer.echo(
            f"ioi vs {row.task}{' (control)' if row.control else ''}: shared"
            f" {row.n_shared}/{row.n_reference} = {row.shared_share:.0%},"
            f" Jaccard {row.jaccard:.2f}"
        )
    for arm, effects in result.repairs.items():
        for row in effects.table.data.itertuples():
            typer.echo(
                f"repair, {arm} ({', '.join(result.arms[arm].labels)}) {row.metric}:"
                f" {row.baseline:.3f} -> {row.intervened:.3f} ({row.difference:+.3f},"
                f" 95% CI [{row.ci_low:+.3f}, {row.ci_high:+.3f}])"
            )
            if row.warnings:
                typer.echo(f"  warning: {row.warnings}")
    for name, task in result.tasks.items():
        if task.summary["warnings"]:
            typer.echo(f"{name}: warning: {task.summary['warnings']}")
