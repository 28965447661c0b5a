"""Reading a model's parts (weights, tokenizer, processor) from a checkpoint folder or the hub.

`interp.models.load_model` decides what a spec names; this module reads it, as a VLM with its
processor when the config has a vision tower, and fingerprints weights so that results say
which weights made them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    PreTrainedModel,
)

from interp.errors import UnsupportedModelError, first_line
from interp.hf_internals import hub_revision, offloaded_value
from interp.placement import Placement

__all__ = [
    "LoadOptions",
    "Parts",
    "folder_fingerprint",
    "folder_parts",
    "load_hub",
    "parameter_fingerprint",
]

Parts = tuple[PreTrainedModel, Any, Any]  # the model, its tokenizer, its processor or None
T = TypeVar("T")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


@dataclass(frozen=True)
class LoadOptions:
    """How to load: placement and dtype, as `from_pretrained` arguments."""

    placement: Placement
    dtype: torch.dtype | None

    def kwargs(self) -> dict[str, Any]:
        return {"dtype": self.dtype or "auto", **self.placement.load_kwargs()}


def folder_parts(folder: Path, load: LoadOptions) -> Parts:
    """The parts of the checkpoint in `folder`, after checking it has a config and tokenizer."""
    if not (folder / "config.json").is_file():
        raise UnsupportedModelError(
            f"Cannot load a causal LM from {folder}: it has no config.json (not a checkpoint)."
        )
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise UnsupportedModelError(
            f"{folder} has no tokenizer ({' or '.join(_TOKENIZER_FILES)}): save one there"
            " with tokenizer.save_pretrained(folder)."
        )
    try:
        return _from_pretrained(str(folder), load)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        raise UnsupportedModelError(
            f"Cannot load a causal LM from {folder}: {first_line(exc)}"
        ) from exc


def _from_pretrained(source: str, load: LoadOptions, **extra: Any) -> Parts:
    """(model, tokenizer, processor or None): a VLM with its processor, else a causal LM."""
    if getattr(AutoConfig.from_pretrained(source, **extra), "vision_config", None) is None:
        tokenizer = AutoTokenizer.from_pretrained(source, **extra)
        return (
            AutoModelForCausalLM.from_pretrained(source, **extra, **load.kwargs()),
            tokenizer,
            None,
        )
    processor = AutoProcessor.from_pretrained(source, **extra)
    hf = AutoModelForImageTextToText.from_pretrained(source, **extra, **load.kwargs())
    return hf, processor.tokenizer, processor


def load_hub(name: str, load: LoadOptions, finish: Callable[[Parts, str], T]) -> T:
    """`finish(parts, weights_hash)` of the hub model `name`: from the local HF cache, else
    downloaded after a quick check that the hub answers (a local copy that `finish` refuses
    with UnsupportedModelError is tried again from the hub)."""
    try:
        return _load_hub_files(name, load, finish, local_files_only=True)
    except UnsupportedModelError:
        pass
    import huggingface_hub

    try:
        huggingface_hub.model_info(name, timeout=10)
    except Exception as exc:  # connection, not-found and auth errors all end the search here
        raise UnsupportedModelError(
            f"Cannot load model {name!r}: it is not a .gguf file, not a local folder, not in"
            f" the local HF cache, and the hub lookup failed ({type(exc).__name__}:"
            f" {first_line(exc)})."
            " Run `interp models` to see what loads offline."
        ) from exc
    return _load_hub_files(name, load, finish, local_files_only=False)


def _load_hub_files(
    name: str, load: LoadOptions, finish: Callable[[Parts, str], T], *, local_files_only: bool
) -> T:
    try:
        parts = _from_pretrained(name, load, local_files_only=local_files_only)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        raise UnsupportedModelError(f"Cannot load model {name!r}: {first_line(exc)}") from exc
    revision = hub_revision(parts[0]) or "unknown-revision"
    return finish(parts, f"hub:{revision}")


def folder_fingerprint(folder: Path) -> str:
    """Hash of weight-file names, sizes and first/last MiB: cheap even for 100 GB folders."""
    digest = hashlib.sha256()
    files = sorted(p for p in folder.iterdir() if p.suffix in {".safetensors", ".bin", ".pt"})
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(1 << 20))
            handle.seek(max(0, size - (1 << 20)))
            digest.update(handle.read(1 << 20))
    return "files:" + digest.hexdigest()


def parameter_fingerprint(hf: PreTrainedModel) -> str:
    """Hash of every parameter's name, shape and first 4096 values."""
    digest = hashlib.sha256()
    for name, param in hf.state_dict().items():
        if param.is_meta:  # offloaded to disk by accelerate: read it from its weights map
            param = offloaded_value(hf, name)
        head = param.detach().flatten()[:4096].to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(param.shape)}".encode())
        digest.update(head.numpy().tobytes())
    return "params:" + digest.hexdigest()
