"""The TransformerLens TransformerBridge over a copy of a loaded model (`Model.bridge`)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import AutoProcessor

from interp.errors import UnsupportedModelError, first_line
from interp.hf_internals import name_architecture
from interp.inputs import is_vision_model

if TYPE_CHECKING:
    from interp.models import Model

__all__ = ["boot_bridge"]


def boot_bridge(model: Model) -> Any:
    from transformer_lens.model_bridge import TransformerBridge

    hf = copy.deepcopy(model.hf)
    name_architecture(hf)
    name = str(getattr(model.tokenizer, "name_or_path", "") or "")
    if not Path(name).is_dir():
        raise UnsupportedModelError(
            "The TransformerBridge reloads the tokenizer from its folder; save it first with"
            " model.tokenizer.save_pretrained(folder)."
        )
    if is_vision_model(model.hf):
        _check_bridge_processor(name)
    try:
        bridge = TransformerBridge.boot_transformers(
            name, hf_model=hf, tokenizer=model.tokenizer, device=str(model.device)
        )
    except ImportError as exc:  # an adapter that needs a library (Qwen2.5-VL: torchvision)
        raise UnsupportedModelError(f"Cannot boot the TransformerBridge: {exc}") from exc
    if model.processor is not None:
        bridge.processor = model.processor
    return bridge


def _check_bridge_processor(folder: str) -> None:
    """Refuse a VLM bridge whose image processor does not load from `folder`.

    Booting a multimodal bridge loads the processor from the tokenizer's folder; when that
    fails, TransformerLens pip-installs torchvision into the running interpreter. Checking
    first means it never gets there.
    """
    try:
        processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
        problem = None if hasattr(processor, "image_processor") else "it has no image processor"
    except (OSError, ValueError, KeyError, ImportError) as exc:
        problem = first_line(exc)
    if problem is not None:
        raise UnsupportedModelError(
            "The TransformerBridge of a vision-language model loads its processor from"
            f" {folder}, and that fails ({problem}): save it there with"
            " model.processor.save_pretrained(folder)."
        )
