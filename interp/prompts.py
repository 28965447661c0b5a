"""Prompt sets: the shipped ones in `data/` and the user's own text or JSONL files.

A `.jsonl` file holds one JSON object per line with a `text` field; a `.txt` file holds
prompts separated by blank lines (so one prompt may span several lines). Every user file is
read through `read_text`: UTF-8 (a byte-order mark is allowed), no NUL bytes, so binary or
mis-encoded files get a one-line error naming the file instead of a traceback or garbage.

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


def read_text(path: str | Path, what: str) -> str:
    """The text of a user's file, or an InputError saying why it cannot be used.

    Args:
        path: the file.
        what: what the file is for ("Prompt", "Needle", ...), for the message.
    """
    path = Path(path)
    if not path.is_file():
        kind = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise InputError(f"{what} file {path} {kind}.")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{what} file {path} is not UTF-8 text (bad byte at offset {exc.start})."
        ) from exc
    except OSError as exc:
        raise InputError(f"{what} file {path} cannot be read ({exc.strerror}).") from exc
    if "\x00" in text:
        raise InputError(f"{what} file {path} contains NUL bytes: is it a binary file?")
    return text


def read_jsonl(path: str | Path, what: str) -> list[tuple[str, Any]]:
    """(`path:line`, record) for every non-blank line of a JSONL file.

    Raises InputError naming the file if it cannot be read (see `read_text`), or the line if
    it is not JSON; the callers check each record's fields and say what an empty file lacks.
    """
    records = []
    for number, line in enumerate(read_text(path, what).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            records.append((where, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON ({exc}).") from exc
    return records


def load_prompts(path: str | Path) -> list[str]:
    """Read prompts from a `.jsonl` (field `text`) or `.txt` (blank-line separated) file.

    Raises InputError for another suffix, a record without a string `text`, or no prompt.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        prompts = []
        for where, record in read_jsonl(path, "Prompt"):
            text = record.get("text") if isinstance(record, dict) else record
            if not isinstance(text, str):
                raise InputError(
                    f"{where}: expected a string or an object with a string 'text' field."
                )
            prompts.append(text)
    elif suffix in ("", ".txt"):
        prompts = read_text(path, "Prompt").split("\n\n")
    else:
        raise InputError(
            f'Prompt file {path}: use a .jsonl file (one {{"text": ...}} per line) or a .txt'
            " file (prompts separated by blank lines)."
        )
    prompts = [p.strip() for p in prompts if p.strip()]
    if not prompts:
        raise InputError(f"Prompt file {path} holds no prompts.")
    return prompts
