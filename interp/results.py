"""Results as data: tidy pandas tables that carry their provenance.

`HeadScores` has one row per (layer, head[, example]) with `layer`, `head`, `label`,
`score` plus analyzer-specific columns; `TokenScores` one row per token-level finding;
`ItemTable` one row per item of a run (a task item, a NIAH test); `EffectTable` one row per
measured effect. Each saves to parquet with the provenance in the file's schema metadata
(optionally with a CSV copy beside it), and loading gives an equal object (`==` compares
table and provenance). A result made of several tables (`Bundle`) saves them as one folder.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import typing
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from interp.errors import InputError
from interp.heads import Head, HeadGeometry, HeadSet
from interp.version import toolkit_version

_METADATA_KEY = b"interp.provenance"


def hash_inputs(inputs: Any) -> str:
    """SHA-256 of the JSON form of an analyzer's inputs (prompts, tests, tasks)."""
    text = json.dumps(inputs, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 4 MiB blocks (model files can be many GB)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Provenance:
    """What produced a result: model and weights, analyzer and parameters, inputs, when.

    `dtype` and `placement` (one device, or an accelerate split) say how the model ran, so
    a bf16 or offloaded run is never mistaken for the fp32 one; None in results written
    before they were recorded, or derived from stored activations.
    """

    model: str
    weights_hash: str
    analyzer: str
    config: dict[str, Any]
    inputs_hash: str
    n_inputs: int
    dtype: str | None = None
    placement: str | None = None
    toolkit_version: str = field(default_factory=toolkit_version)
    created: str = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Provenance:
        """Read stored provenance; InputError naming what is missing or of the wrong type.

        Stored provenance comes from files, so it is checked like any other input: a result
        with a corrupt record must not be used as if it were one.
        """
        if not isinstance(data, dict):
            raise InputError(f"Provenance must be a JSON object, got {type(data).__name__}.")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise InputError(f"Provenance has unknown fields {unknown}.")
        missing = [name for name, f in known.items() if _required(f) and name not in data]
        if missing:
            raise InputError(f"Provenance lacks the fields {missing}.")
        for name, value in data.items():
            kinds = _PROVENANCE_TYPES[name]
            if isinstance(value, bool) or not isinstance(value, kinds):
                raise InputError(
                    f"Provenance field {name!r} must be {' or '.join(_type_names(kinds))},"
                    f" got {type(value).__name__}."
                )
        if data["n_inputs"] < 0:
            raise InputError(f"Provenance field 'n_inputs' is negative ({data['n_inputs']}).")
        return cls(**data)


_TEXT = (str,)
_PROVENANCE_TYPES: dict[str, tuple[type, ...]] = {
    "model": _TEXT,
    "weights_hash": _TEXT,
    "analyzer": _TEXT,
    "config": (dict,),
    "inputs_hash": _TEXT,
    "n_inputs": (int,),
    "dtype": (str, type(None)),
    "placement": (str, type(None)),
    "toolkit_version": _TEXT,
    "created": _TEXT,
}


def _required(spec: Any) -> bool:
    return spec.default is MISSING and spec.default_factory is MISSING


def _type_names(kinds: tuple[type, ...]) -> list[str]:
    return ["null" if k is type(None) else k.__name__ for k in kinds]


@dataclass(frozen=True, eq=False)
class _Table:
    data: pd.DataFrame
    provenance: Provenance
    required: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        missing = [c for c in self.required if c not in self.data.columns]
        if missing:
            raise InputError(f"{type(self).__name__} needs columns {missing}.")

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and self.provenance == other.provenance  # type: ignore[attr-defined]
            and self.data.equals(other.data)  # type: ignore[attr-defined]
        )

    __hash__ = None  # type: ignore[assignment]

    def __len__(self) -> int:
        return len(self.data)

    def console_lines(
        self,
        label: str,
        columns: Sequence[str] | None = None,
        float_format: Callable[[float], str] | None = None,
    ) -> list[str]:
        """The table as text (`columns`, default all but `warnings`), then a `warning:` line
        for each row whose `warnings` says to take care, named by `label` ("K={k}")."""
        shown = self.data[list(columns)] if columns else self.data.drop(columns="warnings")
        warned = self.data[self.data.warnings.astype(bool)]
        return [
            shown.to_string(index=False, float_format=float_format),
            *(f"warning: {label.format(**row)}: {row.warnings}" for _, row in warned.iterrows()),
        ]

    def save(self, path: str | Path, *, csv: bool = False) -> Path:
        """Write parquet with provenance in the schema metadata; returns the parquet path.

        With `csv=True` a CSV copy goes to `csv_path(path)`, for spreadsheets (list
        columns as JSON text); the parquet file is the result.
        """
        path = Path(path)
        table = pa.Table.from_pandas(self.data, preserve_index=False)
        meta = {**(table.schema.metadata or {}), _METADATA_KEY: _dumps(self.provenance)}
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.replace_schema_metadata(meta), path)
        if csv:
            flat = self.data.copy()
            for column in flat.columns:
                if _holds_lists(flat[column]):
                    flat[column] = flat[column].map(lambda v: json.dumps(np.asarray(v).tolist()))
            flat.to_csv(csv_path(path), index=False)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read a saved result; InputError if the file is missing or not such a result."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"No result file at {path}.")
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{path} is not a parquet result file written by interp.") from exc
        raw = (table.schema.metadata or {}).get(_METADATA_KEY)
        if raw is None:
            raise InputError(f"{path} has no interp provenance: was it written by interp?")
        try:
            stored = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{path}: its interp provenance is not valid JSON.") from exc
        try:
            provenance = Provenance.from_dict(stored)
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from exc
        data = table.to_pandas()
        for column in data.columns:  # parquet lists come back as arrays; tables hold lists
            if _holds_lists(data[column]):
                data[column] = data[column].map(list)
        return cls(data, provenance)


def csv_path(path: str | Path) -> Path:
    """Where `save(path, csv=True)` writes the CSV copy of a parquet table."""
    return Path(path).with_suffix(".csv")


def _holds_lists(column: pd.Series) -> bool:
    return column.dtype == object and any(isinstance(v, list | np.ndarray) for v in column)


def _dumps(provenance: Provenance) -> bytes:
    return json.dumps(provenance.to_dict(), sort_keys=True, default=str).encode()


def head_frame(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """A tidy (layer, head, label, ...) table from same-shape [layer, head] arrays."""
    n_layers, n_heads = next(iter(columns.values())).shape
    layer, head = np.divmod(np.arange(n_layers * n_heads, dtype=np.int64), n_heads)
    labels = [f"L{i}H{h}" for i, h in zip(layer, head, strict=True)]
    flat = {name: np.asarray(values).ravel() for name, values in columns.items()}
    return pd.DataFrame({"layer": layer, "head": head, "label": labels, **flat})


@dataclass(frozen=True, eq=False)
class HeadScores(_Table):
    """Per-head scores: one row per (layer, head), or per (layer, head, example)."""

    required: ClassVar[tuple[str, ...]] = ("layer", "head", "label", "score")

    def __post_init__(self) -> None:
        super().__post_init__()
        for column in ("layer", "head"):  # they index arrays: a float or negative one cannot
            values = self.data[column]
            if not pd.api.types.is_integer_dtype(values) or (values < 0).any():
                raise InputError(
                    f"HeadScores' {column!r} column must hold integers >= 0, got {values.dtype}."
                )

    @classmethod
    def from_matrix(
        cls,
        scores: np.ndarray,
        provenance: Provenance,
        extra: dict[str, np.ndarray] | None = None,
    ) -> HeadScores:
        """Build from a [layer, head] array (and optional same-shape extra columns)."""
        return cls(head_frame({"score": scores, **(extra or {})}), provenance)

    def per_head(self) -> pd.DataFrame:
        """Scores averaged over examples when the table has an `example` column."""
        if "example" not in self.data.columns:
            return self.data
        numeric = self.data.drop(columns=["example"]).groupby(["layer", "head", "label"])
        return numeric.mean(numeric_only=True).reset_index()

    def matrix(self, geometry: HeadGeometry | None = None, column: str = "score") -> np.ndarray:
        """A [layer, head] array of `column` (mean over examples), NaN where absent."""
        table = self.per_head()
        n_layers = geometry.n_layers if geometry else int(table["layer"].max()) + 1
        n_heads = geometry.n_heads if geometry else int(table["head"].max()) + 1
        out = np.full((n_layers, n_heads), np.nan)
        out[table["layer"].to_numpy(), table["head"].to_numpy()] = table[column].to_numpy()
        return out

    def ranked(self, column: str = "score") -> list[Head]:
        """Every head, highest `column` first (ties broken by layer, head)."""
        table = self.per_head().sort_values(
            [column, "layer", "head"], ascending=[False, True, True]
        )
        return [Head(int(r.layer), int(r.head)) for r in table.itertuples()]

    def top(self, k: int, column: str = "score") -> HeadSet:
        """The k highest-scoring heads (ties broken by layer, head)."""
        return HeadSet(self.ranked(column)[:k])

    def above(self, threshold: float, column: str = "score") -> HeadSet:
        """Heads whose score is strictly above `threshold`."""
        table = self.per_head()
        chosen = table[table[column] > threshold]
        return HeadSet(Head(int(r.layer), int(r.head)) for r in chosen.itertuples())


@dataclass(frozen=True, eq=False)
class TokenScores(_Table):
    """Token-level findings: one row per (example, position[, layer, dim, ...])."""

    required: ClassVar[tuple[str, ...]] = ("example", "position", "token")


@dataclass(frozen=True, eq=False)
class ItemTable(_Table):
    """Per-item rows of a run: task items, NIAH tests, (condition, test) pairs, ..."""


@dataclass(frozen=True, eq=False)
class EffectTable(_Table):
    """Measured effects: one row per comparison (a task, a masking condition; `interp.effects`)."""

    required: ClassVar[tuple[str, ...]] = (
        "metric",
        "n",
        "baseline",
        "intervened",
        "difference",
        "ci_low",
        "ci_high",
    )

    def summary_lines(self) -> list[str]:
        """A line per effect measured by `interp.effects` (and a line per warning), for a
        console: baseline -> intervened, the difference with its interval, items moved."""
        table = self.data
        several_metrics = table.metric.nunique() > 1
        lines = []
        for row in table.itertuples():
            label = f"{row.task} {row.metric}" if several_metrics else row.task
            if "parameter" in table:
                label = f"[{row.parameter:g}] {label}"
            lines.append(
                f"{label}: {row.baseline:.3f} -> {row.intervened:.3f}"
                f" ({row.difference:+.3f}, 95% CI [{row.ci_low:+.3f}, {row.ci_high:+.3f}],"
                f" +{row.improved}/-{row.worsened} of {row.n})"
            )
            if row.warnings:
                lines.append(f"  warning: {row.warnings}")
        return lines


class Bundle:
    """Mixin for a frozen dataclass whose fields are all tables: a result saved as a folder.

    Each field is saved as `<FILES[field]>.parquet` (default: the field's name), each file
    with its table's provenance, plus CSV copies; `load(folder)` reads them back, equal.
    """

    FILES: ClassVar[dict[str, str]] = {}

    @property
    def provenance(self) -> Provenance:
        """The provenance of the first table (a bundle's tables share one run)."""
        return getattr(self, dataclasses.fields(self)[0].name).provenance  # type: ignore[arg-type]

    def save(self, folder: str | Path, *, csv: bool = True) -> list[Path]:
        """Write every table into `folder`; returns every file written."""
        written = []
        for spec in dataclasses.fields(self):  # type: ignore[arg-type]
            path = Path(folder) / f"{self.FILES.get(spec.name, spec.name)}.parquet"
            written.append(getattr(self, spec.name).save(path, csv=csv))
            if csv:
                written.append(csv_path(path))
        return written

    @classmethod
    def load(cls, folder: str | Path) -> Self:
        hints = typing.get_type_hints(cls)
        return cls(
            **{
                spec.name: hints[spec.name].load(
                    Path(folder) / f"{cls.FILES.get(spec.name, spec.name)}.parquet"
                )
                for spec in dataclasses.fields(cls)  # type: ignore[arg-type]
            }
        )
