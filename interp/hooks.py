"""The one place that touches model internals: attention rows, head outputs, residuals.

Seven hook families, each a context manager that removes everything it installed in
`finally` (exceptions and Ctrl-C included) and that nests:

* `attention_hooks(model, *hooks)`: the model runs through a registered HF attention
  function (`interp.attention_backend`). Layers no hook wants go to the model's own kernel
  (SDPA or eager) with the same arguments, bit-for-bit the plain forward. For a
  wanted layer `interp.explicit_attention` computes post-softmax probabilities in float32
  for blocks of query rows, each over the keys the block can see (`AttentionRows`), lets
  each hook read or replace them *between softmax and A·V*, and multiplies by V. Memory per
  layer is one block's [batch, heads, block rows, keys], never all layers' [query, key]
  patterns, so it grows linearly with context for a fixed block budget. A decode step (one
  query row) costs one [heads, keys] row per wanted layer. A hook whose edit needs all of a
  layer's rows first (`PrepassHook`) gets a first pass over them.
* `head_output_hooks(model, fn)`: reads or replaces z, the per-head output before the
  output projection ([batch, pos, head, d_head], TransformerLens `hook_z`), through a
  pre-hook on the output projection. Works with any attention kernel.
* `residual_hooks(model, fn)`: reads or replaces the residual stream entering a decoder
  layer (TransformerLens `hook_resid_pre`), unprocessed (no folding or centring).
* `qkv_hooks(model, fn)`: reads or replaces per-head q, k and v ([batch, pos, head or KV
  head, d_head], TransformerLens `hook_q`/`hook_k`/`hook_v`) through forward hooks on the
  q/k/v projections: before rotary, and before the per-head norm some models have.
* `head_result_hooks(model, fn)`: reads or replaces each head's write into the residual
  stream, z_h·W_O,h ([batch, pos, head, d_model], TransformerLens `hook_result`).
* `output_hooks(model, fn, part)`: reads or replaces the output of a decoder layer, its
  attention or its MLP ([batch, pos, d_model]; TransformerLens `hook_resid_post`,
  `hook_attn_out`, `hook_mlp_out`).
* `decoder_input_hooks(model, fn)`: reads or replaces the keyword arguments of the decoder
  (the module holding the layers: a VLM's language model), after a VLM has merged its
  image features into `inputs_embeds`, and may run the decoder itself on other inputs.
  `model_input_hooks(model, fn)` reads the inputs of the base model, before that merge.

The hooks layer (`HOOKS_LAYER`) is this module and the modules it owns for the purpose, the
only ones that read model internals (private attributes of transformers or accelerate, a KV
cache's contents, per-architecture module paths and branches); every other module asks them
through named functions, and tests/test_hooks_layer.py checks that it does:

* `interp.layouts`: per-architecture module paths, found from the modules, and a head's
  OV path (`ov_path`);
* `interp.attention_backend`: the attention function the attention hooks register;
* `interp.explicit_attention`: the block-wise attention the hooks read and edit;
* `interp.kv_cache`: a forward's cache found by its type, decode steps by its state, a
  cache's per-layer keys and values;
* `interp.midway`: running the decoder from a middle layer;
* `interp.hf_internals`: accelerate's per-module hook, transformers' private config fields;
* `interp.image_layouts`: per-architecture facts of a VLM's image inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from interp.attention_backend import ACTIVE as _ACTIVE
from interp.attention_backend import (
    ATTENTION_IMPLEMENTATION,
    implementation_for,
    inline_attention,
    interface_check,
)
from interp.errors import HookError
from interp.explicit_attention import AttentionHook, AttentionRows, PrepassHook
from interp.heads import geometry_of
from interp.layouts import (
    Layout,
    check_mlp,
    decoder_layers,
    fused_split,
    layout_of,
    projection,
)
from interp.layouts import get_path as _get

# The hooks layer: the only modules that may read model internals (tests/test_hooks_layer.py).
HOOKS_LAYER = (
    "interp.hooks",
    "interp.kv_cache",
    "interp.layouts",
    "interp.attention_backend",
    "interp.explicit_attention",
    "interp.midway",
    "interp.hf_internals",
    "interp.image_layouts",
)

__all__ = [
    "ATTENTION_IMPLEMENTATION",
    "HOOKS_LAYER",
    "AttentionHook",
    "AttentionRows",
    "Layout",
    "PrepassHook",
    "attention_hooks",
    "decoder_input_hooks",
    "decoder_layers",
    "head_output_hooks",
    "head_result_hooks",
    "layout_of",
    "model_input_hooks",
    "output_hooks",
    "qkv_hooks",
    "residual_hooks",
]

# ----------------------------------------------------------------------------------------
# Attention hooks

# id(model) -> (its attention implementation before the first open context, open contexts).
_OUTER_IMPLEMENTATION: dict[int, tuple[str, int]] = {}


def _without(active: list[AttentionHook], mine: tuple[AttentionHook, ...]) -> list[AttentionHook]:
    """`active` less one occurrence (by identity) of each of `mine`."""
    remaining = list(active)
    for hook in mine:
        found = next((i for i, h in enumerate(remaining) if h is hook), None)
        if found is not None:
            del remaining[found]
    return remaining


@contextmanager
def attention_hooks(hf: nn.Module, *hooks: AttentionHook) -> Iterator[None]:
    """Run `hf` with explicit attention rows for the layers the hooks want.

    Inside the context the model's attention implementation is an "interp" one over its own
    kernel (which serves the layers no hook wants). On exit this context's hooks are
    removed, and the model's own implementation returns once its last open context closes,
    in whatever order they close.

    Raises:
        UnsupportedModelError: in a forward, when a layer's attention does not go through
            transformers' attention interface (BLOOM computes it inline; GPT-Neo's inline
            attention is adapted by `interp.attention_backend.inline_attention`).

    Example:
        >>> with attention_hooks(model.hf, my_hook):  # doctest: +SKIP
        ...     model.hf(input_ids)
    """
    attentions = [_get(layer, layout_of(hf).attention) for layer in decoder_layers(hf)]
    # Each context adds its own hooks and, on exit, removes exactly those: contexts may close
    # in any order (an ExitStack unwound by hand, a generator closed late) and the model is
    # left with the hooks of the contexts still open, in the kernel they need.
    outer, depth = _OUTER_IMPLEMENTATION.get(id(hf), (hf.config._attn_implementation, 0))
    _OUTER_IMPLEMENTATION[id(hf)] = (outer, depth + 1)
    implementation = implementation_for(hf, outer)
    try:
        with ExitStack() as stack:
            for index, attention in enumerate(attentions):
                _ACTIVE.setdefault(id(attention), (index, []))[1].extend(hooks)
                stack.enter_context(interface_check(hf, attention))
                stack.enter_context(inline_attention(hf, attention))
            if hf.config._attn_implementation != implementation:
                hf.set_attn_implementation(implementation)
            yield
    finally:
        for attention in attentions:
            entry = _ACTIVE.get(id(attention))
            if entry is None:
                continue
            remaining = _without(entry[1], hooks)
            if remaining:
                _ACTIVE[id(attention)] = (entry[0], remaining)
            else:
                del _ACTIVE[id(attention)]
        outer, depth = _OUTER_IMPLEMENTATION.pop(id(hf))
        if depth > 1:
            _OUTER_IMPLEMENTATION[id(hf)] = (outer, depth - 1)
        elif hf.config._attn_implementation != outer:
            hf.set_attn_implementation(outer)


# ----------------------------------------------------------------------------------------
# Head outputs and residual stream

HeadOutputFn = Callable[[int, Float[Tensor, "batch pos head d_head"]], Tensor | None]
ResidualFn = Callable[[int, Float[Tensor, "batch pos d_model"]], Tensor | None]
ResultFn = Callable[[int, Float[Tensor, "batch pos head d_model"]], Tensor | None]
OutputPart = Literal["layer", "attention", "mlp"]
QKVKind = Literal["q", "k", "v"]
QKVFn = Callable[[int, QKVKind, Float[Tensor, "batch pos head d_head"]], Tensor | None]


@contextmanager
def head_output_hooks(
    hf: nn.Module, fn: HeadOutputFn, layers: list[int] | None = None
) -> Iterator[None]:
    """Call `fn(layer, z)` on every per-head output z [batch, pos, head, d_head].

    `fn` returns a replacement z or None. z is the input of the output projection, so
    scaling it scales exactly the head's contribution (the bias is added after the sum).
    """
    n_heads = geometry_of(hf).n_heads

    def pre_hook(layer: int) -> Callable[..., Any]:
        def hook(_module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...] | None:
            x = args[0]
            z = x.reshape(*x.shape[:-1], n_heads, x.shape[-1] // n_heads)
            new = fn(layer, z)
            return None if new is None else (new.reshape(x.shape), *args[1:])

        return hook

    with ExitStack() as stack:
        for layer, proj in _output_projections(hf, layers):
            stack.callback(proj.register_forward_pre_hook(pre_hook(layer)).remove)
        yield


def _output_projections(hf: nn.Module, layers: list[int] | None) -> list[tuple[int, nn.Module]]:
    """(layer, attention output projection) of each wanted layer (all when None)."""
    layout = layout_of(hf)
    modules = decoder_layers(hf)
    wanted = range(len(modules)) if layers is None else layers
    return [(i, _get(_get(modules[i], layout.attention), layout.out_proj)) for i in wanted]


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


@contextmanager
def qkv_hooks(hf: nn.Module, fn: QKVFn, layers: list[int] | None = None) -> Iterator[None]:
    """Call `fn(layer, kind, x)` on per-head q, k and v of each wanted layer.

    x is a projection's output split into heads, [batch, pos, head, d_head]: n_heads for
    "q", n_kv_heads for "k" and "v" (under GQA a KV head serves a whole group, so editing
    it edits every query head of the group). It is taken before rotary and before the
    per-head q/k norm of Qwen3, Gemma3 and OLMo2 (TransformerLens `hook_q`/`hook_k`/
    `hook_v`). `fn` returns a replacement of x's shape or None; replacements keep the
    autograd graph, so gradients flow through them when grad is enabled. A fused
    projection (GPT-2's c_attn, GPT-NeoX's query_key_value) is split into q, k, v as the
    model splits it (`interp.layouts.fused_split`) and re-joined after `fn`.
    """
    layout = layout_of(hf)
    modules = decoder_layers(hf)
    wanted = range(len(modules)) if layers is None else layers
    geometry = geometry_of(hf)
    heads = {"q": geometry.n_heads, "k": geometry.n_kv_heads, "v": geometry.n_kv_heads}

    def call(layer: int, kind: QKVKind, out: Tensor) -> Tensor | None:
        width = geometry.d_head if kind == "v" else geometry.d_query_key
        x = out.reshape(*out.shape[:2], heads[kind], width)
        new = fn(layer, kind, x)
        return None if new is None else new.reshape(out.shape)

    def hook(layer: int, kind: QKVKind) -> Callable[..., Any]:
        def forward_hook(_module: nn.Module, _args: tuple, out: Tensor) -> Tensor | None:
            return call(layer, kind, out)

        return forward_hook

    def fused_hook(layer: int, attention: nn.Module) -> Callable[..., Any]:
        kinds: tuple[QKVKind, ...] = ("q", "k", "v")
        split = fused_split(hf, attention, geometry.n_heads, geometry.n_kv_heads, geometry.d_head)
        flat = [index.reshape(-1) for index in split]

        def forward_hook(_module: nn.Module, _args: tuple, out: Tensor) -> Tensor | None:
            index = [i.to(out.device) for i in flat]
            parts = [out[..., i] for i in index]
            new = [call(layer, kind, part) for kind, part in zip(kinds, parts, strict=True)]
            if all(n is None for n in new):
                return None
            joined = out.clone()
            for i, part in zip(index, new, strict=True):
                if part is not None:
                    joined[..., i] = part
            return joined

        return forward_hook

    with ExitStack() as stack:
        for layer in wanted:
            attention = _get(modules[layer], layout.attention)
            if layout.fused_qkv:
                fused = projection(attention, layout.q)
                handle = fused.register_forward_hook(fused_hook(layer, attention))
                stack.callback(handle.remove)
                continue
            for kind in ("q", "k", "v"):
                module = projection(attention, getattr(layout, kind))
                stack.callback(module.register_forward_hook(hook(layer, kind)).remove)
        yield


@contextmanager
def head_result_hooks(
    hf: nn.Module, fn: ResultFn, layers: list[int] | None = None
) -> Iterator[None]:
    """Call `fn(layer, result)` on each head's output after its slice of the projection.

    result[b, p, h] = z[b, p, h] @ W_O[h] ([batch, pos, head, d_model]), whose sum over
    heads plus the bias is the attention output. `fn` returns a replacement or None; on a
    replacement the projection's output becomes its sum over heads plus the bias. Reading
    leaves the output untouched (the projection's own product, not the sum, so a read is
    exact). Memory: one [batch, pos, head, d_model] tensor per hooked layer and forward.
    """
    geometry = geometry_of(hf)
    shape = (geometry.n_heads, geometry.d_head, geometry.d_model)

    def forward_hook(layer: int) -> Callable[..., Any]:
        def hook(proj: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor | None:
            x = args[0]
            z = x.reshape(*x.shape[:-1], geometry.n_heads, geometry.d_head)
            # nn.Linear stores [out, in]; GPT-2's Conv1D stores [in, out].
            weight = proj.weight.T if isinstance(proj, nn.Linear) else proj.weight
            result = torch.einsum("bshd,hdm->bshm", z, weight.reshape(shape))
            new = fn(layer, result)
            if new is None:
                return None
            bias = getattr(proj, "bias", None)
            summed = new.sum(dim=-2)
            return summed if bias is None else summed + bias

        return hook

    with ExitStack() as stack:
        for layer, proj in _output_projections(hf, layers):
            stack.callback(proj.register_forward_hook(forward_hook(layer)).remove)
        yield


@contextmanager
def output_hooks(
    hf: nn.Module, fn: ResidualFn, part: OutputPart, layers: list[int] | None = None
) -> Iterator[None]:
    """Call `fn(layer, x)` on the output [batch, pos, d_model] of each layer's `part`.

    "layer" is the residual stream leaving the decoder layer (`hook_resid_post`), before
    the final norm; "attention" the output projection's output (`hook_attn_out`; BLOOM's
    attention module adds the residual after it); "mlp" the MLP's output (`hook_mlp_out`).
    `fn` returns a replacement or None. Modules that return tuples keep their other
    elements.

    Raises:
        UnsupportedModelError: "mlp" on a model whose MLP adds the residual itself (BLOOM)
            or is no module of its own (OPT's fc1/fc2).
    """
    layout = layout_of(hf)
    modules = decoder_layers(hf)
    wanted = range(len(modules)) if layers is None else layers
    attention_out = f"{layout.attention}.{layout.out_proj}"
    paths = {"layer": None, "attention": attention_out, "mlp": layout.mlp}
    if part == "mlp":
        check_mlp(hf, modules[0], layout.mlp)

    def forward_hook(layer: int) -> Callable[..., Any]:
        def hook(_module: nn.Module, _args: tuple, out: Any) -> Any:
            x = out[0] if isinstance(out, tuple) else out
            new = fn(layer, x)
            if new is None:
                return None
            return (new, *out[1:]) if isinstance(out, tuple) else new

        return hook

    with ExitStack() as stack:
        for layer in wanted:
            path = paths[part]
            module = modules[layer] if path is None else _get(modules[layer], path)
            stack.callback(module.register_forward_hook(forward_hook(layer)).remove)
        yield


DecoderInputFn = Callable[[nn.Module, dict[str, Any]], dict[str, Any] | None]


@contextmanager
def decoder_input_hooks(hf: nn.Module, fn: DecoderInputFn) -> Iterator[None]:
    """Call `fn(decoder, kwargs)` before each forward of the decoder stack.

    The decoder is the module that holds the layer list (a VLM's language model, a causal
    LM's base model); in a VLM its `inputs_embeds` already hold the image features. `fn`
    returns replacement kwargs or None, and may call `decoder(**other)` itself (the hook
    sees that call too, so guard against re-entry).
    """
    parent_path = layout_of(hf).layers.rpartition(".")[0]
    decoder = _get(hf, parent_path) if parent_path else hf

    def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if args:
            raise HookError(
                f"{type(module).__name__} got positional arguments; decoder_input_hooks reads"
                " keyword arguments only."
            )
        new = fn(module, kwargs)
        return None if new is None else (args, new)

    handle = decoder.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


ModelInputFn = Callable[[tuple, dict[str, Any]], None]


@contextmanager
def model_input_hooks(hf: nn.Module, fn: ModelInputFn) -> Iterator[None]:
    """Call `fn(args, kwargs)` with the inputs of each forward of the base model (the model
    under the LM head: a VLM's ids and pixels before its image features are merged). Reads
    only; `generate` and plain forwards both pass through it."""
    handle = hf.base_model.register_forward_pre_hook(
        lambda _module, args, kwargs: fn(args, kwargs), with_kwargs=True
    )
    try:
        yield
    finally:
        handle.remove()
