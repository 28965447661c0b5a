"""`interp circuit sae`: SAE circuit identification scored against path patching.

Builds the task (IOI by default: clean prompts are the positives, their ABC corruptions
the negatives), takes the reference circuit from `--reference` (the `<task>_circuit.parquet`
of `interp circuit ioi`) or discovers it here by staged path patching, collects every
head's position-averaged output once, and runs O'Neill & Bui's scoring with `--seeds`
seeds (each seed draws its own training prompts and SAE). Per seed it reports the node
ROC AUC and the edge-derived node AUC against the reference; it writes the per-seed and
mean node scores, the AUC table, ROC curves, a head map of the mean node score with the
circuit marked, `summary.json` and the manifest. Method notes: docs/methods.md §11.
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
    progress_bar,
    result_folder,
    start_record,
    user_errors,
)

TASKS = ("ioi", "colored-objects")


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
    reference: Annotated[
        Path | None,
        typer.Option(
            help="The reference circuit: a <task>_circuit.parquet of `interp circuit ioi` on"
            " this model. Default: discovered here by path patching on the same prompts."
        ),
    ] = None,
    d_sae: Annotated[int, typer.Option(help="Latents of the shared SAE (paper: 200).")] = 200,
    sparsity: Annotated[float, typer.Option(help="The paper's L1 weight λ (IOI: 0.02).")] = 0.02,
    lr: Annotated[float, typer.Option(help="Adam learning rate (paper: 1e-3).")] = 1e-3,
    epochs: Annotated[int, typer.Option(help="Full-batch SAE steps (paper: 500).")] = 500,
    n_train: Annotated[int, typer.Option(help="Prompts the SAE trains on (paper: 10).")] = 10,
    normalise: Annotated[
        bool, typer.Option(help="Divide node and edge counts by the codes seen at all.")
    ] = False,
    edge_rule: Annotated[
        str,
        typer.Option(
            help="Edge-ranking entries kept: 'all_heads' = (all heads)² // 2 (reference code);"
            " 'per_layer' = heads-per-layer² // 2 (earlier toolkit)."
        ),
    ] = "all_heads",
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
        import numpy as np

        from circuits.commands.circuit import _check_counts, _finish
        from circuits.sae_circuits import SAECircuitConfig
        from interp.effects import caveats
        from interp.errors import InputError

        check_choice(task, TASKS, "--task")
        check_choice(edge_rule, ("all_heads", "per_layer"), "--edge-rule")
        _check_counts(n=n, seed=seed, seeds=seeds)
        config = SAECircuitConfig(
            d_sae=d_sae,
            sparsity=sparsity,
            lr=lr,
            epochs=epochs,
            n_train=n_train,
            normalise=normalise,
            edge_rule=edge_rule,  # type: ignore[arg-type]
            batch_size=batch_size,
        )
        if n_train > 2 * n:
            raise InputError(f"--n-train {n_train} is more than the {2 * n} prompts.")
        stored = _read_reference(reference, record)
        folder = result_folder(out, f"circuit-sae-{task}", model, record)
        loaded = load_model_or_fail(model, device)
        circuit = _stored(loaded, stored, task) if stored is not None else None
        built = _build(loaded, task, n, seed)
        if circuit is None:
            circuit = _discovered(loaded, built, folder, record)
        summary, figures = _score(loaded, built, circuit, config, seeds, folder, record)
        summary["reference"] = str(reference) if reference is not None else "discovered"
        summary["warnings"] = caveats(seeds=seeds)
        _finish(folder, record, summary, figures, static)
        nodes = summary["node_auc"]
        per_seed = ", ".join(f"{v:.3f}" for v in nodes["per_seed"])
        spread = f" ± {nodes['std']:.3f} (population std over seeds, ddof 0)" if seeds > 1 else ""
        typer.echo(
            f"{task}: node ROC AUC against the {len(summary['circuit'])}-head reference circuit"
            f" {nodes['mean']:.3f}{spread}; per seed {per_seed}"
        )
        edges = summary["edge_auc"]
        typer.echo(
            f"edge-derived node AUC {edges['mean']:.3f} (max {np.max(edges['per_seed']):.3f})"
        )
        if summary["warnings"]:
            typer.echo(f"  warning: {summary['warnings']}")
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


def _stored(loaded: Any, stored: Any, task: str) -> Any:
    """The stored reference circuit's heads, checked against the model."""
    from interp.errors import InputError
    from interp.heads import HeadSet

    if stored.provenance.weights_hash != loaded.weights_hash:
        raise InputError(
            f"The reference circuit was found on {stored.provenance.model}, not on"
            f" {loaded.spec}: give one from `interp circuit {task}` on this model."
        )
    heads = HeadSet(zip(stored.data["layer"], stored.data["head"], strict=True))
    heads.mask(loaded.geometry)  # a head the model lacks is an error
    return heads


def _discovered(loaded: Any, task: Any, folder: Path, record: Any) -> Any:
    """The reference circuit by staged path patching on the task's prompts (saved)."""
    from circuits.commands.circuit import END_STAGES, _discover, _save
    from circuits.path_patching import IOI_STAGES

    stages = tuple(IOI_STAGES) if task.name == "ioi" else END_STAGES
    found = _discover(loaded, task, stages, {}, task.name)
    _save(found.circuit, folder, f"{task.name}_circuit", record)
    return found.heads


def _score(
    loaded: Any, task: Any, circuit: Any, config: Any, seeds: int, folder: Path, record: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Collect head outputs once, score every seed, save the tables; summary and figures."""
    from dataclasses import replace

    import numpy as np
    import pandas as pd

    from circuits.commands.circuit import _save
    from circuits.sae_circuits import roc_auc, roc_points, score_heads
    from interp.activations import collect_heads
    from interp.figures import circuit_heatmaps, roc_curves
    from interp.results import HeadScores, ItemTable

    texts = [*task.prompts, *task.corrupted_prompts]
    update, bar = progress_bar(len(texts), "head outputs")
    with bar:
        acts = collect_heads(loaded, texts, batch_size=config.batch_size, progress=update)
    labels = set(circuit.labels)
    rows, aucs, curves = [], [], []
    update, bar = progress_bar(seeds, "SAE seeds", unit="seed")
    with bar:
        for seed in range(seeds):
            found = score_heads(acts, len(task.prompts), replace(config, seed=seed))
            node, edge = roc_auc(found.nodes, circuit), roc_auc(found.edge_nodes, circuit)
            nodes = found.nodes.data.assign(
                seed=seed, edge_score=found.edge_nodes.data["score"].to_numpy()
            )
            rows.append(nodes)
            aucs.append({"seed": seed, "node_auc": node, "edge_auc": edge})
            curves.append(roc_points(found.nodes, circuit).assign(run=f"seed {seed}", auc=node))
            update(seed + 1, seeds)
    provenance = found.nodes.provenance
    per_seed = pd.concat(rows, ignore_index=True)
    per_seed["in_circuit"] = per_seed["label"].isin(labels)
    mean = (
        per_seed.groupby(["layer", "head", "label"], sort=False)
        .agg(
            score=("score", "mean"),
            score_std=("score", lambda v: float(np.std(v, ddof=0))),
            edge_score=("edge_score", "mean"),
        )
        .reset_index()
    )
    mean["in_circuit"] = mean["label"].isin(labels)
    mean_scores = HeadScores(mean, provenance)
    table = pd.DataFrame(aucs)
    for name, result in (
        ("sae_nodes", ItemTable(per_seed, provenance)),
        ("sae_nodes_mean", mean_scores),
        ("sae_auc", ItemTable(table, provenance)),
    ):
        _save(result, folder, f"{task.name}_{name}", record)
    title = f"{task.name}: SAE node scores vs path patching ({seeds} seed{'s' * (seeds > 1)})"
    figures = {
        f"{task.name}_sae_roc": roc_curves(pd.concat(curves, ignore_index=True), title),
        f"{task.name}_sae_nodes": circuit_heatmaps(
            {task.name: mean_scores},
            {task.name: circuit.labels},
            f"{task.name}: SAE node score (mean over seeds); squares: reference circuit",
            label="node score",
        ),
    }

    def stats(column: str) -> dict[str, Any]:
        values = table[column].to_numpy()
        std = float(np.std(values, ddof=0))  # population std, as the reference reports
        return {"per_seed": values.tolist(), "mean": float(values.mean()), "std": std, "ddof": 0}

    summary = {
        "task": task.name,
        "n": len(task),
        "seeds": seeds,
        "circuit": sorted(labels),
        "node_auc": stats("node_auc"),
        "edge_auc": stats("edge_auc"),
        "config": config.to_dict(),
    }
    return summary, figures
