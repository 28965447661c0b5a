"""`interp circuit sae`: SAE circuit identification scored against path patching.

Builds the task (IOI by default: clean prompts are the positives, their ABC corruptions the
negatives), reads `--reference` (the `<task>_circuit.parquet` of `interp circuit ioi`) if
given, runs `circuits.sae_identification.identify_circuit` and writes its tables, ROC
curves, head map, `summary.json` and the manifest. Method notes: docs/methods.md §11.
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

TASKS = ("ioi", "colored-objects")
ReferenceOption = typer.Option(
    help="The reference circuit: a <task>_circuit.parquet of `interp circuit ioi` on"
    " this model. Default: discovered here by path patching on the same prompts."
)
EdgeRuleOption = typer.Option(
    help="Edge-ranking entries kept: 'all_heads' = (all heads)² // 2 (reference code);"
    " 'per_layer' = heads-per-layer² // 2 (earlier toolkit)."
)


def circuit_sae(
    task: Annotated[str, typer.Option(help="'ioi' or 'colored-objects'.")] = "ioi",
    model: Annotated[str | None, ModelOption] = None,
    n: Annotated[
        int, typer.Option(help="Clean prompts (as many corrupted ones; reference: 250).")
    ] = 250,
    seed: Annotated[int, typer.Option(help="Seed of the task's prompts.")] = 0,
    seeds: Annotated[
        int, typer.Option(help="SAE seeds 0..N-1 (training prompts and initialisation).")
    ] = 1,
    reference: Annotated[Path | None, ReferenceOption] = None,
    d_sae: Annotated[int, typer.Option(help="Latents of the shared SAE (paper: 200).")] = 200,
    sparsity: Annotated[float, typer.Option(help="The paper's L1 weight λ (IOI: 0.02).")] = 0.02,
    lr: Annotated[float, typer.Option(help="Adam learning rate (paper: 1e-3).")] = 1e-3,
    epochs: Annotated[int, typer.Option(help="Full-batch SAE steps (paper: 500).")] = 500,
    n_train: Annotated[int, typer.Option(help="Prompts the SAE trains on (paper: 10).")] = 10,
    normalise: Annotated[
        bool, typer.Option(help="Divide node and edge counts by the codes seen at all.")
    ] = False,
    edge_rule: Annotated[str, EdgeRuleOption] = "all_heads",
    batch_size: Annotated[int, typer.Option(help="Prompts per forward.")] = 16,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output folder. Default: results/circuit-sae-...-<time>."),
    ] = None,
    device: Annotated[str, DeviceOption] = "cpu",
    static: Annotated[bool, StaticOption] = True,
) -> None:
    """SAE circuit identification (O'Neill & Bui 2024): node/edge scores and ROC AUC."""
    record = start_record("circuit sae", locals())
    with user_errors():
        from circuits.commands.shared import check_counts, config_from, write_result
        from circuits.sae_circuits import SAECircuitConfig
        from circuits.sae_identification import identify_circuit, reference_heads
        from interp.errors import InputError

        check_choice(task, TASKS, "--task")
        check_choice(edge_rule, ("all_heads", "per_layer"), "--edge-rule")
        check_counts(n=n, seed=seed, seeds=seeds)
        config = config_from(SAECircuitConfig, locals(), seed=0)  # --seed seeds the prompts
        if n_train > 2 * n:
            raise InputError(f"--n-train {n_train} is more than the {2 * n} prompts.")
        stored = _read_reference(reference, record)
        folder = result_folder(out, f"circuit-sae-{task}", model, record)
        loaded = load_model_or_fail(model, device)
        circuit = reference_heads(loaded, stored, task) if stored is not None else None
        built = _build(loaded, task, n, seed)
        with stage_bars("step") as bars:
            result = identify_circuit(
                loaded, built, config, seeds=seeds, reference=circuit, progress=bars, folder=folder
            )
        write_result(folder, record, result, static, reference=str(reference or "discovered"))
        _echo(task, result.summary)
        typer.echo(f"results and figures in {folder}")


def _build(loaded: Any, task: str, n: int, seed: int) -> Any:
    from circuits.tasks import colored_objects, ioi

    return ioi(loaded, n, seed=seed) if task == "ioi" else colored_objects(loaded, n, seed=seed)


def _read_reference(path: Path | None, record: Any) -> Any:
    """The stored reference circuit (before the model loads), or None to discover one."""
    if path is None:
        return None
    from interp.results import HeadScores

    record.inputs([path])
    return HeadScores.load(path)


def _echo(task: str, summary: dict[str, Any]) -> None:
    """The node AUC per seed and its spread, the edge-derived AUC and any warning."""
    import numpy as np

    nodes, edges, seeds = summary["node_auc"], summary["edge_auc"], summary["seeds"]
    per_seed = ", ".join(f"{v:.3f}" for v in nodes["per_seed"])
    spread = f" ± {nodes['std']:.3f} (population std over seeds, ddof 0)" if seeds > 1 else ""
    typer.echo(
        f"{task}: node ROC AUC against the {len(summary['circuit'])}-head reference circuit"
        f" {nodes['mean']:.3f}{spread}; per seed {per_seed}"
    )
    typer.echo(f"edge-derived node AUC {edges['mean']:.3f} (max {np.max(edges['per_seed']):.3f})")
    if summary["warnings"]:
        typer.echo(f"  warning: {summary['warnings']}")
