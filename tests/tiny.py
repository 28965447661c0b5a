"""Test helpers over the package's tiny models (`interp.tiny_models`), and a saved tiny Llama."""

from __future__ import annotations

import json
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
    "bomb_png",
    "byte_tokenizer",
    "saved_tiny",
    "tiny_idefics3",
    "tiny_llama",
    "tiny_llava",
    "tiny_llava_next",
    "write_image_task",
    "write_needles",
]


def saved_tiny(folder: Path, **kwargs: int) -> Path:
    """A tiny Llama (see tiny_llama) saved with its tokenizer, as a `--model` folder."""
    model = tiny_llama(**kwargs)
    model.hf.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    return folder


def bomb_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A few-hundred-byte PNG whose header claims `width` x `height` RGB pixels.

    Its one IDAT chunk holds a compressed first row only: enough for PIL to open it (and
    to raise its decompression-bomb error) without the test allocating the pixels.
    """
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = zlib.compress(b"\x00" + b"\x00" * 3 * min(width, 64))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", row) + chunk(b"IEND", b"")
    )
    return path


def write_needles(path: Path) -> Path:
    """Three key-number needles (red, blue, green) as a `--needles` JSONL file at `path`."""
    needles = [
        {"needle": f"The key number {i} is {w}.", "question": f"Key {i}?", "answer": w}
        for i, w in enumerate(["red", "blue", "green"])
    ]
    path.write_text("".join(json.dumps(n) + "\n" for n in needles))
    return path
