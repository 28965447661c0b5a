"""Where a decoder's attention parts live, found from the modules themselves.

The hooks need, per decoder layer: the attention module (what transformers' attention
interface receives as `module`), its output projection (input = the heads' outputs z,
concatenated), its q/k/v projections (separate, or one fused projection) and the MLP. They
are found by walking the model: the decoder (`get_decoder()`, a VLM's language model), the
first ModuleList under it whose layers hold an attention module, and inside that module
the projections by the names transformers uses (`o_proj`/`dense`/`c_proj`/`out_proj`,
`q_proj`/`k_proj`/`v_proj`, fused `qkv_proj`/`c_attn`/`query_key_value`/`Wqkv`). A name
whose attribute is None (DeepSeek-V3's `q_proj` under a low-rank query) does not count.

How a fused projection's output splits into heads is not visible from the modules, so
`fused_split` reads it from the attention module's own flags: [q | k | v] blocks (GPT-2,
Phi-3, multi-query Falcon and GPT-BigCode) or, per KV group, that group's query heads then
its key then its value (GPT-NeoX, BLOOM, multi-head Falcon and GPT-BigCode: [q k v] per
head; Falcon's new decoder architecture: per KV group). The zoo test checks each split
against the q, k, v the model hands its attention function.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import reduce
from typing import Any

import torch
from torch import Tensor, nn

from interp.errors import UnsupportedModelError

__all__ = [
    "Layout",
    "OvPath",
    "check_mlp",
    "decoder_layers",
    "fused_split",
    "get_path",
    "layout_of",
    "ov_path",
    "projection",
]

_ATTENTION = ("self_attn", "attn", "attention", "self_attention")
_OUT_PROJ = ("o_proj", "dense", "c_proj", "out_proj")
_FUSED_QKV = ("qkv_proj", "c_attn", "query_key_value", "Wqkv")
_MLP = ("mlp", "feed_forward", "block_sparse_moe")
# Model types whose fused QKV is laid out per KV group ([q k v] per head without GQA) when
# the attention is not multi-query; see `fused_split`.
_GROUPED_FUSED_QKV = frozenset({"gpt_neox", "bloom", "falcon", "gpt_bigcode"})


@dataclass(frozen=True)
class Layout:
    """Where a decoder's parts live, as dotted attribute paths."""

    layers: str  # the ModuleList of decoder layers, from the top model
    attention: str  # the attention module, from a decoder layer
    out_proj: str  # the output projection (input = concatenated z), from the attention
    q: str = "q_proj"  # the query projection (output = concatenated q), from the attention
    k: str = "k_proj"  # the key projection (one d_head slice per KV head)
    v: str = "v_proj"  # the value projection (one d_head slice per KV head)
    fused_qkv: bool = False  # q, k, v are one projection at `q`; see `fused_split`
    mlp: str | None = "mlp"  # the MLP, from a decoder layer; None: no MLP module (OPT)


def get_path(module: nn.Module, path: str) -> Any:
    """The submodule (or attribute) at a dotted path."""
    return reduce(getattr, path.split("."), module)


def _present(module: nn.Module, name: str) -> bool:
    return getattr(module, name, None) is not None


def _attention_path(layer: nn.Module) -> str | None:
    """Path of the module holding the output projection, from a decoder layer.

    Descends through wrappers (GPT-Neo's `attn.attention`) until a module has one.
    """
    for name in _ATTENTION:
        if not _present(layer, name):
            continue
        found = getattr(layer, name)
        if any(_present(found, out) for out in _OUT_PROJ):
            return name
        inner = _attention_path(found)
        if inner is not None:
            return f"{name}.{inner}"
    return None


def _layout_in(layers_path: str, layer: nn.Module) -> Layout | None:
    attention_path = _attention_path(layer)
    if attention_path is None:
        return None
    attention = get_path(layer, attention_path)
    out_proj = next(name for name in _OUT_PROJ if _present(attention, name))
    mlp = next((name for name in _MLP if _present(layer, name)), None)
    if all(_present(attention, name) for name in ("q_proj", "k_proj", "v_proj")):
        return Layout(layers_path, attention_path, out_proj, mlp=mlp)
    fused = next((name for name in _FUSED_QKV if _present(attention, name)), None)
    if fused is not None:
        return Layout(layers_path, attention_path, out_proj, fused, fused, fused, True, mlp)
    # No q/k/v projections under known names (latent attention): the q/k/v hooks refuse.
    return Layout(layers_path, attention_path, out_proj, mlp=mlp)


def layout_of(hf: nn.Module) -> Layout:
    """The layout of `hf`, found under its decoder (a VLM's language model)."""
    decoder = hf.get_decoder() if hasattr(hf, "get_decoder") else hf
    prefix = next((name for name, module in hf.named_modules() if module is decoder), "")
    for name, module in decoder.named_modules():
        if isinstance(module, nn.ModuleList) and len(module):
            layout = _layout_in(".".join(p for p in (prefix, name) if p), module[0])
            if layout is not None:
                _check_uniform(hf, module, layout.attention)
                return layout
    model_type = getattr(hf.config, "model_type", "")
    raise UnsupportedModelError(
        f"Cannot find the decoder layers of {type(hf).__name__} (model_type {model_type!r}):"
        f" no layer list whose layers hold an attention module ({'/'.join(_ATTENTION)})"
        f" with an output projection ({'/'.join(_OUT_PROJ)})."
    )


def _check_uniform(hf: nn.Module, layers: nn.ModuleList, attention: str) -> None:
    """Refuse decoder layers of another kind among the first's (Mllama's cross-attention
    layers, which attend to the image's states instead of the sequence)."""
    for index, layer in enumerate(layers):
        if _attention_path(layer) != attention:
            raise UnsupportedModelError(
                f"Decoder layer {index} of {type(hf).__name__} is a {type(layer).__name__}"
                f" without the {attention!r} attention of layer 0: decoders mixing layer"
                " kinds (Mllama's cross-attention to the image) are not supported."
            )


def decoder_layers(hf: nn.Module) -> nn.ModuleList:
    return get_path(hf, layout_of(hf).layers)


def projection(attention: nn.Module, path: str) -> nn.Module:
    """The projection at `path` of an attention module; refuses a missing or None one."""
    found = getattr(attention, path, None) if "." not in path else get_path(attention, path)
    if found is None:
        raise UnsupportedModelError(
            f"{type(attention).__name__} has no projection {path!r} (its queries, keys or"
            " values come from another computation, e.g. latent attention), so q/k/v hooks"
            " cannot read them."
        )
    return found


def check_mlp(hf: nn.Module, layer: nn.Module, path: str | None) -> None:
    """Refuse hook_mlp_out where the MLP's output cannot be read on its own."""
    if path is None:
        raise UnsupportedModelError(
            f"The decoder layers of {type(hf).__name__} have no MLP module (their MLP is"
            " inline), so hook_mlp_out cannot be read; use hook_resid_post."
        )
    if "residual" in inspect.signature(get_path(layer, path).forward).parameters:
        raise UnsupportedModelError(
            f"The MLP of {type(hf).__name__} adds the residual stream to its output, so"
            " hook_mlp_out cannot be read apart from it; use hook_resid_post."
        )


def fused_split(
    hf: nn.Module, attention: nn.Module, n_heads: int, n_kv: int, d_head: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Indices into a fused QKV output of q [head, d_head], k and v [kv_head, d_head].

    Blocks [q | k | v] unless the model type lays the output out per KV group (each group's
    query heads, then its key, then its value), which multi-query attention (one KV head,
    Falcon-7B, StarCoder) does not, except under Falcon's new decoder architecture.
    """
    model_type = getattr(hf.config.get_text_config(), "model_type", "")
    multi_query = getattr(attention, "multi_query", False)
    new_architecture = getattr(attention, "new_decoder_architecture", False)
    if model_type in _GROUPED_FUSED_QKV and (new_architecture or not multi_query):
        group = n_heads // n_kv
        grouped = torch.arange(n_kv * (group + 2) * d_head).view(n_kv, group + 2, d_head)
        q = grouped[:, :group].reshape(n_heads, d_head)
        return q, grouped[:, group], grouped[:, group + 1]
    q_size, kv_size = n_heads * d_head, n_kv * d_head
    q = torch.arange(q_size).view(n_heads, d_head)
    k = torch.arange(q_size, q_size + kv_size).view(n_kv, d_head)
    return q, k, k + kv_size


@dataclass(frozen=True)
class OvPath:
    """The modules a head's OV circuit passes, from a token's embedding to the logits."""

    input_norm: nn.Module  # the layer's pre-attention norm
    value_projection: nn.Module  # one d_head slice of output per KV head
    output_projection: nn.Module  # one d_head block of columns per head
    final_norm: nn.Module  # the decoder's norm before the unembedding


def ov_path(hf: nn.Module, layer: int) -> OvPath:
    """The OV path of decoder layer `layer` in a Llama-layout model (a pre-norm named
    `input_layernorm`, a separate value projection, a final `norm` on the decoder).

    Raises:
        UnsupportedModelError: another layout (fused q/k/v, other norm names).
    """
    layout = layout_of(hf)
    block = decoder_layers(hf)[layer]
    attention = get_path(block, layout.attention)
    parent = layout.layers.rpartition(".")[0]
    decoder = get_path(hf, parent) if parent else hf
    input_norm = getattr(block, "input_layernorm", None)
    final_norm = getattr(decoder, "norm", None)
    if layout.fused_qkv or input_norm is None or final_norm is None:
        raise UnsupportedModelError(
            f"{type(hf).__name__} is not Llama-layout (input_layernorm, v_proj, o_proj, a"
            " final norm): its heads' OV path cannot be read."
        )
    value = projection(attention, layout.v)
    return OvPath(input_norm, value, get_path(attention, layout.out_proj), final_norm)
