"""The one place that touches model internals: attention rows, head outputs, residuals.

Three hook families, each a context manager that removes everything it installed in
`finally` (exceptions and Ctrl-C included) and that nests:

* `attention_hooks(model, *hooks)`: the model runs through a registered HF attention
  function ("interp"). Layers no hook wants go straight to SDPA (the fast kernel). For a
  wanted layer the function computes post-softmax probabilities explicitly, in float32, for
  blocks of query rows, lets each hook read or replace them *between softmax and A·V*, and
  multiplies by V. Memory per layer is O(batch · heads · block · keys), never all layers'
  [query, key] patterns, so it grows linearly with context for a fixed block budget. A decode
  step (one query row) costs one [heads, keys] row per wanted layer.
* `head_output_hooks(model, fn)`: reads or replaces z, the per-head output before the
  output projection ([batch, pos, head, d_head], TransformerLens `hook_z`), through a
  pre-hook on the output projection. Works with any attention kernel.
* `residual_hooks(model, fn)`: reads or replaces the residual stream entering a decoder
  layer (TransformerLens `hook_resid_pre`), unprocessed (no folding or centring).

Module paths per architecture live in the `LAYOUTS` table; other HF causal LMs are found by
looking for the decoder-layer list.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from functools import reduce
from typing import Any, Protocol

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from interp.errors import HookError, UnsupportedModelError
from interp.models import geometry_of

ATTENTION_IMPLEMENTATION = "interp"
# Budget for one block of float32 scores [batch, head, query rows, key]: the peak extra
# memory of explicit attention is a small multiple of it, whatever the context length.
_BLOCK_BYTES = int(os.environ.get("INTERP_ATTENTION_BLOCK_BYTES", 64 * 2**20))


@dataclass(frozen=True)
class Layout:
    """Where a decoder's parts live, as dotted attribute paths."""

    layers: str  # the ModuleList of decoder layers, from the top model
    attention: str  # the attention module, from a decoder layer
    out_proj: str  # the output projection (input = concatenated z), from the attention


_LLAMA_LIKE = Layout("model.layers", "self_attn", "o_proj")
LAYOUTS: dict[str, Layout] = {
    **dict.fromkeys(
        [
            "llama",
            "mistral",
            "mixtral",
            "qwen2",
            "qwen3",
            "qwen3_moe",
            "gemma",
            "gemma2",
            "gemma3_text",
            "olmo",
            "olmo2",
            "phi3",
            "granite",
            "smollm3",
        ],
        _LLAMA_LIKE,
    ),
    "gpt2": Layout("transformer.h", "attn", "c_proj"),
    "llava": Layout("model.language_model.layers", "self_attn", "o_proj"),
    "llava_next": Layout("model.language_model.layers", "self_attn", "o_proj"),
    "idefics3": Layout("model.text_model.layers", "self_attn", "o_proj"),
    "smolvlm": Layout("model.text_model.layers", "self_attn", "o_proj"),
    "qwen2_5_vl": Layout("model.language_model.layers", "self_attn", "o_proj"),
}


def _get(module: nn.Module, path: str) -> Any:
    return reduce(getattr, path.split("."), module)


def layout_of(hf: nn.Module) -> Layout:
    """The layout of `hf`: from the table, else found by searching for the decoder layers."""
    model_type = getattr(hf.config, "model_type", "")
    if model_type in LAYOUTS:
        return LAYOUTS[model_type]
    for name, module in hf.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and hasattr(module[0], "self_attn"):
            attention = module[0].self_attn
            for out_proj in ("o_proj", "out_proj", "dense"):
                if hasattr(attention, out_proj):
                    return Layout(name, "self_attn", out_proj)
    raise UnsupportedModelError(
        f"Cannot find the decoder layers of {type(hf).__name__} (model_type {model_type!r})."
        f" Add its module paths to interp.hooks.LAYOUTS; known types: {', '.join(sorted(LAYOUTS))}."
    )


def decoder_layers(hf: nn.Module) -> nn.ModuleList:
    return _get(hf, layout_of(hf).layers)


# ----------------------------------------------------------------------------------------
# Attention rows


@dataclass(frozen=True)
class AttentionRows:
    """Post-softmax attention of one layer for a block of query rows.

    Attributes:
        layer: decoder layer index.
        probs: [batch, head, query, key] float32, rows sum to 1 over visible keys.
        query_positions: [query] index of each query row on the key axis (cache included).
        visible: [batch, query, key] True where the key is visible to the query
            (causal mask and padding applied).
        n_queries: number of query rows in this forward (1 at a decode step).
    """

    layer: int
    probs: Float[Tensor, "batch head query key"]
    query_positions: Tensor
    visible: Bool[Tensor, "batch query key"]
    n_queries: int

    @property
    def is_decode(self) -> bool:
        return self.n_queries == 1


class AttentionHook(Protocol):
    """Reads, and optionally replaces, attention probabilities of the layers it wants."""

    def wants(self, layer: int, n_queries: int) -> bool:
        """Whether to compute explicit rows for `layer` in a forward with `n_queries` rows."""
        ...

    def __call__(self, rows: AttentionRows) -> Tensor | None:
        """Return replacement probs [batch, head, query, key] or None to leave them."""
        ...


# id(attention module) -> (layer index, hooks) for every model inside attention_hooks().
_ACTIVE: dict[int, tuple[int, list[AttentionHook]]] = {}


def _interp_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    entry = _ACTIVE.get(id(module))
    n_queries = query.shape[2]
    hooks = [h for h in entry[1] if h.wants(entry[0], n_queries)] if entry else []
    if not hooks:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    unsupported = [k for k in ("softcap", "s_aux", "sinks") if kwargs.get(k) is not None]
    if unsupported or dropout:
        raise HookError(
            f"Explicit attention does not support {unsupported or 'dropout'} yet"
            f" ({type(module).__name__}); put the model in eval mode or use head_output_hooks."
        )
    causal = getattr(module, "is_causal", True)
    return _explicit_attention(
        entry[0], hooks, query, key, value, attention_mask, scaling, causal
    ), None


def _explicit_attention(
    layer: int,
    hooks: list[AttentionHook],
    query: Float[Tensor, "batch head query d_head"],
    key: Float[Tensor, "batch kv_head key d_head"],
    value: Float[Tensor, "batch kv_head key d_head"],
    attention_mask: Tensor | None,
    scaling: float | None,
    causal: bool,
) -> Float[Tensor, "batch query head d_head"]:
    batch, n_heads, n_queries, d_head = query.shape
    n_kv, n_keys = key.shape[1], key.shape[2]
    group = n_heads // n_kv
    scale = scaling if scaling is not None else d_head**-0.5
    # Query heads h = kv * group + j share kv head `kv` (HF repeat_kv order): group them
    # instead of copying K and V `group` times.
    grouped_q = query.reshape(batch, n_kv, group, n_queries, d_head)
    key32, value32 = key.float(), value.float()
    out = query.new_empty(batch, n_queries, n_heads, value.shape[-1])
    offset = n_keys - n_queries  # queries are the last n_queries positions of the key axis
    key_index = torch.arange(n_keys, device=query.device)
    block = max(1, _BLOCK_BYTES // max(1, 4 * batch * n_heads * n_keys))
    for start in range(0, n_queries, block):
        stop = min(n_queries, start + block)
        positions = torch.arange(start + offset, stop + offset, device=query.device)
        visible = _visible(attention_mask, positions, key_index, start, stop, batch, causal)
        scores = torch.einsum("bkgqd,bksd->bkgqs", grouped_q[:, :, :, start:stop].float(), key32)
        scores = scores.reshape(batch, n_heads, stop - start, n_keys) * scale
        scores.masked_fill_(~visible[:, None], float("-inf"))
        # A fully padded query row has no visible key: give it zeros, not NaN.
        probs = torch.softmax(scores, dim=-1).nan_to_num_(0.0)
        del scores
        rows = AttentionRows(layer, probs, positions, visible, n_queries)
        for hook in hooks:
            edited = hook(rows)
            if edited is not None:
                rows = replace(rows, probs=edited)
        mixed = torch.einsum(
            "bkgqs,bksd->bqkgd",
            rows.probs.reshape(batch, n_kv, group, stop - start, n_keys),
            value32,
        )
        out[:, start:stop] = mixed.reshape(batch, stop - start, n_heads, -1).to(out.dtype)
    return out


def _visible(
    attention_mask: Tensor | None,
    positions: Tensor,
    key_index: Tensor,
    start: int,
    stop: int,
    batch: int,
    causal: bool,
) -> Bool[Tensor, "batch query key"]:
    """Which keys each query row sees, from HF's 4D mask or, when SDPA skipped it, causality."""
    if attention_mask is None:
        if not causal:
            return torch.ones(
                batch, len(positions), len(key_index), dtype=torch.bool, device=positions.device
            )
        return (key_index[None, :] <= positions[:, None]).expand(batch, -1, -1)
    rows = attention_mask[:, 0, start:stop, : len(key_index)]
    if rows.dtype != torch.bool:  # additive float mask: 0 where visible
        rows = rows == 0
    return rows.expand(batch, -1, -1)


AttentionInterface.register(ATTENTION_IMPLEMENTATION, _interp_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION_IMPLEMENTATION, sdpa_mask)


@contextmanager
def attention_hooks(hf: nn.Module, *hooks: AttentionHook) -> Iterator[None]:
    """Run `hf` with explicit attention rows for the layers the hooks want.

    Inside the context the model's attention implementation is "interp" (SDPA for layers no
    hook wants); on exit the previous implementation and hook set are restored.

    Example:
        >>> with attention_hooks(model.hf, my_hook):  # doctest: +SKIP
        ...     model.hf(input_ids)
    """
    attentions = [_get(layer, layout_of(hf).attention) for layer in decoder_layers(hf)]
    previous = {id(a): _ACTIVE.get(id(a)) for a in attentions}
    old_impl = hf.config._attn_implementation
    try:
        for index, attention in enumerate(attentions):
            before = previous[id(attention)]
            _ACTIVE[id(attention)] = (index, [*(before[1] if before else []), *hooks])
        if old_impl != ATTENTION_IMPLEMENTATION:
            hf.set_attn_implementation(ATTENTION_IMPLEMENTATION)
        yield
    finally:
        for attention in attentions:
            before = previous[id(attention)]
            if before is None:
                _ACTIVE.pop(id(attention), None)
            else:
                _ACTIVE[id(attention)] = before
        if hf.config._attn_implementation != old_impl:
            hf.set_attn_implementation(old_impl)


# ----------------------------------------------------------------------------------------
# Head outputs and residual stream

HeadOutputFn = Callable[[int, Float[Tensor, "batch pos head d_head"]], Tensor | None]
ResidualFn = Callable[[int, Float[Tensor, "batch pos d_model"]], Tensor | None]


@contextmanager
def head_output_hooks(
    hf: nn.Module, fn: HeadOutputFn, layers: list[int] | None = None
) -> Iterator[None]:
    """Call `fn(layer, z)` on every per-head output z [batch, pos, head, d_head].

    `fn` returns a replacement z or None. z is the input of the output projection, so
    scaling it scales exactly the head's contribution (the bias is added after the sum).
    """
    layout = layout_of(hf)
    modules = decoder_layers(hf)
    wanted = range(len(modules)) if layers is None else layers
    n_heads = geometry_of(hf).n_heads

    def pre_hook(layer: int) -> Callable[..., Any]:
        def hook(_module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...] | None:
            x = args[0]
            z = x.reshape(*x.shape[:-1], n_heads, x.shape[-1] // n_heads)
            new = fn(layer, z)
            return None if new is None else (new.reshape(x.shape), *args[1:])

        return hook

    with ExitStack() as stack:
        for layer in wanted:
            proj = _get(_get(modules[layer], layout.attention), layout.out_proj)
            stack.callback(proj.register_forward_pre_hook(pre_hook(layer)).remove)
        yield


@contextmanager
def residual_hooks(
    hf: nn.Module, fn: ResidualFn, layers: list[int] | None = None
) -> Iterator[None]:
    """Call `fn(layer, x)` on the residual stream x [batch, pos, d_model] entering each layer."""
    modules = decoder_layers(hf)
    wanted = range(len(modules)) if layers is None else layers

    def pre_hook(layer: int) -> Callable[..., Any]:
        def hook(_m: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            in_kwargs = "hidden_states" in kwargs
            x = kwargs["hidden_states"] if in_kwargs else args[0]
            new = fn(layer, x)
            if new is None:
                return None
            if in_kwargs:
                return args, {**kwargs, "hidden_states": new}
            return (new, *args[1:]), kwargs

        return hook

    with ExitStack() as stack:
        for layer in wanted:
            handle = modules[layer].register_forward_pre_hook(pre_hook(layer), with_kwargs=True)
            stack.callback(handle.remove)
        yield


# ----------------------------------------------------------------------------------------
# Running the decoder from a layer

# Model types whose decoder forward is plain: `hidden = inputs_embeds` (no scaling, no
# position embedding added), rotary angles from `position_ids`, one mask for every layer,
# then the layers in order. For these, `inputs_embeds` = the resid_pre of layer l, fed to
# the layer list cut to layers[l:], reproduces the full forward from layer l on.
_RESUMABLE = frozenset({"llama", "mistral", "mixtral", "olmo", "olmo2", "phi3", "qwen3_moe"})
# These index a per-layer mask by position in the layer list: right only if all are alike.
_RESUMABLE_UNIFORM_LAYERS = frozenset({"qwen2", "qwen3", "smollm3"})


def check_resumable(hf: nn.Module) -> None:
    """Raise UnsupportedModelError unless `decoder_from` is exact for `hf`'s architecture."""
    config = hf.config
    model_type = getattr(config, "model_type", "")
    uniform = len(set(getattr(config, "layer_types", None) or ["one"])) == 1
    if model_type in _RESUMABLE or (model_type in _RESUMABLE_UNIFORM_LAYERS and uniform):
        return
    raise UnsupportedModelError(
        f"Cannot start {type(hf).__name__} (model_type {model_type!r}) at a middle layer:"
        " its forward scales or adds to inputs_embeds, or picks masks by layer position."
        f" Supported: {', '.join(sorted(_RESUMABLE | _RESUMABLE_UNIFORM_LAYERS))}."
    )


@contextmanager
def decoder_from(hf: nn.Module, start: int, stop: int | None = None) -> Iterator[None]:
    """Inside, `hf(inputs_embeds=resid_pre, ...)` runs only decoder layers start..stop-1.

    Pass the resid_pre of layer `start` (see `residual_hooks`) as `inputs_embeds`, with the
    attention mask and position ids of the original forward, and `use_cache=False`; the
    logits are those of the full forward, computed from layer `start` on (up to float
    reordering in batched kernels). With `stop`, the later layers are skipped and the logits
    are meaningless; use it to read attention in layers before `stop`.

    Enter `attention_hooks` and `residual_hooks` *outside* this context: they number layers
    by the full list. The layer list is restored in `finally`.

    Raises:
        UnsupportedModelError: the architecture's forward does more than embed then layers.
    """
    check_resumable(hf)
    layers = decoder_layers(hf)
    if not 0 <= start < len(layers) or (stop is not None and not start < stop <= len(layers)):
        raise HookError(f"Cannot run layers {start}..{stop} of a {len(layers)}-layer decoder.")
    parent_path, _, name = layout_of(hf).layers.rpartition(".")
    parent = _get(hf, parent_path) if parent_path else hf
    setattr(parent, name, nn.ModuleList(list(layers)[start:stop]))
    try:
        yield
    finally:
        setattr(parent, name, layers)
