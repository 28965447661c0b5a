"""A saved tiny model whose word-level vocabulary covers every shipped circuit task.

The CLI's circuit commands build IOI, name recall and Colored Objects from `data/circuits/`,
whose fillers must be single tokens; the byte tokenizer of tests/tiny.py has none. This
vocabulary holds every word of the shipped templates and fillers (capitalised colours too),
on the random tiny Llama of tests/circuits/test_tasks.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from interp.prompts import data_path
from tests.circuits.test_tasks import _word_model


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def circuit_corpus() -> str:
    """Every template and filler of data/circuits, as space-separated text."""
    texts: list[str] = []
    for path in sorted(data_path("circuits").iterdir()):
        if path.suffix == ".json":
            texts += _strings(json.loads(path.read_text()))
        elif path.suffix == ".jsonl":
            texts += [
                s
                for line in path.read_text().splitlines()
                if line
                for s in _strings(json.loads(line))
            ]
    colours = json.loads(data_path("circuits", "colored_objects.json").read_text())["colors"]
    texts += [c.capitalize() for c in colours] + ["an", "a", "A"]
    return " ".join(re.sub(r"[{}]", " ", t) for t in texts)


def saved_words_tiny(folder: Path) -> Path:
    """The word-level tiny Llama, saved with its tokenizer, as a `--model` folder."""
    model = _word_model(circuit_corpus())
    model.hf.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    return folder
