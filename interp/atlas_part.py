"""What one method adds to the head atlas, and the signature every atlas method has.

An atlas method runs one library workflow on a model and reduces its results to one row
per head (`AtlasPart.heads`), keeping the workflow's full tables beside it. Methods live in
the analyzer packages (`circuits.atlas_circuits`, `probes.atlas_act`, ...) and are reached
by dotted name, so this module imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import pandas as pd

from interp.config import Config, check_range
from interp.errors import InputError, UnsupportedModelError
from interp.heads import HeadGeometry
from interp.midway import check_midway_start
from interp.work import StageProgress

if TYPE_CHECKING:
    from interp.models import Model

__all__ = [
    "AtlasMethod",
    "AtlasPart",
    "AtlasSettings",
    "NotApplicable",
    "method_heads",
    "require_midway_start",
]


@dataclass(frozen=True)
class AtlasSettings(Config):
    """The atlas's choices every method reads (a config: checked, and its fields are the
    options of `interp atlas`).

    Attributes:
        quick: small settings for a first look (each method says which).
        top_k: heads per method for overlaps, flags and masking.
        seed: seed of the random draws the methods make (random tokens, bootstrap).
    """

    quick: bool = False
    top_k: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "top_k", 1)


@dataclass(frozen=True)
class AtlasPart:
    """One method's share of the atlas.

    Attributes:
        heads: one row per (layer, head) of the model: `layer`, `head`, then the method's
            columns prefixed by its name; intervals as `<col>_low`/`<col>_high`.
        tables: the method's full results, by the name its workflow gives them.
        settings: the settings it ran with (JSON).
    """

    heads: pd.DataFrame
    tables: dict[str, pd.DataFrame]
    settings: dict[str, Any]


# fn(model, settings, folder, progress): `folder` is the method's own work folder, which
# it hands its workflow to resume (None: nothing recorded).
AtlasMethod: TypeAlias = Callable[
    ["Model", AtlasSettings, Path | None, StageProgress | None], AtlasPart
]


class NotApplicable(InputError):
    """The method does not apply to this model (a vision method on a text-only model)."""


def require_midway_start(model: Model) -> None:
    """Raise NotApplicable unless `model` can run from a middle layer (path patching, the
    ACT head search), so an atlas of a model that cannot skips those methods."""
    try:
        check_midway_start(model.hf)
    except UnsupportedModelError as exc:
        raise NotApplicable(str(exc)) from exc


def method_heads(geometry: HeadGeometry, method: str, columns: pd.DataFrame) -> pd.DataFrame:
    """`AtlasPart.heads` from per-head `columns` (`layer`, `head` and the method's values).

    Every head of the model gets a row, in (layer, head) order; a head `columns` lacks
    gets NaN. The other columns are prefixed `{method}_`.

    Raises:
        InputError: `columns` holds a head twice.
    """
    layer, head = np.divmod(np.arange(geometry.n_layers * geometry.n_heads), geometry.n_heads)
    grid = pd.DataFrame({"layer": layer, "head": head})
    values = columns.rename(
        columns={c: f"{method}_{c}" for c in columns.columns if c not in ("layer", "head")}
    )
    if values.duplicated(["layer", "head"]).any():
        raise InputError(f"The {method} atlas columns hold a head twice.")
    values = values.astype({"layer": grid["layer"].dtype, "head": grid["head"].dtype})
    return grid.merge(values, on=["layer", "head"], how="left")
