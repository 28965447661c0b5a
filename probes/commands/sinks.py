"""`interp score sinks`: attention-sink scores per head, sink tokens, massive activations."""

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
    load_model_or_fail,
    placement,
    progress_bar,
    result_folder,
    start_record,
    user_errors,
    write_outputs,
)


def score_sinks(
    model: Annotated[str | None, ModelOption] = None,
    prompts: Annotated[
        Path | None,
        typer.Option(
            "--prompts",
            "-p",
            help="Prompt file: .jsonl with a 'text' field per line, or .txt with prompts"
            " separated by blank lines. Default: data/prompts/sinks.jsonl.",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output folder. Default: results/sinks-<model>-<time>."),
    ] = None,
    threshold: Annotated[
        float, typer.Option(help="Sink threshold tau on mean received attention (ACT: 0.1).")
    ] = 0.1,
    threshold_mode: Annotated[
        str, typer.Option(help="'absolute' (ACT code) or 'relative' (alpha/N).")
    ] = "absolute",
    min_queries: Annotated[
        int, typer.Option(help="Only keys seen by at least this many queries can be sinks.")
    ] = 1,
    massive_threshold: Annotated[
        float, typer.Option(help="|x_d|/RMS(x) threshold for massive activations (VAR: 20).")
    ] = 20.0,
    device: Annotated[str, DeviceOption] = "cpu",
    device_map: Annotated[str | None, DeviceMapOption] = None,
    max_memory: Annotated[str | None, MaxMemoryOption] = None,
    offload_folder: Annotated[Path | None, OffloadFolderOption] = None,
    dtype: Annotated[str | None, DtypeOption] = None,
    static: Annotated[bool, StaticOption] = True,
) -> None:
    """Score every head's attention sinks and write tables, a manifest and figures."""
    record = start_record("score sinks", locals())
    with user_errors():
        from interp.prompts import data_path, load_prompts
        from probes import sinks

        config = sinks.SinkConfig(
            threshold=threshold,
            threshold_mode=threshold_mode,  # type: ignore[arg-type]
            min_queries=min_queries,
            massive_threshold=massive_threshold,
        )
        check_min_queries(model, min_queries)
        folder = result_folder(out, "sinks", model, record)
        prompt_file = prompts or data_path("prompts", "sinks.jsonl")
        texts = load_prompts(prompt_file)
        record.inputs([prompt_file])
        loaded = load_model_or_fail(model, device, **placement(locals()))
        update, bar = progress_bar(len(texts), "sinks")
        with bar:
            result = sinks.run(loaded, texts, config, progress=update)
        summaries = result.summaries()
        per_head, dims = (table.data for table in summaries.values())
        written = write_outputs(
            folder,
            record,
            bundles=[result],
            tables=summaries,
            figures=result.figures(),
            static=static,
            provenance=result.provenance.to_dict(),
            geometry=vars(loaded.geometry),
            rows=len(per_head),
        )
        dominant = per_head[per_head.layer >= 3]["first_token_dominant"].gt(0.5).mean()
        top = per_head.nlargest(5, "hidden_sink_share")
        typer.echo(f"{len(per_head)} heads scored over {len(texts)} prompts -> {folder}")
        typer.echo(f"first token is the dominant sink for {dominant:.0%} of heads in layers >= 3")
        typer.echo(
            "strongest hidden sinks: "
            + ", ".join(f"{r.label} ({r.hidden_sink_share:.2f})" for r in top.itertuples())
        )
        if not dims.empty:
            typer.echo(f"massive-activation dims: {dims['dim'].head(5).tolist()}")
        typer.echo(f"{len(written)} figure files in {folder / 'figures'}")


def check_min_queries(model: str | None, min_queries: int) -> None:
    """--min-queries above the model's context flags nothing: refused before loading.

    The default (1) needs no config, so the usual run reads (and hashes) nothing extra.
    """
    if min_queries <= 1:
        return
    from interp.errors import InputError
    from interp.memory_plan import context_length
    from interp.models import load_config

    context = context_length(load_config(model))
    if context and min_queries > context:
        raise InputError(
            f"--min-queries {min_queries}: the model's context is {context} tokens, so no key"
            " can be seen by that many queries."
        )
