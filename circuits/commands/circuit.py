"""`interp circuit ioi|colored-objects|overlap`: circuits, faithfulness, reuse and repair.

`ioi` and `colored-objects` build the task, score it (accuracy, logit difference), discover
its circuit by staged path patching, measure the circuit's faithfulness under mean
ablation, optionally patch every head (attribution and/or activation patching), and write
the tables, a `summary.json` and head maps. `overlap` discovers the IOI circuit and the
second task's (name recall, which the default model performs; Colored Objects is the
control, as the default model is at chance on it), writes the per-stage reuse table and the
side-by-side figure, and measures the repair (IOI's inhibition and negative-mover heads
attending from the last token to the two wrong colours) on Colored Objects with a 95%
interval. Method notes: docs/methods.md §8.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from interp.cli.common import (
    DeviceOption,
    ModelOption,
    StaticOption,
    check_choice,
    export_figures,
    load_model_or_fail,
    progress_bar,
    result_folder,
    start_record,
    user_errors,
)

# Stages every task can run: both read the last position ("END"). IOI adds the deeper
# stages (S-inhibition values at S2, induction keys at S1+1).
END_STAGES = ("logits", "name_mover_queries")
PATCHING = ("none", "attribution", "activation", "both")

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


def _check_counts(**values: int) -> None:
    """Seeds and sizes the tasks and the bootstrap take: whole numbers, seeds >= 0, prompt
    counts within what a task is built with (checked again against its templates)."""
    from circuits.circuit_task import MAX_PROMPTS
    from interp.errors import InputError

    for name, value in values.items():
        low = 0 if name == "seed" else 1
        if value < low:
            raise InputError(f"--{name.replace('_', '-')} must be at least {low}, got {value}.")
        if name in ("n", "repair_n") and value > MAX_PROMPTS:
            raise InputError(
                f"--{name.replace('_', '-')} {value}: a task takes at most {MAX_PROMPTS}"
                " prompts (each is built, held and patched per head)."
            )


def _save(table: Any, folder: Path, name: str, record: Any) -> None:
    from interp.results import csv_path

    path = table.save(folder / f"{name}.parquet", csv=True)
    record.wrote([path, csv_path(path)])


def _discover(
    loaded: Any, task: Any, stages: tuple[str, ...], options: dict[str, Any], label: str
) -> Any:
    """Staged path patching with a progress bar per task."""
    from circuits.discovery import DiscoveryConfig, discover_ioi

    config = DiscoveryConfig(stages=stages, **options)
    update, bar = progress_bar(len(stages), f"{label} path patching", unit="stage")
    finished: set[str] = set()

    def step(stage: str, done: int, total: int) -> None:
        if done == total:
            finished.add(stage)
        update(len(finished), len(stages))

    with bar:
        found = discover_ioi(loaded, task, config, progress=step)
        update(len(stages), len(stages))
    return found


def _analyse(
    loaded: Any,
    task: Any,
    stages: tuple[str, ...],
    options: dict[str, Any],
    patching: str,
    batch_size: int,
    folder: Path,
    record: Any,
) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """Score, discover, check faithfulness and patch one task; save its tables.

    Returns the summary fields, the figures and the discovery (stage scores and circuit).
    """
    from circuits.discovery import faithfulness
    from circuits.tasks import prompt_metrics
    from interp.figures import head_heatmap
    from interp.results import HeadScores

    items = prompt_metrics(loaded, task, batch_size=batch_size)
    _save(items, folder, f"{task.name}_items", record)
    found = _discover(loaded, task, stages, options, task.name)
    _save(found.scores, folder, f"{task.name}_path_patching", record)
    _save(found.circuit, folder, f"{task.name}_circuit", record)
    faithful = faithfulness(loaded, task, found.heads)
    _save(faithful, folder, f"{task.name}_faithfulness", record)
    share = faithful.data.set_index("condition")["share"]
    figures = {}
    for stage, group in found.scores.data.groupby("stage", sort=False):
        scores = HeadScores(group.reset_index(drop=True), found.scores.provenance)
        figures[f"{task.name}_{stage}"] = head_heatmap(
            scores, "score", f"{task.name}: path patching, stage {stage}"
        )
    summary: dict[str, Any] = {
        "task": task.name,
        "n": len(task),
        "accuracy": float(items.data["correct"].mean()),
        "accuracy_vocab": float(items.data["correct_vocab"].mean()),
        "logit_difference": float(items.data["logit_difference"].mean()),
        "corrupted_logit_difference": float(items.data["corrupted_logit_difference"].mean()),
        "circuit": found.heads.labels,
        "faithfulness": float(share["circuit"]),
        "faithfulness_complement": float(share["complement"]),
        "stages": list(stages),
        "warnings": _warnings(items, faithful, task),
    }
    maps = _patch(loaded, task, patching, batch_size)
    for name, scores in maps.items():
        _save(scores, folder, f"{task.name}_{name}_patching", record)
        figures[f"{task.name}_{name}_patching"] = head_heatmap(
            scores, "score", f"{task.name}: {name} patching"
        )
    if len(maps) == 2:
        from circuits.attribution import rank_correlation

        summary["attribution_rank_correlation"] = rank_correlation(
            maps["attribution"], maps["activation"]
        )
    return summary, figures, found


def _warnings(items: Any, faithful: Any, task: Any) -> str:
    """Caveats of a task's numbers: a model at chance, or no logit difference to share."""
    from interp.effects import caveats

    notes = [caveats(baseline=items.data["correct"].mean(), chance=1 / task.choice_ids.shape[1])]
    full = faithful.data.set_index("condition").loc["full", "logit_difference"]
    if full <= 0:
        notes.append(
            f"the full model's logit difference is {full:+.2f}: shares of it (faithfulness)"
            " are not meaningful"
        )
    return "; ".join(note for note in notes if note)


def _patch(loaded: Any, task: Any, patching: str, batch_size: int) -> dict[str, Any]:
    maps: dict[str, Any] = {}
    if patching in ("attribution", "both"):
        from circuits.attribution import attribution_patching

        maps["attribution"] = attribution_patching(loaded, task).heads
    if patching in ("activation", "both"):
        from circuits.patching import activation_patching

        update, bar = progress_bar(loaded.geometry.n_layers, "activation patching", "layer")
        with bar:
            maps["activation"] = activation_patching(
                loaded, task, batch_size=batch_size, progress=update
            )
    return maps


def _finish(
    folder: Path, record: Any, summary: dict[str, Any], figures: dict, static: bool
) -> None:
    written = export_figures(figures, folder, static)
    record.wrote(written)
    path = folder / "summary.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    record.wrote([path])
    record.write(folder, summary=summary)


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


def _single(
    command: str,
    params: dict[str, Any],
    build: Any,
    stages: tuple[str, ...],
    prepare_check: Any = None,
) -> None:
    """What `circuit ioi` and `circuit colored-objects` share.

    `prepare_check`, when given, reads the input of a second task (other templates) before
    the model loads and returns its builder; the discovered circuit's faithfulness is
    measured again on it, unseen by discovery.
    """
    record = start_record(command, params)
    with user_errors():
        _check_counts(n=params["n"], seed=params["seed"])
        check_choice(params["patching"], PATCHING, "--patching")
        check_choice(params["rank_by"], ("score", "abs"), "--rank-by")
        options = _options(params)
        build_check = prepare_check() if prepare_check is not None else None
        job = "circuit-" + command.split()[-1]
        folder = result_folder(params["out"], job, params["model"], record)
        loaded = load_model_or_fail(params["model"], params["device"])
        task = build(loaded)
        summary, figures, found = _analyse(
            loaded, task, stages, options, params["patching"], params["batch_size"], folder, record
        )
        if build_check is not None:
            summary["check"] = _check_circuit(loaded, build_check(loaded), found, folder, record)
        _finish(folder, record, summary, figures, params["static"])
        _echo_task(summary)
        typer.echo(f"results and figures in {folder}")


def _check_circuit(loaded: Any, task: Any, found: Any, folder: Path, record: Any) -> dict:
    """Faithfulness of the discovered circuit on a task discovery did not see."""
    from circuits.discovery import faithfulness

    faithful = faithfulness(loaded, task, found.heads)
    _save(faithful, folder, f"{task.name}_check_faithfulness", record)
    share = faithful.data.set_index("condition")["share"]
    return {
        "n": len(task),
        "templates": len(set(task.templates)),
        "faithfulness": float(share["circuit"]),
        "faithfulness_complement": float(share["complement"]),
    }


def _options(params: dict[str, Any]) -> dict[str, Any]:
    from circuits.discovery import DiscoveryConfig

    options = {
        "per_stage": params["per_stage"],
        "max_heads": params["max_heads"],
        "rank_by": params["rank_by"],
        "batch_size": params["batch_size"],
    }
    DiscoveryConfig(**options)  # validate before loading the model
    return options


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

    def build(loaded: Any) -> Any:
        from circuits.tasks import ioi

        return ioi(loaded, n, corruption=corruption, seed=seed)  # type: ignore[arg-type]

    def prepare_check() -> Any:
        """Reads the check templates before the model loads; builds the task after."""
        from circuits.tasks import ioi, ioi_templates, parse_ioi_templates
        from circuits.templates import load_templates

        templates = (
            ioi_templates("heldout")
            if check_templates is None
            else load_templates(check_templates, "IOI template")
        )
        parse_ioi_templates(templates)  # bad slots are refused before the model loads
        return lambda loaded: ioi(loaded, n, templates=templates, corruption=corruption, seed=seed)  # type: ignore[arg-type]

    _single("circuit ioi", params, build, tuple(IOI_STAGES), prepare_check)


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

    def build(loaded: Any) -> Any:
        from circuits.tasks import colored_objects

        return colored_objects(loaded, n, seed=seed)

    _single("circuit colored-objects", params, build, END_STAGES)


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
        import pandas as pd

        from circuits.discovery import DiscoveryConfig
        from circuits.repair import (
            Repair,
            ov_copy_scores,
            random_heads_like,
            repair_effects,
            repair_heads,
            wrong_color_positions,
        )
        from circuits.reuse import ReuseConfig, overlap, stage_circuits
        from circuits.tasks import colored_objects, ioi, name_recall
        from interp.effects import EffectsConfig
        from interp.errors import InputError
        from interp.figures import circuit_heatmaps, effects_bars
        from interp.heads import HeadSet
        from interp.results import EffectTable, HeadScores

        _check_counts(n=n, repair_n=repair_n, seed=seed, n_boot=n_boot)
        if random_controls < 0:
            raise InputError(f"--random-controls must be at least 0, got {random_controls}.")
        check_choice(rank_by, ("score", "abs"), "--rank-by")
        check_choice(negative_rule, ("demoting", "most_negative"), "--negative-rule")
        reuse = ReuseConfig(top_fraction=top_fraction, rank_by=rank_by)  # type: ignore[arg-type]
        effects_config = EffectsConfig(n_boot=n_boot, seed=seed)
        chosen = HeadSet(repair) if repair is not None else None
        if chosen is not None and not chosen:
            raise InputError("--repair names no heads: give labels such as 'L12H3,L13H4'.")
        options = {"rank_by": rank_by, "batch_size": batch_size}
        DiscoveryConfig(**options)
        folder = result_folder(out, "circuit-overlap", model, record)
        loaded = load_model_or_fail(model, device)
        if chosen is not None:
            chosen.mask(loaded.geometry)  # a head the model lacks fails before the work
        n_heads = loaded.geometry.n_layers * loaded.geometry.n_heads
        options["per_stage"] = max(1, round(top_fraction * n_heads))
        tasks = {
            "ioi": ioi(loaded, n, seed=seed),
            "name_recall": name_recall(loaded, n, seed=seed),
            "colored_objects": colored_objects(loaded, n, seed=42 + seed),
        }
        summaries, stage_scores, figures = {}, {}, {}
        for name, task in tasks.items():
            summary, task_figures, found = _analyse(
                loaded, task, END_STAGES, options, "none", batch_size, folder, record
            )
            summaries[name], stage_scores[name] = summary, _by_stage(found.scores)
            figures.update(task_figures)
        # A chain of stages ends early when a stage's top heads sit in layer 0 (nothing lies
        # below them); compare the stages every task reached, and say which.
        compared = [s for s in END_STAGES if all(s in st for st in stage_scores.values())]
        if len(compared) < len(END_STAGES):
            typer.echo(f"note: comparing stages {compared}; a task's chain ended early", err=True)
        ioi_scores = HeadScores(
            _stacked(stage_scores["ioi"]), next(iter(stage_scores["ioi"].values())).provenance
        )
        stage_scores = {t: {s: st[s] for s in compared} for t, st in stage_scores.items()}
        table = overlap("ioi", stage_scores, reuse, controls=("colored_objects",))
        _save(table, folder, "reuse", record)
        tops = {
            name: stage_circuits(stages, reuse, n_heads) for name, stages in stage_scores.items()
        }
        circuits = {
            name: HeadSet(h for s in tops[name].values() for h in s).labels for name in tops
        }
        pair = ("ioi", "name_recall")  # the control's map is in its own figures
        figures["overlap"] = circuit_heatmaps(
            {name: stage_scores[name]["logits"] for name in pair},
            {name: circuits[name] for name in pair},
            "Direct effect on the logits (path patching); squares: each task's circuit,"
            " dots: in both",
            label="path patching score",
        )
        colours = colored_objects(loaded, repair_n, seed=42 + seed)
        heads = chosen
        if heads is None:
            logit_heads = HeadSet(stage_scores["ioi"]["logits"].data["label"])
            copying = ov_copy_scores(loaded, logit_heads, colours.choice_ids)
            heads = repair_heads(ioi_scores, copying, negative_rule=negative_rule)  # type: ignore[arg-type]
        positions = wrong_color_positions(colours)
        arms = {"chosen": heads}
        for draw in range(random_controls):
            arms[f"random_{draw}"] = random_heads_like(heads, loaded.geometry, seed + draw)
        update, bar = progress_bar(len(arms), "repair", unit="head set")
        repairs = {}
        with bar:
            for done, (arm, arm_heads) in enumerate(arms.items(), start=1):
                repairs[arm] = repair_effects(
                    loaded, colours, Repair(arm_heads, positions), effects_config
                )
                update(done, len(arms))
        for arm, effects in repairs.items():
            record.wrote(effects.save(folder / ("repair" if arm == "chosen" else f"repair_{arm}")))
        accuracy_rows = pd.concat(
            [
                e.table.data[e.table.data.metric == "accuracy"].assign(
                    task=f"{arm}: {','.join(arms[arm].labels)}"
                )
                for arm, e in repairs.items()
            ],
            ignore_index=True,
        )
        figures["repair"] = effects_bars(
            EffectTable(accuracy_rows, repairs["chosen"].table.provenance),
            "Repair of Colored Objects: accuracy among the listed colours",
        )
        summary = {
            "tasks": summaries,
            "reference": "ioi",
            "stages_compared": compared,
            "control": "colored_objects",
            "reuse": _reuse_summary(table.data),
            "repair": {
                "n": len(colours),
                **{arm: _effect_summary(arms[arm], e) for arm, e in repairs.items()},
            },
            "accuracy": summaries["ioi"]["accuracy"],
            "logit_difference": summaries["ioi"]["logit_difference"],
            "circuit": summaries["ioi"]["circuit"],
            "faithfulness": summaries["ioi"]["faithfulness"],
        }
        _finish(folder, record, summary, figures, static)
        for row in table.data[table.data.stage == "all"].itertuples():
            typer.echo(
                f"ioi vs {row.task}{' (control)' if row.control else ''}: shared"
                f" {row.n_shared}/{row.n_reference} = {row.shared_share:.0%},"
                f" Jaccard {row.jaccard:.2f}"
            )
        for arm, effects in repairs.items():
            for row in effects.table.data.itertuples():
                typer.echo(
                    f"repair, {arm} ({', '.join(arms[arm].labels)}) {row.metric}:"
                    f" {row.baseline:.3f} -> {row.intervened:.3f} ({row.difference:+.3f},"
                    f" 95% CI [{row.ci_low:+.3f}, {row.ci_high:+.3f}])"
                )
                if row.warnings:
                    typer.echo(f"  warning: {row.warnings}")
        for name, task_summary in summaries.items():
            if task_summary["warnings"]:
                typer.echo(f"{name}: warning: {task_summary['warnings']}")
        typer.echo(f"results and figures in {folder}")


def _by_stage(scores: Any) -> dict[str, Any]:
    from interp.results import HeadScores

    return {
        str(stage): HeadScores(group.reset_index(drop=True), scores.provenance)
        for stage, group in scores.data.groupby("stage", sort=False)
    }


def _stacked(stages: dict[str, Any]) -> Any:
    import pandas as pd

    return pd.concat([s.data for s in stages.values()], ignore_index=True)


def _effect_summary(heads: Any, effects: Any) -> dict[str, Any]:
    rows = effects.table.data.set_index("metric")
    keys = ("baseline", "intervened", "difference", "ci_low", "ci_high")
    return {
        "heads": heads.labels,
        **{
            metric: {**{k: float(rows.loc[metric, k]) for k in keys}, "warnings": row_warnings}
            for metric, row_warnings in rows["warnings"].items()
        },
    }


def _reuse_summary(table: Any) -> dict[str, Any]:
    return {
        f"{row.task}/{row.stage}": {
            "shared": list(row.shared),
            "shared_share": float(row.shared_share),
            "jaccard": float(row.jaccard),
        }
        for row in table.itertuples()
    }
