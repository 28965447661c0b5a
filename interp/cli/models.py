"""`interp models`: what can be loaded, and the default."""

from __future__ import annotations

import typer


def models() -> None:
    """Show the default model, the cached GGUF conversions and the accepted spec forms."""
    from interp.errors import InterpError
    from interp.models import DEFAULT_MODEL, cache_dir, cached_conversions, default_gguf_path

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
        " interface (Llama, Mistral, Qwen2/3, Gemma, GPT-2, ...)."
    )
