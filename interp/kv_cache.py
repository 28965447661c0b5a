"""The KV cache of a forward, found by its type rather than by an argument's name.

Part of the hooks layer: the one place that knows how transformers passes its cache, and
what a cache holds inside (`row_states`, `caches_full_attention` read its layers); it also
builds the caches analyses reuse (`prefix_caches`, `repeated_rows`).
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
from copy import deepcopy
from typing import Any

import torch
from torch import Tensor, nn
from transformers import Cache, DynamicCache, PretrainedConfig
from transformers.cache_utils import DynamicLayer

from interp.encoding import Encoding

__all__ = [
    "cache_kwargs",
    "caches_full_attention",
    "dropped_positions",
    "forward_cache",
    "is_decode_step",
    "output_cache",
    "prefix_caches",
    "repeated_rows",
    "row_states",
    "without_cache",
]


def forward_cache(kwargs: dict[str, Any]) -> Cache | None:
    """The cache among a forward's keyword arguments, whatever its name (None: none)."""
    return next((value for value in kwargs.values() if isinstance(value, Cache)), None)


def dropped_positions(cache: Cache | None, layer: int, n_keys: int) -> int:
    """How many positions before the `n_keys` keys a forward's attention received the cache
    of `layer` no longer holds: a sliding-window layer keeps only its last keys, so at a
    decode step past the window its key axis starts that many positions late (0 for a
    layer that keeps every key, or without a cache)."""
    if cache is None or layer >= len(cache.layers):
        return 0
    return max(0, cache.layers[layer].get_seq_length() - n_keys)


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


def row_states(cache: DynamicCache, row: int, positions: slice) -> list[tuple[Tensor, Tensor]]:
    """Per layer, copies of one row's keys and values at `positions`
    ([1, kv_head, pos, d_head] each), independent of the cache's later growth."""
    return [
        (
            layer.keys[row : row + 1, :, positions].clone(),
            layer.values[row : row + 1, :, positions].clone(),
        )
        for layer in cache.layers
    ]


def caches_full_attention(config: PretrainedConfig) -> bool:
    """Whether a cache for `config` keeps every position in every layer (no sliding window)."""
    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=config).layers)


def prefix_caches(
    hf: nn.Module, encoding: Encoding, position: Tensor, device: torch.device
) -> dict[int, DynamicCache | None]:
    """Per distinct p in `position` ([row]), the keys and values of positions 0..p-1 of the
    rows at p (None for p = 0), from one forward per p; `encoding` lives on `device`."""
    out: dict[int, DynamicCache | None] = {}
    for p in position.unique().tolist():
        rows = torch.nonzero(position == p).flatten().to(device)
        out[p] = (
            None
            if p == 0
            else output_cache(
                hf(
                    input_ids=encoding.input_ids[rows, :p],
                    attention_mask=encoding.attention_mask[rows, :p],
                    position_ids=encoding.position_ids[rows, :p],
                    use_cache=True,
                    logits_to_keep=1,
                )
            )
        )
    return out


def repeated_rows(cache: DynamicCache | None, repeats: int) -> DynamicCache | None:
    """A copy of `cache` with each row repeated `repeats` times (a forward extends its copy)."""
    if cache is None:
        return None
    copy = deepcopy(cache)
    copy.batch_repeat_interleave(repeats)
    return copy
