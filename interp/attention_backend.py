"""The attention implementations `interp.hooks.attention_hooks` installs in a model.

One per base kernel the model may run, "interp" over SDPA and "interp_eager" over the
model's own eager kernel, each with that kernel's mask function. A layer that some active
hook wants is computed by `interp.explicit_attention` with every argument its attention
passes (mask, ALiBi biases in the mask, softcap, learned sinks); one that no hook wants
goes to the base kernel with the same arguments and mask the plain model would use, so it
is bit-for-bit the plain forward. Models whose eager kernel does something SDPA cannot
(Gemma-2's softcap, gpt-oss's sinks) do not support SDPA in transformers, so they run on
"interp_eager" and no argument is ever dropped. An argument the explicit kernel does not
implement is refused in one line naming it and the model.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AttentionInterface, Cache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask, sdpa_mask

from interp.errors import HookError, UnsupportedModelError
from interp.explicit_attention import (
    AttentionHook,
    at_absolute_positions,
    explicit_attention,
    rows_edited,
)
from interp.kv_cache import dropped_positions, forward_cache

__all__ = [
    "ATTENTION_IMPLEMENTATION",
    "IMPLEMENTATIONS",
    "implementation_for",
    "inline_attention",
    "interface_check",
]

ATTENTION_IMPLEMENTATION = "interp"  # over SDPA
IMPLEMENTATIONS = {"sdpa": ATTENTION_IMPLEMENTATION, "eager": "interp_eager"}

# id(attention module) -> (layer index, hooks) for every model inside attention_hooks().
ACTIVE: dict[int, tuple[int, list[AttentionHook]]] = {}
# ids of the attention modules that called an "interp" implementation in their current
# forward (attention_hooks refuses a model whose attention never does).
REACHED: set[int] = set()
# id(attention module) -> the KV cache of its current forward (None: none).
CACHES: dict[int, Cache | None] = {}

# Keyword arguments the explicit kernel may ignore: the mask already holds what they say
# (sliding_window, position_ids), or they are the model forward's flags passed along.
_IMPLIED = frozenset(
    {
        "sliding_window",
        "position_ids",
        "output_attentions",
        "output_hidden_states",
        "output_router_logits",
        "use_cache",
        "num_items_in_batch",
        "logits_to_keep",  # LLaVA-OneVision passes its forward's along
    }
)
_IMPLEMENTED = frozenset({"softcap", "s_aux", "is_causal"})


def implementation_for(hf: nn.Module, outer: str) -> str:
    """The "interp" implementation to install over the model's own `outer` implementation.

    SDPA and eager are kept; any other kernel (flash, flex) is replaced by SDPA where the
    model supports it, else by its eager kernel, for the layers no hook wants.
    """
    if outer in IMPLEMENTATIONS:
        return IMPLEMENTATIONS[outer]
    return IMPLEMENTATIONS["sdpa" if getattr(hf, "_supports_sdpa", False) else "eager"]


def _eager_kernel(module: nn.Module) -> Callable[..., tuple[Tensor, Tensor | None]]:
    """The eager attention function of the module's own modeling file."""
    kernel = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if kernel is None:
        raise UnsupportedModelError(
            f"{type(module).__name__} has no eager_attention_forward in its modeling file;"
            " load the model with attn_implementation='sdpa' to use attention hooks."
        )
    return kernel


@contextmanager
def interface_check(hf: nn.Module, attention: nn.Module) -> Iterator[None]:
    """Refuse, after its forward, an attention module that never called the interface;
    keep its forward's cache meanwhile (the kernel reads which positions it dropped)."""

    def before(module: nn.Module, _args: tuple, kwargs: dict[str, Any]) -> None:
        REACHED.discard(id(module))
        CACHES[id(module)] = forward_cache(kwargs)

    def after(module: nn.Module, _args: tuple, _out: Any) -> None:
        CACHES.pop(id(module), None)  # hold no cache between forwards
        if id(module) not in REACHED:
            raise UnsupportedModelError(
                f"{type(hf).__name__} computes attention inside {type(module).__name__}"
                " without transformers' attention interface, so attention hooks cannot see"
                " it; head output, q/k/v, result and residual hooks work."
            )

    handles = [
        attention.register_forward_pre_hook(before, with_kwargs=True),
        attention.register_forward_hook(after),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        CACHES.pop(id(attention), None)


@contextmanager
def inline_attention(hf: nn.Module, attention: nn.Module) -> Iterator[None]:
    """Route GPT-Neo's inline attention through the explicit kernel while inside.

    GPT-Neo computes attention in `_attn(query, key, value, attention_mask)` without the
    attention interface: unscaled scores, its causal or local window in the bool `bias`
    buffer, the model's additive padding mask added. The instance's `_attn` is replaced by
    one that serves wanted layers explicitly (scale 1, both masks) and calls the original
    otherwise. BLOOM's attention forward is replaced likewise (`_bloom_attention`); other
    models are left alone.
    """
    model_type = getattr(hf.config.get_text_config(), "model_type", "")
    if model_type == "bloom":
        with _bloom_attention(attention):
            yield
        return
    if model_type != "gpt_neo":
        yield
        return
    own = attention._attn

    def _attn(query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None = None):
        REACHED.add(id(attention))
        entry = ACTIVE.get(id(attention))
        hooks = [h for h in entry[1] if h.wants(entry[0], query.shape[2])] if entry else []
        if not hooks:
            return own(query, key, value, attention_mask)
        if attention.training and attention.attn_dropout.p:
            raise HookError("Explicit attention does not apply attention dropout: call eval().")
        n_queries, n_keys = query.shape[-2], key.shape[-2]
        visible = attention.bias[:, :, n_keys - n_queries : n_keys, :n_keys]
        if attention_mask is not None:
            padding = attention_mask
            if padding.dtype != torch.bool:
                padding = padding > torch.finfo(padding.dtype).min / 2
            visible = visible & padding
        out = explicit_attention(entry[0], hooks, query, key, value, visible, 1.0, True)  # type: ignore[index]
        return with_base_rows(
            hooks, entry[0], out.transpose(1, 2), lambda: own(query, key, value, attention_mask)[0]
        ), None

    attention._attn = _attn
    try:
        yield
    finally:
        del attention._attn  # the class's method again


@contextmanager
def _bloom_attention(attention: nn.Module) -> Iterator[None]:
    """BLOOM's attention forward, with wanted layers computed by the explicit kernel.

    As BloomAttention.forward: the fused QKV split per head (`_reshape`), the cache, scores
    alpha·q·kᵀ + beta·ALiBi plus the additive mask, softmax, A·V, the dense projection and
    the residual added inside. The ALiBi bias goes to the kernel as a per-head additive mask.
    """
    own = attention.forward
    dropout_add = sys.modules[type(attention).__module__].dropout_add

    def forward(
        hidden_states: Tensor,
        residual: Tensor,
        alibi: Tensor,
        attention_mask: Tensor | None,
        layer_past: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> tuple[Tensor, None]:
        REACHED.add(id(attention))
        entry = ACTIVE.get(id(attention))
        n_queries = hidden_states.shape[1]
        hooks = [h for h in entry[1] if h.wants(entry[0], n_queries)] if entry else []
        if not hooks:
            return own(hidden_states, residual, alibi, attention_mask, layer_past, *args, **kwargs)
        if attention.training or (attention.pretraining_tp > 1 and attention.slow_but_exact):
            raise HookError(
                "Explicit attention on BLOOM needs eval mode and pretraining_tp 1 (or"
                " slow_but_exact off)."
            )
        query, key, value = attention._reshape(attention.query_key_value(hidden_states))
        if layer_past is not None:
            key, value = layer_past.update(key, value, attention.layer_idx)
        batch, n_heads = query.shape[:2]
        if attention_mask is None or attention_mask.dtype == torch.bool:
            # BLOOM runs eager only, whose masks are always additive floats.
            raise HookError("BLOOM's explicit attention needs the eager (additive) mask.")
        bias = attention.beta * alibi.view(batch, n_heads, 1, -1) + attention_mask
        layer = entry[0]  # type: ignore[index]
        scale = attention.inv_norm_factor
        edited = rows_edited(hooks, layer)
        if edited is not None and not bool(edited.all()):  # own() would update the cache
            raise UnsupportedModelError("Per-row attention edits are not supported on BLOOM.")
        out = explicit_attention(layer, hooks, query, key, value, bias, scale, True)
        context = attention.dense(out.reshape(batch, n_queries, -1))
        return dropout_add(context, residual, attention.hidden_dropout, False), None

    attention.forward = forward
    try:
        yield
    finally:
        del attention.forward  # the class's forward again


def _model_name(module: nn.Module) -> str:
    config = getattr(module, "config", None)
    return getattr(config, "model_type", None) or type(module).__name__


def _interp_attention(
    base: str,
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Tensor, Tensor | None]:
    REACHED.add(id(module))
    entry = ACTIVE.get(id(module))
    n_queries = query.shape[2]
    hooks = [h for h in entry[1] if h.wants(entry[0], n_queries)] if entry else []

    def own() -> tuple[Tensor, Tensor | None]:
        kernel = sdpa_attention_forward if base == "sdpa" else _eager_kernel(module)
        return kernel(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )

    if not hooks:
        return own()
    unknown = [k for k, v in kwargs.items() if v is not None and k not in _IMPLIED | _IMPLEMENTED]
    if unknown:
        raise UnsupportedModelError(
            f"Explicit attention does not implement the argument {unknown[0]!r} that"
            f" {_model_name(module)} passes to its attention, so attention hooks refuse it."
        )
    if dropout:
        raise HookError(
            f"Explicit attention does not apply attention dropout ({type(module).__name__} is"
            " in training mode): put the model in eval mode or use head_output_hooks."
        )
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    causal = kwargs.get("is_causal")
    causal = getattr(module, "is_causal", True) if causal is None else causal
    layer = entry[0]  # type: ignore[index]
    keys, values, mask = key, value, attention_mask
    cache_layer = getattr(module, "layer_idx", layer)
    dropped = dropped_positions(CACHES.get(id(module)), cache_layer, key.shape[2])
    if dropped:  # a sliding window's decode step: hooks see keys at their positions
        keys, values, mask = at_absolute_positions(key, value, mask, causal, n_queries, dropped)
    out = explicit_attention(
        layer,
        hooks,
        query,
        keys,
        values,
        mask,
        scale,
        causal,
        softcap=kwargs.get("softcap"),
        sinks=kwargs.get("s_aux"),
    )
    return with_base_rows(hooks, layer, out, lambda: own()[0]), None


def with_base_rows(
    hooks: list[AttentionHook], layer: int, explicit: Tensor, base: Callable[[], Tensor]
) -> Tensor:
    """`explicit` in the batch rows some hook edits, the model's own kernel (`base`) elsewhere.

    So a row that no hook edits in this layer computes exactly the plain forward's output,
    whatever other rows of its batch edit (`interp.explicit_attention.RowsHook`).
    """
    edited = rows_edited(hooks, layer)
    if edited is None or bool(edited.all()):
        return explicit
    if edited.shape[0] != explicit.shape[0]:
        raise HookError(
            f"A per-row attention edit lists {edited.shape[0]} rows; the batch has"
            f" {explicit.shape[0]}."
        )
    chosen = edited.to(explicit.device).view(-1, *[1] * (explicit.ndim - 1))
    return torch.where(chosen, explicit, base())


def _register(base: str, name: str, mask: Callable[..., Any]) -> None:
    def interp_attention(*args: Any, **kwargs: Any) -> tuple[Tensor, Tensor | None]:
        return _interp_attention(base, *args, **kwargs)

    AttentionInterface.register(name, interp_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, mask)


_register("sdpa", IMPLEMENTATIONS["sdpa"], sdpa_mask)
_register("eager", IMPLEMENTATIONS["eager"], eager_mask)
