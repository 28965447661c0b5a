"""The KV cache is found by its type: decode steps are seen under either argument name."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import DynamicCache

from interp.kv_cache import (
    cache_kwargs,
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
