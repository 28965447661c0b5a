"""`interp score sinks`: attention-sink scores per head, sink tokens, massive activations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from interp.cli.options import Run, command
from probes.sinks import SinkConfig

PromptsOption = typer.Option(
    "--prompts",
    "-p",
    help="Prompt file: .jsonl with a 'text' field per line, or .txt with prompts separated by"
    " blank lines. Default: data/prompts/sinks.jsonl.",
)


@command("score sinks")
def score_sinks(
    run: Run,
    config: SinkConfig,
    prompts: Annotated[Path | None, PromptsOption] = None,
) -> None:
    """Score every head's attention sinks and write tables, a manifest and figures."""
    from interp.prompts import data_path, load_prompts
    from probes import sinks

    check_min_queries(run.model_spec, config.min_queries)
    folder = run.folder()
    prompt_file = prompts or data_path("prompts", "sinks.jsonl")
    texts = load_prompts(prompt_file)
    run.record.inputs([prompt_file])
    loaded = run.load_model()
    with run.progress(len(texts), "sinks") as update:
        result = sinks.run(loaded, texts, config, progress=update)
    summaries = result.summaries()
    per_head, dims = (table.data for table in summaries.values())
    written = run.write(
        bundles=[result],
        tables=summaries,
        figures=result.figures(),
        provenance=result.provenance.to_dict(),
        geometry=vars(loaded.geometry),
        rows=len(per_head),
    )
    dominant = per_head[per_head.layer >= 3]["first_token_dominant"].gt(0.5).mean()
    top = per_head.nlargest(5, "hidden_sink_share")
    typer.echo(f"{len(per_head)} heads scored over {len(texts)} prompts -> {folder}")
    typer.echo(f"first token is the dominant sink for {dominant:.0%} of heads in layers >= 3")
    strongest = ", ".join(f"{r.label} ({r.hidden_sink_share:.2f})" for r in top.itertuples())
    typer.echo(f"strongest hidden sinks: {strongest}")
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
