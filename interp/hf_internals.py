"""What transformers and accelerate keep in private or architecture-named fields, read here.

Part of the hooks layer (`interp.hooks.HOOKS_LAYER`): accelerate's per-module hook
(`_hf_hook`: where an offloaded module computes, and the weights it loads for it), the hub
revision transformers records on a config (`_commit_hash`), and the architecture name an
adapter looks a model up by. Everything else asks these functions.
"""

from __future__ import annotations

import torch
from torch import nn

from interp.errors import InputError

__all__ = ["accelerate_execution_device", "hub_revision", "name_architecture", "offloaded_value"]


def accelerate_execution_device(module: nn.Module) -> torch.device | None:
    """The device accelerate runs `module` on (None: accelerate does not place it)."""
    hook = getattr(module, "_hf_hook", None)
    where = getattr(hook, "execution_device", None)
    return None if where is None else torch.device(where)


def offloaded_value(hf: nn.Module, name: str) -> torch.Tensor:
    """The value of parameter `name` that accelerate offloaded (a meta tensor in `hf`)."""
    module_path, _, leaf = name.rpartition(".")
    hook = getattr(hf.get_submodule(module_path), "_hf_hook", None)
    weights = getattr(hook, "weights_map", None)
    if weights is None:
        raise InputError(
            f"Parameter {name} is on the meta device and no accelerate offload hook holds its"
            " value: load the weights before wrapping the model."
        )
    return weights[leaf]


def hub_revision(hf: nn.Module) -> str | None:
    """The hub commit the model's config was downloaded at (None: not from the hub)."""
    return getattr(hf.config, "_commit_hash", None)


def name_architecture(hf: nn.Module) -> None:
    """Give a config built in code (it names no architecture) its model's class name, which
    adapters such as TransformerLens's look the model up by."""
    if not hf.config.architectures:
        hf.config.architectures = [type(hf).__name__]
