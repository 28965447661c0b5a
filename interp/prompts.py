"""Prompt sets: the shipped ones in `data/` and the user's own text or JSONL files.

A `.jsonl` file holds one JSON object per line with a `text` field; a `.txt` file holds
prompts separated by blank lines (so one prompt may span several lines).
"""

from __future__ import annotations

import json
from pathlib import Path

from interp.errors import InputError

DATA_DIR = Path(__file__).resolve().parents[1] / "data"


def data_path(*parts: str) -> Path:
    """Path of a file shipped in the repository's `data/` folder."""
    path = DATA_DIR.joinpath(*parts)
    if not path.exists():
        raise InputError(f"No shipped data file {path}.")
    return path


def load_prompts(path: str | Path) -> list[str]:
    """Read prompts from a `.jsonl` (field `text`) or `.txt` (blank-line separated) file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Prompt file {path} does not exist.")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        prompts = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                prompts.append(record["text"] if isinstance(record, dict) else record)
            except (json.JSONDecodeError, KeyError) as exc:
                raise InputError(
                    f"{path}:{number}: expected a JSON object with a 'text' field ({exc})."
                ) from exc
    else:
        prompts = [block.strip() for block in text.split("\n\n")]
    prompts = [p for p in prompts if isinstance(p, str) and p.strip()]
    if not prompts:
        raise InputError(f"Prompt file {path} holds no prompts.")
    return prompts
