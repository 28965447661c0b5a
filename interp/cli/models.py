"""`interp models`: what can be loaded, the default, and a memory plan before loading."""

from __future__ import annotations

from typing import Annotated

import typer

from interp.cli.common import user_errors
from interp.cli.options import PLACEMENT_HELP


def models(
    plan: Annotated[
        str | None,
        typer.Option(
            "--plan",
            help="Print the memory plan of this model spec ('default', a .gguf file, a"
            " folder or a hub id; reads the config only) instead of the model list.",
        ),
    ] = None,
    tokens: Annotated[
        int | None,
        typer.Option(help="Prompt length N of the plan (default 4096, or the context if less)."),
    ] = None,
    batch: Annotated[int, typer.Option(help="Prompts per forward in the plan.")] = 1,
    dtype: Annotated[str | None, typer.Option(help=PLACEMENT_HELP["dtype"])] = None,
    device: Annotated[
        str, typer.Option(help="Device the plan is for (sets the explicit-attention block).")
    ] = "cpu",
) -> None:
    """Show the default model, the cached GGUF conversions and the accepted spec forms."""
    from interp.errors import InterpError
    from interp.gguf import cache_dir, cached_conversions, default_gguf_path
    from interp.models import DEFAULT_MODEL

    if plan is not None:
        with user_errors():
            from interp.memory_plan import context_length, format_plan, plan_memory
            from interp.models import load_config
            from interp.placement import parse_dtype

            config = load_config(plan)
            if tokens is None:
                tokens = min(4096, context_length(config) or 4096)
            planned = plan_memory(
                config, tokens, dtype=parse_dtype(dtype), batch=batch, device=device
            )
            typer.echo(f"{plan}: {type(config).__name__}")
            typer.echo(format_plan(planned))
        return
    try:
        typer.echo(f"default: {DEFAULT_MODEL} (offline, {default_gguf_path()})")
    except InterpError as exc:
        typer.echo(f"default: {DEFAULT_MODEL} is not installed: {exc}")
    cached = cached_conversions()
    typer.echo(f"cached GGUF conversions in {cache_dir() / 'gguf'}: {len(cached)}")
    typer.echo(
        "--model accepts: nothing or 'default'; a path to a .gguf file; a local checkpoint"
        " folder (config.json + weights); or a hub id such as Qwen/Qwen2.5-0.5B (downloads,"
        " only when named). Supported: any HF causal LM whose attention uses HF's attention"
        " interface (Llama, Mistral, Qwen2/3, Gemma, GPT-2, ...), and vision-language"
        " models with their processor (LLaVA-1.5/NeXT, Idefics3/SmolVLM, Qwen2.5-VL)."
    )
    typer.echo("`interp models --plan SPEC --tokens N`: memory needed, before loading.")
