"""`interp score anchors`: preplan and anchor tokens in reasoning traces (Li et al. 2025).

Generates reasoning traces for the shipped problems (or reads the user's), splits the
band's heads into local and global by back-distance, scores every response token (WAAD,
FAI, preplan, anchor), exports per-token credit γ as JSONL, reports the paper's analysis
statistics and the causal check with intervals, and draws the figures. Every stage records
its finished work in the folder's one work log, opened with the command's identity and
handed to the library's runs (`interp.work`): generation as one item, each pass
(`probes.anchors.run`) and the causal check (`probes.anchor_causal.run`) per trace, so a
stopped run resumes with the same `--out`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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
    export_figures,
    load_model_or_fail,
    parse_ints,
    placement,
    progress_bar,
    result_folder,
    start_record,
    user_errors,
    work_progress,
)

TracesOption = typer.Option(
    "--traces",
    help="JSONL of your traces ('prompt'/'response' text or 'prompt_ids'/'response_ids')."
    " Text is used as it is (no chat template). Default: answer the shipped problems.",
)


def _check_budget(traces: Path | None, max_new_tokens: int, config: Any) -> None:
    """Refuse a response budget that cannot give an anchor token, before any work.

    FAI reads queries at least `h_lo` tokens after a token, so a response needs more than
    `h_lo` tokens (and two for ΔWAAD) to have anchors and preplan tokens at all.
    """
    from interp.errors import InputError

    least = max(config.h_lo + 1, 2)
    if traces is None and max_new_tokens < least:
        raise InputError(
            f"--max-new-tokens {max_new_tokens}: a response needs at least {least} tokens to"
            f" have an anchor (FAI reads queries --h-lo={config.h_lo} tokens later); raise it"
            " or lower --h-lo."
        )


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
        import json

        import pandas as pd

        from interp.effects import EffectsConfig
        from interp.errors import InputError
        from interp.figures import head_heatmap
        from interp.generation import GenerationConfig
        from interp.prompts import data_path, read_jsonl, read_text
        from interp.results import EffectTable, Provenance, hash_inputs
        from interp.runs import WorkLog, run_identity
        from interp.work import Item, Work
        from probes import anchor_causal, anchor_credit, anchor_figures, anchors
        from probes.anchor_stats import (
            EARLIER,
            PeakStatsConfig,
            peak_statistics,
            why_no_statistics,
        )
        from probes.anchor_traces import Trace, generate_traces, load_problems, read_traces

        config = anchors.AnchorConfig(
            window=window,
            h_lo=h_lo,
            h_hi=h_hi,
            q=q,
            shift=shift,  # type: ignore[arg-type]
            layers=parse_ints(layers, minimum=0) or (),
            layer_band=band,  # type: ignore[arg-type]
            batch_size=batch_size,
        )
        credit = anchor_credit.CreditConfig(rule=rule, gamma_amp=gamma_amp, alpha=alpha, k=k)  # type: ignore[arg-type]
        causal_config = anchor_causal.CausalConfig(
            n_seeds=causal_seeds, continuation=continuation, seed=seed
        )
        effects = EffectsConfig(n_boot=n_boot, seed=seed)
        generation = GenerationConfig(
            max_new_tokens=max_new_tokens, temperature=temperature, seed=seed
        )
        shipped = load_problems()
        if not 1 <= problems <= len(shipped):
            raise InputError(f"--problems must lie in 1..{len(shipped)}, got {problems}.")
        _check_budget(traces, max_new_tokens, config)
        source = traces or data_path("problems", "problems.jsonl")
        source_text = read_text(source, "Trace")  # checked before it is hashed or parsed
        if traces is not None:
            read_jsonl(traces, "Trace")  # each line JSON, before the model loads
        folder = result_folder(out, "anchors", model, record)
        loaded = load_model_or_fail(model, device, **placement(locals()))
        record.inputs([source])
        chosen = [] if traces else shipped[:problems]
        identity = Provenance(
            **loaded.provenance_fields(),
            analyzer=anchors.ANALYZER,
            config={
                **config.to_dict(),
                **credit.to_dict(),
                **causal_config.to_dict(),
                **generation.to_dict(),
                "chat": chat,
                "n_boot": n_boot,
            },
            inputs_hash=hash_inputs([source_text, [p.id for p in chosen]]),
            n_inputs=len(chosen),
        )
        log = WorkLog(folder, run_identity(identity))
        if traces:
            items = read_traces(traces, loaded)  # prompts as the model saw them
        else:
            update, bar = progress_bar(len(chosen), "generation", unit="problem")
            finished: set[int] = set()

            def on_step(step: Any) -> None:
                ended = step.kept.logical_not().tolist()
                finished.update(r for r, end in zip(step.rows, ended, strict=True) if end)
                update(len(finished), len(chosen))

            def answer(_: list[None]) -> list[list[dict[str, Any]]]:
                made = generate_traces(
                    loaded, chosen, generation, chat=chat, batch_size=batch_size, on_step=on_step
                )
                update(len(chosen), len(chosen))
                return [[t.to_dict() for t in made]]

            with bar:
                (rows,) = Work([Item("traces", None)], log).run(answer)
            items = [Trace.from_dict(row) for row in rows]
        update, bar = work_progress("anchor passes", unit="trace-pass")
        with bar:
            scored = anchors.run(loaded, items, config, progress=update, folder=log)
        heads, tokens = scored.heads, scored.tokens
        provenance = tokens.provenance
        record.wrote(heads.save(folder / "heads.parquet", csv=True))
        record.wrote(tokens.save(folder / "tokens.parquet", csv=True))
        record.wrote(anchor_credit.write_credit(folder / "credit.jsonl", tokens, credit))
        traces_file = folder / "traces.jsonl"
        traces_file.write_text("".join(json.dumps(t.to_dict()) + "\n" for t in items), "utf-8")
        record.wrote(traces_file)
        empty = why_no_statistics(tokens, config.h_lo)
        summary_fields: dict[str, Any] = {"statistics": []}
        if empty is None:
            # the paper's statistic, and beside it the toolkit's earlier definition
            paper, earlier = (
                peak_statistics(tokens, PeakStatsConfig(seed=seed, **extra), effects)
                for extra in ({}, EARLIER)
            )
            both = pd.concat([paper.data, earlier.data], ignore_index=True)
            statistics = EffectTable(both, paper.provenance)
            record.wrote(statistics.save(folder / "statistics.parquet", csv=True))
            summary_fields["statistics"] = statistics.data.to_dict("records")
        else:
            summary_fields["statistics_empty"] = empty
        causal = causal and empty is None  # the causal check blocks anchors: none here
        if causal:
            update, bar = work_progress("causal check", unit="trace")
            with bar:
                result = anchor_causal.run(
                    loaded,
                    items,
                    tokens,
                    anchors.heads_with_role(heads, "global"),
                    causal_config,
                    effects,
                    progress=update,
                    folder=log,
                )
            record.wrote(result.save(folder))
            summary_fields["causal"] = result.effects.data.to_dict("records")
        first = items[0]
        local = anchor_figures.local_head_for_map(heads.data)
        pattern = anchor_figures.head_pattern(loaded, first, local)
        figures = {
            "head_distance": head_heatmap(heads, "score", f"Back-distance d(l,h) ({loaded.spec})"),
            "token_strip": anchor_figures.token_strip(tokens, first.name),
            "local_head_map": anchor_figures.attention_map(
                pattern, local, first.n_prompt, f"Most local head on {first.name}"
            ),
        }
        written = export_figures(figures, folder, static)
        record.wrote(written)
        record.write(
            folder,
            provenance=provenance.to_dict(),
            traces=len(items),
            response_tokens=len(tokens),
            local_heads=anchors.heads_with_role(heads, "local").labels,
            global_heads=anchors.heads_with_role(heads, "global").labels,
            **summary_fields,
        )
        typer.echo(f"{len(items)} traces, {len(tokens)} response tokens -> {folder}")
        columns = ["metric", "n", "baseline", "intervened", "difference", "ci_low", "ci_high"]
        if empty is None:
            typer.echo(statistics.data[["statistic", *columns]].to_string(index=False))
            echo_warnings(statistics.data, lambda row: row.statistic)
        else:
            typer.echo(f"no statistics or causal check: {empty}")
        if causal:
            typer.echo(result.effects.data[["comparison", *columns]].to_string(index=False))
            echo_warnings(result.effects.data, lambda row: row.comparison)
        typer.echo(f"{len(written)} figure files in {folder / 'figures'}")
