"""Test helpers over the package's tiny models (`interp.tiny_models`), and a saved tiny Llama."""

from __future__ import annotations

from pathlib import Path

from interp.tiny_models import (
    byte_tokenizer,
    tiny_idefics3,
    tiny_llama,
    tiny_llava,
    tiny_llava_next,
    write_image_task,
)

__all__ = [
    "byte_tokenizer",
    "saved_tiny",
    "tiny_idefics3",
    "tiny_llama",
    "tiny_llava",
    "tiny_llava_next",
    "write_image_task",
]


def saved_tiny(folder: Path, **kwargs: int) -> Path:
    """A tiny Llama (see tiny_llama) saved with its tokenizer, as a `--model` folder."""
    model = tiny_llama(**kwargs)
    model.hf.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    return folder
