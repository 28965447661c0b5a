"""The KV cache is found by its type: decode steps are seen under either argument name."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import DynamicCache

from interp import attention_backend
from interp.hooks import attention_hooks
from interp.kv_cache import (
    cache_kwargs,
    dropped_positions,
    forward_cache,
    is_decode_step,
    output_cache,
    without_cache,
)
from interp.models import Model


def _filled(model: Model) -> DynamicCache:
    with torch.no_grad():
        return output_cache(model.hf(model.encode("hello there").input_ids, use_cache=True))


@pytest.mark.parametrize("name", ["past_key_values", "cache", "some_future_name"])
def test_a_filled_cache_is_a_decode_step_under_any_name(tiny: Model, name: str) -> None:
    cache = _filled(tiny)
    assert cache.get_seq_length() > 0
    kwargs = {"input_ids": torch.ones(1, 1, dtype=torch.long), name: cache}
    assert forward_cache(kwargs) is cache
    assert is_decode_step(kwargs)
    assert not is_decode_step({"input_ids": kwargs["input_ids"], name: DynamicCache()})
    assert not is_decode_step({"input_ids": kwargs["input_ids"], "past_key_values": None})


def test_without_cache_drops_the_cache_and_stops_caching(tiny: Model) -> None:
    kwargs = {"input_ids": 1, "cache": _filled(tiny), "use_cache": True}
    assert without_cache(kwargs) == {"input_ids": 1, "use_cache": False}
    assert "cache" in kwargs  # the caller's kwargs are left as they were


def test_cache_kwargs_names_the_argument_the_forward_declares(tiny: Model) -> None:
    class Old(nn.Module):
        def forward(self, x, past_key_values=None):
            return x

    class New(nn.Module):
        def forward(self, x, cache=None):
            return x

    cache = DynamicCache()
    assert cache_kwargs(Old(), cache) == {"past_key_values": cache}
    assert cache_kwargs(New(), cache) == {"cache": cache}
    # Through the model's own argument, a decode step extends the cache by one position.
    filled = _filled(tiny)
    before = filled.get_seq_length()
    with torch.no_grad():
        tiny.hf(torch.ones(1, 1, dtype=torch.long), **cache_kwargs(tiny.hf, filled))
    assert filled.get_seq_length() == before + 1


def test_dropped_positions_count_what_a_sliding_window_no_longer_holds(tiny: Model) -> None:
    full = _filled(tiny)
    n = full.get_seq_length()
    assert dropped_positions(full, 0, n) == 0  # a layer that keeps every key
    assert dropped_positions(full, 0, 4) == n - 4  # a window of 4 keys at this step
    assert dropped_positions(None, 0, 4) == 0
    assert dropped_positions(full, len(full.layers), 4) == 0  # a layer the cache lacks


def test_attention_hooks_hold_no_cache_between_forwards(tiny: Model) -> None:
    cache = _filled(tiny)
    seen: list[int] = []

    class Reads:
        def wants(self, layer: int, n_queries: int) -> bool:
            seen.append(len(attention_backend.CACHES))
            return False

    with torch.no_grad(), attention_hooks(tiny.hf, Reads()):
        tiny.hf(torch.ones(1, 1, dtype=torch.long), **cache_kwargs(tiny.hf, cache), use_cache=True)
        assert seen and min(seen) >= 1  # each layer's forward had its cache at hand
        assert not attention_backend.CACHES  # and let it go after its forward
