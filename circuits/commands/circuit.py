"""`interp circuit ioi|colored-objects|overlap`: circuits, faithfulness, reuse and repair.

`ioi` and `colored-objects` run `circuits.circuit_analysis.analyse_circuit` on the task,
`overlap` runs `circuits.overlap_repair.overlap_and_repair`; each writes the workflow's
tables, `summary.json`, figures and manifest. Method notes: docs/methods.md §8.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from circuits.circuit_analysis import END_STAGES, CircuitConfig
from circuits.commands.shared import check_counts
from circuits.overlap_repair import OverlapConfig
from circuits.tasks import Corruption
from interp.cli.common import stage_bars
from interp.cli.options import Fields, Run, command

if TYPE_CHECKING:
    from circuits.circuit_task import CircuitTask
    from interp.models import Model

# The stages are each command's own (IOI's four, or those read at the last token).
Discovery = Annotated[CircuitConfig, Fields(skip=("stages",))]
NOption = typer.Option("--n", help="Prompts per task (more: tighter numbers, slower).")
SeedOption = typer.Option(help="Seed of the task's prompts.")
RepairOption = typer.Option(
    help="Heads to repair with, e.g. 'L12H3,L13H4'. Default: IOI's top 3 heads of the"
    " S-inhibition stage and a negative mover by --negative-rule (Merullo's roles)."
)
CheckOption = typer.Option(
    help='JSONL of IOI templates ({"template": ...} per line) to check the circuit\'s'
    " faithfulness on. Default: the shipped held-out templates."
)


@command("circuit ioi", folder="circuit-ioi")
def circuit_ioi(
    run: Run,
    config: Discovery,
    n: Annotated[int, NOption] = 16,
    corruption: Annotated[
        Corruption, typer.Option(help="'abc' (Wang's p_ABC) or 's2_io' (Merullo's S2 -> IO flip).")
    ] = "abc",
    seed: Annotated[int, SeedOption] = 0,
    check_templates: Annotated[Path | None, CheckOption] = None,
) -> None:
    """IOI: accuracy, the circuit by four path-patching stages, its faithfulness, head maps.

    The circuit's faithfulness is measured again on templates discovery did not see.
    """
    from circuits.tasks import ioi, ioi_templates, parse_ioi_templates
    from circuits.templates import load_templates

    check_counts(n=n, seed=seed)
    held = ioi_templates("heldout")
    if check_templates is not None:
        held = load_templates(check_templates, "IOI template")
    parse_ioi_templates(held)  # bad slots are refused before the model loads

    def tasks(model: Model) -> tuple[CircuitTask, CircuitTask]:
        build = functools.partial(ioi, model, n, corruption=corruption, seed=seed)
        return build(), build(templates=held)

    _analyse(run, config, tasks)


@command("circuit colored-objects", folder="circuit-colored-objects")
def circuit_colored_objects(
    run: Run,
    config: Discovery,
    n: Annotated[int, NOption] = 16,
    seed: Annotated[int, SeedOption] = 42,
) -> None:
    """Colored Objects (one-shot, mindiff): the same analysis on the stages read at END."""
    from circuits.tasks import colored_objects

    check_counts(n=n, seed=seed)
    config = dataclasses.replace(config, stages=END_STAGES)
    _analyse(run, config, lambda model: (colored_objects(model, n, seed=seed), None))


def _analyse(
    run: Run,
    config: CircuitConfig,
    tasks: Callable[[Model], tuple[CircuitTask, CircuitTask | None]],
) -> None:
    """Analyse the task `tasks(model)` gives, and check its circuit on the second if any."""
    from circuits.circuit_analysis import analyse_circuit

    folder = run.folder()  # finished path-patching stages resume from its work log
    model = run.load_model()
    task, unseen = tasks(model)
    with stage_bars("step") as progress:
        run.write_result(
            analyse_circuit(model, task, config, check=unseen, progress=progress, folder=folder)
        )


@command("circuit overlap", folder="circuit-overlap", resumable=True)
def circuit_overlap(
    run: Run,
    config: Annotated[OverlapConfig, Fields(skip=("repair",))],
    repair: Annotated[str | None, RepairOption] = None,
) -> None:
    """Circuit reuse: IOI vs name recall (control: Colored Objects), and the repair."""
    from circuits.overlap_repair import overlap_and_repair
    from interp.errors import InputError
    from interp.heads import HeadSet

    check_counts(n=config.n, repair_n=config.repair_n, seed=config.seed, n_boot=config.n_boot)
    chosen = HeadSet(repair).labels if repair is not None else []
    if repair is not None and not chosen:
        raise InputError("--repair names no heads: give labels such as 'L12H3,L13H4'.")
    config = dataclasses.replace(config, repair=tuple(chosen))
    folder = run.folder()  # the repair arms resume from its work log
    model = run.load_model()
    with stage_bars("step", resumable=("repair",)) as progress:
        run.write_result(overlap_and_repair(model, config, progress=progress, folder=folder))
