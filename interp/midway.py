"""Running the decoder from a middle layer: `decoder_from(hf, start)`.

Part of the hooks layer (`interp.hooks.HOOKS_LAYER`): it knows which architectures' decoder
forward is plain enough to start midway, and swaps the decoder's layer list in place.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from interp.errors import HookError, UnsupportedModelError
from interp.layouts import decoder_layers, get_path, layout_of

__all__ = ["check_midway_start", "decoder_from"]


# Model types whose decoder forward is plain: `hidden = inputs_embeds` (no scaling, no
# position embedding added), rotary angles from `position_ids`, one mask for every layer,
# then the layers in order. For these, `inputs_embeds` = the resid_pre of layer l, fed to
# the layer list cut to layers[l:], reproduces the full forward from layer l on.
_MIDWAY_START = frozenset({"llama", "mistral", "mixtral", "olmo", "olmo2", "phi3", "qwen3_moe"})
# These index a per-layer mask by position in the layer list: right only if all are alike.
_MIDWAY_START_UNIFORM_LAYERS = frozenset({"qwen2", "qwen3", "smollm3"})


def check_midway_start(hf: nn.Module) -> None:
    """Raise UnsupportedModelError unless `decoder_from` is exact for `hf`'s architecture."""
    config = hf.config
    model_type = getattr(config, "model_type", "")
    uniform = len(set(getattr(config, "layer_types", None) or ["one"])) == 1
    if model_type in _MIDWAY_START or (model_type in _MIDWAY_START_UNIFORM_LAYERS and uniform):
        return
    raise UnsupportedModelError(
        f"Cannot start {type(hf).__name__} (model_type {model_type!r}) at a middle layer:"
        " its forward scales or adds to inputs_embeds, or picks masks by layer position."
        f" Supported: {', '.join(sorted(_MIDWAY_START | _MIDWAY_START_UNIFORM_LAYERS))}."
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
    check_midway_start(hf)
    layers = decoder_layers(hf)
    if not 0 <= start < len(layers) or (stop is not None and not start < stop <= len(layers)):
        raise HookError(f"Cannot run layers {start}..{stop} of a {len(layers)}-layer decoder.")
    parent_path, _, name = layout_of(hf).layers.rpartition(".")
    parent = get_path(hf, parent_path) if parent_path else hf
    setattr(parent, name, nn.ModuleList(list(layers)[start:stop]))
    try:
        yield
    finally:
        setattr(parent, name, layers)
