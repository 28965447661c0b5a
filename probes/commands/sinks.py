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
    run.folder()  # claimed before the long work
    prompt_file = prompts or data_path("prompts", "sinks.jsonl")
    texts = load_prompts(prompt_file)
    run.record.inputs([prompt_file])
    loaded = run.load_model()
    with run.progress(len(texts), "sinks") as update:
        result = sinks.run(loaded, texts, config, progress=update)
    summaries = result.summaries()
    run.write(
        bundles=[result],
        tables=summaries,
        figures=result.figures(),
        provenance=result.provenance.to_dict(),
        geometry=vars(loaded.geometry),
        rows=len(summaries["scores_per_head"].data),
    )
    run.report(result.summary_lines())


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
