"""Prompt sets: the shipped ones in `data/` and the user's own text or JSONL files.

A `.jsonl` file holds one JSON object per line with a `text` field; a `.txt` file holds
prompts separated by blank lines (so one prompt may span several lines).

The shipped data is the repository's top-level `data/` folder. A wheel (`pip install .`)
carries it as the package data `interp/_data` (see pyproject.toml); a source checkout or an
editable install has no `interp/_data` and reads `data/` beside the package.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from interp.errors import InputError


def _data_root() -> Path:
    """The shipped data folder: `interp/_data` when installed from a wheel, else `data/`."""
    installed = resources.files("interp") / "_data"
    if installed.is_dir():
        # pip unpacks wheels, so the resource is a real folder that Path can glob.
        return Path(str(installed))
    return Path(__file__).resolve().parents[1] / "data"


DATA_DIR = _data_root()


def data_path(*parts: str) -> Path:
    """Path of a file shipped in the repository's `data/` folder."""
    path = DATA_DIR.joinpath(*parts)
    if not path.exists():
        raise InputError(f"No shipped data file {path}.")
    return path


def as_texts(texts: str | Iterable[str], what: str = "prompt") -> list[str]:
    """The texts of `texts`: one string is one text, an iterable gives one text per element.

    Iterating a bare string would yield its characters, each then scored as a prompt; every
    entry point that takes texts goes through this function so one string means one text.

    Raises:
        InputError: an element is not a string (token ids, None, a nested list), or `texts`
            is a mapping such as an `Encoding` (iterating it would give its key names).
    """
    if isinstance(texts, Mapping):
        raise InputError(
            f"Expected {what} text, got a {type(texts).__name__}; pass the text itself (the"
            " model encodes it)."
        )
    items = [texts] if isinstance(texts, str) else list(texts)
    for index, text in enumerate(items):
        if not isinstance(text, str):
            raise InputError(
                f"Expected each {what} to be a string, got {type(text).__name__} at index"
                f" {index}; pass text, not token ids (the model encodes it)."
            )
    return items


def read_jsonl(path: str | Path, what: str) -> list[tuple[str, Any]]:
    """(`path:line`, record) for every non-blank line of a JSONL file.

    Raises InputError naming the file if it is missing, or the line if it is not JSON; the
    callers check each record's fields and say what an empty file lacks.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} file {path} does not exist.")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            records.append((where, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON ({exc}).") from exc
    return records


def load_prompts(path: str | Path) -> list[str]:
    """Read prompts from a `.jsonl` (field `text`) or `.txt` (blank-line separated) file."""
    path = Path(path)
    if path.suffix == ".jsonl":
        prompts = []
        for where, record in read_jsonl(path, "Prompt"):
            if isinstance(record, dict) and "text" not in record:
                raise InputError(f"{where}: expected a JSON object with a 'text' field.")
            prompts.append(record["text"] if isinstance(record, dict) else record)
    elif path.is_file():
        prompts = [block.strip() for block in path.read_text(encoding="utf-8").split("\n\n")]
    else:
        raise InputError(f"Prompt file {path} does not exist.")
    prompts = [p for p in prompts if isinstance(p, str) and p.strip()]
    if not prompts:
        raise InputError(f"Prompt file {path} holds no prompts.")
    return prompts
