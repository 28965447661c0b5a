"""Checks that a library workflow's result is what its command wrote."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd


def assert_tables_written(tables: Mapping[str, Any], folder: Path, scratch: Path) -> None:
    """Each table, saved, reads back equal to `folder/<name>.parquet` (data, not provenance:
    the provenance records when and from which argv a table was made)."""
    assert tables, "no tables to compare"
    for name, table in tables.items():
        mine = pd.read_parquet(table.save(scratch / f"{name}.parquet"))
        pd.testing.assert_frame_equal(mine, pd.read_parquet(folder / f"{name}.parquet"))
