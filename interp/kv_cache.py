"""The KV cache of a forward, found by its type rather than by an argument's name.

Part of the hooks layer: the one place that knows how transformers passes its cache.
transformers 5.x renamed the forward argument `past_key_values` to `cache` (and the output
field likewise), keeping the old name as a deprecated alias for some releases. Code that
looked for the keyword by name silently stopped seeing the cache: a decode step then looked
like a new prompt, and a forward meant to run without a cache filled the caller's. Here a
forward's cache is whatever argument holds a `transformers.Cache`, a decode step is a forward
whose cache already holds positions, and calls into the model name the argument its forward
declares. Costs nothing: one pass over a forward's keyword arguments.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn
from transformers import Cache

__all__ = ["cache_kwargs", "forward_cache", "is_decode_step", "output_cache", "without_cache"]


def forward_cache(kwargs: dict[str, Any]) -> Cache | None:
    """The cache among a forward's keyword arguments, whatever its name (None: none)."""
    return next((value for value in kwargs.values() if isinstance(value, Cache)), None)


def is_decode_step(kwargs: dict[str, Any]) -> bool:
    """Whether this forward continues a cache that already holds positions."""
    cache = forward_cache(kwargs)
    return cache is not None and cache.get_seq_length() > 0


def without_cache(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The same keyword arguments for a forward that neither reads nor fills a cache."""
    kept = {name: value for name, value in kwargs.items() if not isinstance(value, Cache)}
    return {**kept, "use_cache": False}


def cache_kwargs(module: nn.Module, cache: Cache | None) -> dict[str, Cache | None]:
    """`{name: cache}` under the name `module.forward` declares for its cache argument."""
    parameters = inspect.signature(module.forward).parameters
    return {"cache" if "cache" in parameters else "past_key_values": cache}


def output_cache(output: Any) -> Cache:
    """The cache a forward returned, under either name (no deprecation warning)."""
    cache = getattr(output, "cache", None)
    return output.past_key_values if cache is None else cache
