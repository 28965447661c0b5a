"""interp: find, score and intervene on attention heads.

The public surface is small; names load lazily so `import interp` (and the `interp` command's
`--help`) stays fast and free of side effects until a model is needed.

Example:
    >>> from interp import load_model
    >>> model = load_model()  # SmolLM2-135M-Instruct, offline
    >>> model.geometry.n_layers
    30
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "load_model": "interp.models",
    "Model": "interp.models",
    "Encoding": "interp.encoding",
    "Head": "interp.heads",
    "HeadSet": "interp.heads",
    "RowHeads": "interp.heads",
    "HeadGeometry": "interp.heads",
    "HeadScores": "interp.results",
    "TokenScores": "interp.results",
    "Provenance": "interp.results",
    "InterpError": "interp.errors",
    "record": "interp.hook_points",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'interp' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
