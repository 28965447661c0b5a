"""Where a model's weights live: one device, or split by accelerate's `device_map`.

`load_model(spec, device_map=..., max_memory=..., dtype=...)` passes these through to
`from_pretrained`, which hands the split to accelerate: each module in the map is put on a
GPU, the CPU or "disk" (its weights stay on disk as a meta tensor and are read in for each
forward). Accelerate wraps every placed module's `forward` so that, before it runs, the
inputs move to the module's execution device and offloaded weights are loaded; PyTorch's
forward pre-hooks run *before* that wrapper, forward hooks after it. The toolkit's hooks
therefore see real activations (never weights), on the device of the module that made
them, and make every tensor they need on the device of the tensor they are given.

`Model.device` under a map is the input embedding's execution device: where `encode` puts
ids and where an analyzer sends model inputs. Nothing else may assume one device.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from interp.errors import InputError, did_you_mean
from interp.hf_internals import accelerate_execution_device

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
# accelerate's strategies for device_map="<name>" (it fills GPUs, then CPU, then disk).
STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")

DeviceMap = str | Mapping[str, str | int | torch.device]


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """A torch dtype from a dtype or its name ("bfloat16", "torch.float16"); None keeps it."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise InputError(f"Unknown dtype {str(dtype)!r}." + did_you_mean(name, DTYPES))
    return DTYPES[name]


@dataclass(frozen=True)
class Placement:
    """Either one device, or a device_map with optional max_memory and offload folder.

    Attributes:
        device: the one device of an unsplit model; None when `device_map` is given.
        device_map: a strategy name (`STRATEGIES`) or {module path: device or "disk"}.
        max_memory: {device: size} limits for a strategy, e.g. {"cpu": "2GiB", 0: "20GiB"}.
        offload_folder: where accelerate writes weights offloaded to "disk" when it must
            convert them (a safetensors checkpoint is read in place and needs none).
    """

    device: torch.device | None = None
    device_map: DeviceMap | None = None
    max_memory: Mapping[str | int, str | int] | None = None
    offload_folder: Path | None = None

    @classmethod
    def of(
        cls,
        device: str | torch.device | None,
        device_map: DeviceMap | None,
        max_memory: Mapping[str | int, str | int] | None,
        offload_folder: str | Path | None,
    ) -> Placement:
        """Check the arguments of `load_model` and return where the model goes."""
        if device_map is None:
            if max_memory is not None or offload_folder is not None:
                raise InputError(
                    "max_memory and offload_folder apply to a device_map: give device_map too"
                    " (e.g. device_map='auto')."
                )
            return cls(device=check_device("cpu" if device is None else device))
        if device is not None:
            raise InputError("Give device or device_map, not both (a device_map places each part).")
        if isinstance(device_map, str):
            if device_map not in STRATEGIES:
                raise InputError(
                    f"Unknown device_map {device_map!r}: give a module -> device mapping or a"
                    " strategy." + did_you_mean(device_map, STRATEGIES)
                )
        else:
            for where in device_map.values():
                if where != "disk":
                    check_device(where)
        folder = None if offload_folder is None else Path(offload_folder).expanduser()
        return cls(device_map=device_map, max_memory=max_memory, offload_folder=folder)

    def load_kwargs(self) -> dict[str, Any]:
        """The `from_pretrained` keyword arguments of this placement (none for one device)."""
        if self.device_map is None:
            return {}
        kwargs: dict[str, Any] = {"device_map": self.device_map}
        if self.max_memory is not None:
            kwargs["max_memory"] = dict(self.max_memory)
        if self.offload_folder is not None:
            kwargs["offload_folder"] = str(self.offload_folder)
        return kwargs


def check_device(device: str | int | torch.device) -> torch.device:
    """The torch device `device` names, if this machine has it; else an InputError."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"Unknown device {str(device)!r}: use e.g. cpu, cuda or cuda:1.") from exc
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (parsed.index or 0) >= count:
            raise InputError(f"Device {str(device)!r} is not available here ({count} CUDA GPUs).")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise InputError("Device 'mps' is not available here.")
    return parsed


def execution_device(module: nn.Module) -> torch.device:
    """The device `module` computes on: accelerate's execution device, else its weights'.

    An offloaded module's parameters are meta tensors between forwards; its accelerate hook
    knows where they are loaded to.
    """
    where = accelerate_execution_device(module)
    if where is not None:
        return where
    first = next(module.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def parse_device_map(text: str | None) -> DeviceMap | None:
    """A device_map from the command line: a strategy name or a JSON object."""
    if text is None or text in STRATEGIES:
        return text
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise InputError(
            f"--device-map {text!r} is neither a strategy ({', '.join(STRATEGIES)}) nor a JSON"
            ' object mapping every module to a device or "disk", e.g.'
            ' \'{"model.embed_tokens": "cpu", "model.layers.0": "disk", ...}\'.'
        )
    return parsed


def parse_max_memory(text: str | None) -> dict[str | int, str] | None:
    """max_memory from the command line: "cpu=4GiB,0=20GiB" (a number is a GPU index)."""
    if text is None:
        return None
    limits: dict[str | int, str] = {}
    for part in text.split(","):
        device, sep, size = part.partition("=")
        if not sep or not device.strip() or not size.strip():
            raise InputError(
                f"--max-memory {text!r}: expected device=size pairs such as cpu=4GiB,0=20GiB."
            )
        device = device.strip()
        limits[int(device) if device.isdigit() else device] = size.strip()
    return limits


def describe(hf: nn.Module) -> str:
    """Where a model runs, for provenance: its device, or its accelerate split by device.

    Example: "cpu", or "device_map cpu: 20 modules, disk: 12 modules".
    """
    split = getattr(hf, "hf_device_map", None) or {}
    if len(set(map(str, split.values()))) <= 1:
        return str(execution_device(hf.get_input_embeddings()))
    counts: dict[str, int] = {}
    for where in split.values():
        counts[str(where)] = counts.get(str(where), 0) + 1
    return "device_map " + ", ".join(f"{where}: {n} modules" for where, n in counts.items())
