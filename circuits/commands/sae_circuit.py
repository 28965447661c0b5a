"""`interp circuit sae`: SAE circuit identification scored against path patching.

Builds the task (IOI by default: clean prompts are the positives, their ABC corruptions the
negatives), reads `--reference` (the `<task>_circuit.parquet` of `interp circuit ioi`) if
given, runs `circuits.sae_identification.identify_circuit` and writes its tables, ROC
curves, head map, `summary.json` and the manifest. Method notes: docs/methods.md §11.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from circuits.commands.shared import check_counts
from circuits.sae_circuits import SAECircuitConfig
from interp.cli.common import stage_bars
from interp.cli.options import Fields, Run, command

ReferenceOption = typer.Option(
    help="The reference circuit: a <task>_circuit.parquet of `interp circuit ioi` on"
    " this model. Default: discovered here by path patching on the same prompts."
)


@command("circuit sae", folder="circuit-sae", resumable=True)
def circuit_sae(
    run: Run,
    config: Annotated[SAECircuitConfig, Fields(skip=("seed",))],  # SAE seeds: --seeds
    task: Annotated[
        Literal["ioi", "colored-objects"], typer.Option(help="The circuit task.")
    ] = "ioi",
    n: Annotated[
        int, typer.Option(help="Clean prompts (as many corrupted ones; reference: 250).")
    ] = 250,
    seed: Annotated[int, typer.Option(help="Seed of the task's prompts.")] = 0,
    seeds: Annotated[
        int, typer.Option(help="SAE seeds 0..N-1 (training prompts and initialisation).")
    ] = 1,
    reference: Annotated[Path | None, ReferenceOption] = None,
) -> None:
    """SAE circuit identification (O'Neill & Bui 2024): node/edge scores and ROC AUC."""
    from circuits.sae_identification import identify_circuit, reference_heads
    from circuits.tasks import colored_objects, ioi
    from interp.errors import InputError
    from interp.results import HeadScores

    check_counts(n=n, seed=seed, seeds=seeds)
    if config.n_train > 2 * n:
        raise InputError(f"--n-train {config.n_train} is more than the {2 * n} prompts.")
    run.record.inputs([] if reference is None else [reference])
    stored = None if reference is None else HeadScores.load(reference)  # before the model
    run.name = f"circuit-sae-{task}"  # the default folder names the task
    run.folder()
    model = run.load_model()
    circuit = None if stored is None else reference_heads(model, stored, task)
    build = ioi if task == "ioi" else colored_objects
    with stage_bars("step", resumable=("SAE seeds",)) as bars:  # its seeds resume
        result = identify_circuit(
            model,
            build(model, n, seed=seed),
            config,
            seeds=seeds,
            reference=circuit,
            progress=bars,
            folder=run.folder(),
        )
    run.write_result(result, reference=str(reference or "discovered"))
