"""The head atlas: every method's scores for every head of a model, in one tidy table.

A *method* is a function `(model, settings, folder, progress) -> AtlasPart` that runs one
analyzer and returns one row per (layer, head) with its score columns, named
`<method>_<column>` (intervals as `<column>_low` / `<column>_high`), plus its full tables
and the settings it ran with. The core names methods by dotted path (`METHODS_BY_NAME`) and
imports them only when it runs them, so it never imports the analyzer packages: a method
whose module is absent is skipped (`Atlas.skipped` says why), and one that does not apply
to the model raises `NotApplicable` and is skipped too.

`build_atlas` runs each method with its own work folder (`folder/<method>/`, where the
method's own workflow records its items and resumes), records each finished method as one
item of the atlas's work log (`interp.work`), so a stopped atlas skips the methods it
finished, then joins the parts on (layer, head): layer, head, kv_group, label, then every
method's columns in registry order. Relations between the methods (`interp.atlas_relations`)
and one prompt's attention for every head (`interp.attention_example`) complete it.

The types a method deals in (`AtlasSettings`, `AtlasPart`, `AtlasMethod`, `NotApplicable`)
live in `interp.atlas_part`, which the analyzer packages import; they are re-exported here.
Memory and time are the methods' own; the join and the relations cost milliseconds.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interp.atlas_part import AtlasMethod, AtlasPart, AtlasSettings, NotApplicable
from interp.atlas_relations import flagged, ranked, relations, score_columns
from interp.attention_example import AttentionExample, attention_example
from interp.errors import InputError, InterpError, did_you_mean
from interp.models import Model
from interp.results import ItemTable, Provenance, hash_inputs
from interp.shards import Shard
from interp.work import Item, StageProgress, Work, WorkFolder, open_log

__all__ = [
    "METHODS_BY_NAME",
    "Atlas",
    "AtlasMethod",
    "AtlasPart",
    "AtlasSettings",
    "NotApplicable",
    "build_atlas",
    "check_methods",
]
ANALYZER = "atlas"
DEFAULTS = AtlasSettings()  # frozen: one shared default is safe


# name -> "package.module:function"; the order is the atlas's column order.
METHODS_BY_NAME: dict[str, str] = {
    "sinks": "probes.atlas_methods:sinks",
    "retrieval": "probes.atlas_methods:retrieval",
    "head_kinds": "probes.atlas_methods:head_kinds",
    "anchors": "probes.atlas_methods:anchors",
    "circuits": "circuits.atlas_circuits:circuits",
    "act": "probes.atlas_act:act",
    "vision": "probes.atlas_vision:vision",
}


@dataclass(frozen=True)
class Atlas:
    """What `build_atlas` returns.

    Attributes:
        heads: one row per head: layer, head, kv_group, label, every method's columns.
        relations: one row per pair of score columns (`interp.atlas_relations.relations`).
        flagged: the heads in the top k of several methods (`...relations.flagged`).
        parts: each method's part, in registry order.
        skipped: method -> why it did not run.
        example: every head's attention on one short prompt, for the atlas page.
    """

    heads: ItemTable
    relations: ItemTable
    flagged: ItemTable
    parts: dict[str, AtlasPart]
    skipped: dict[str, str]
    example: AttentionExample = field(repr=False)

    @property
    def provenance(self) -> Provenance:
        return self.heads.provenance

    def save(self, folder: str | Path) -> list[Path]:
        """Write heads, relations and flagged (parquet + CSV), each method's tables under
        <method>/ and the example as example.npz; returns every file written."""
        folder = Path(folder)
        written = []
        for name in ("heads", "relations", "flagged"):
            path = getattr(self, name).save(folder / f"{name}.parquet", csv=True)
            written += [path, path.with_suffix(".csv")]
        for method, part in self.parts.items():
            for name, table in part.tables.items():
                path = ItemTable(table, self.provenance).save(folder / method / f"{name}.parquet")
                written.append(path)
        written.append(self.example.save(folder / "example.npz"))
        return written

    def summary_lines(self, per_method: int = 5, strongest: int = 5) -> list[str]:
        """For a console: the skipped methods, each score column's top heads, the strongest
        relations by |rho| and the heads flagged by every method that ran."""
        lines = [f"skipped {name}: {why}" for name, why in self.skipped.items()]
        heads = self.heads.data
        for column in score_columns(heads, list(self.parts)):
            top = ranked(heads, column, per_method).itertuples()
            shown = ", ".join(f"{r.label} ({getattr(r, column):.3g})" for r in top)
            lines.append(f"{column}: {shown or 'no head above the minimum'}")
        table = self.relations.data.dropna(subset=["spearman"])
        table = table[~table.same_method]
        order = table.spearman.abs().sort_values(ascending=False).index
        for row in table.loc[order].head(strongest).itertuples():
            lines.append(
                f"{row.method_a} ~ {row.method_b}: rho {row.spearman:+.2f},"
                f" top-{row.k} Jaccard {row.jaccard:.2f}"
            )
        every = ", ".join(self.flagged_by_all()) or "none"
        lines.append(f"flagged by all {len(self.ranking_methods())} ranking methods: {every}")
        return lines

    def ranking_methods(self) -> list[str]:
        """The methods with a score column (`interp.atlas_relations.score_columns`): those
        that can flag a head."""
        return list(dict.fromkeys(score_columns(self.heads.data, list(self.parts)).values()))

    def flagged_by_all(self) -> list[str]:
        """The labels of the heads in the top k of every ranking method (two or more)."""
        table = self.flagged.data
        return table[table.n_methods == len(self.ranking_methods())].label.tolist()


def check_methods(names: Sequence[str] | None) -> list[str]:
    """The methods to run, in registry order (None: all).

    Raises:
        InputError: a name is not a registered method.
    """
    if names is None:
        return list(METHODS_BY_NAME)
    for name in names:
        if name not in METHODS_BY_NAME:
            raise InputError(
                f"Unknown atlas method {name!r}." + did_you_mean(name, METHODS_BY_NAME)
            )
    return [name for name in METHODS_BY_NAME if name in names]


def load_method(name: str) -> AtlasMethod | str:
    """The method's function, or why it cannot run: its module is not installed."""
    module, attribute = METHODS_BY_NAME[name].split(":")
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or not f"{module}.".startswith(f"{exc.name}."):
            raise  # the module exists but one of its own imports is missing: a real error
        return f"its module {module} is not installed"
    return getattr(loaded, attribute)


def build_atlas(
    model: Model,
    methods: Sequence[str] | None = None,
    settings: AtlasSettings = DEFAULTS,
    folder: WorkFolder | None = None,
    progress: StageProgress | None = None,
) -> Atlas:
    """Run each method on `model` and join their parts (module doc).

    Args:
        model: a loaded model.
        methods: method names (`METHODS_BY_NAME`), run in registry order; None: all.
        settings: what every method receives.
        folder: the atlas's work folder: each method works in `folder/<method>/` and each
            finished method is recorded, so a stopped atlas resumes; None: no resume.
        progress: progress(stage, done, total): the "atlas" stage counts methods, and each
            method reports its own stages through it.

    Raises:
        InputError: an unknown method name, or no method could run.

    Example:
        >>> from interp.tiny_models import tiny_llama
        >>> atlas = build_atlas(tiny_llama(), ["head_kinds"], AtlasSettings(quick=True))
        >>> atlas.heads.data.columns[:5].tolist()
        ['layer', 'head', 'kv_group', 'label', 'head_kinds_previous_token']
    """
    chosen = check_methods(methods)
    loaded = {name: load_method(name) for name in chosen}
    skipped = {name: why for name, why in loaded.items() if isinstance(why, str)}
    runnable = {name: method for name, method in loaded.items() if not isinstance(method, str)}
    identity = Provenance(
        **model.provenance_fields(),
        analyzer=ANALYZER,
        config=settings.to_dict(),
        inputs_hash=hash_inputs([]),
        n_inputs=0,
    )
    log = open_log(folder, identity)
    work_root = None if log is None else log.folder

    def run_one(names: list[str]) -> list[list[dict[str, Any]]]:
        (name,) = names
        where = None if work_root is None else work_root / name
        try:
            part = runnable[name](model, settings, where, progress)
        except NotApplicable as exc:
            return [[{"skipped": str(exc)}]]
        check_part(name, part, model)
        return [[part_row(part)]]

    # Every process runs every method (Shard()): the methods' own work items are what
    # processes split (interp.shards), and each method waits for all ranks at its end.
    work = Work([Item(name, name) for name in runnable], log, shard=Shard())
    report = None if progress is None else lambda done, total: progress("atlas", done, total)
    rows = work.run(run_one, report)
    parts = {}
    for name, (row,) in zip(runnable, rows, strict=True):
        if "skipped" in row:
            skipped[name] = row["skipped"]
        else:
            parts[name] = part_from_row(row)
    if not parts:
        raise InputError(f"No atlas method could run: {'; '.join(skipped.values())}.")
    return assemble(model, parts, skipped, settings, identity)


def assemble(
    model: Model,
    parts: dict[str, AtlasPart],
    skipped: dict[str, str],
    settings: AtlasSettings,
    identity: Provenance,
) -> Atlas:
    """Join the parts on (layer, head), then the relations, flags and example."""
    geometry = model.geometry
    layer, head = np.divmod(np.arange(geometry.n_layers * geometry.n_heads), geometry.n_heads)
    heads = pd.DataFrame(
        {
            "layer": layer.astype("int64"),
            "head": head.astype("int64"),
            "kv_group": (head // geometry.group_size).astype("int64"),
            "label": [f"L{i}H{h}" for i, h in zip(layer, head, strict=True)],
        }
    )
    for part in parts.values():
        heads = heads.merge(part.heads, on=["layer", "head"], how="left", validate="1:1")
    config = {"settings": settings.to_dict(), "methods": {n: p.settings for n, p in parts.items()}}
    provenance = dataclasses.replace(
        identity, config=config, inputs_hash=hash_inputs(config), n_inputs=len(parts)
    )
    names = list(parts)
    return Atlas(
        heads=ItemTable(heads, provenance),
        relations=ItemTable(relations(heads, names, settings.top_k), provenance),
        flagged=ItemTable(flagged(heads, names, settings.top_k), provenance),
        parts=parts,
        skipped=skipped,
        example=attention_example(model),
    )


def check_part(name: str, part: AtlasPart, model: Model) -> None:
    """A method's part has one row per head and only columns named for the method.

    Raises:
        InterpError: it does not (a method's bug, named so it can be found).
    """
    geometry = model.geometry
    table = part.heads
    keys = set(zip(table.get("layer", []), table.get("head", []), strict=True))
    whole = {(i, h) for i in range(geometry.n_layers) for h in range(geometry.n_heads)}
    if keys != whole or len(table) != len(whole):
        raise InterpError(f"Atlas method {name!r} did not return one row per head.")
    own = ("layer", "head")
    foreign = [c for c in table.columns if c not in own and not c.startswith(f"{name}_")]
    if foreign:
        raise InterpError(f"Atlas method {name!r} returned columns not named for it: {foreign}.")


def part_row(part: AtlasPart) -> dict[str, Any]:
    """A part as one JSON work-log row (tables as columns + rows of native values)."""
    return {
        "heads": _frame_record(part.heads),
        "tables": {name: _frame_record(table) for name, table in part.tables.items()},
        "settings": part.settings,
    }


def part_from_row(row: dict[str, Any]) -> AtlasPart:
    """The part `part_row` recorded (a resumed and an uninterrupted atlas both read this)."""
    return AtlasPart(
        heads=_frame(row["heads"]),
        tables={name: _frame(record) for name, record in row["tables"].items()},
        settings=row["settings"],
    )


def _frame_record(table: pd.DataFrame) -> dict[str, Any]:
    return {
        "columns": [str(c) for c in table.columns],
        "rows": [[_native(v) for v in row] for row in table.itertuples(index=False)],
    }


def _frame(record: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(record["rows"], columns=record["columns"])


def _native(value: Any) -> Any:
    """A table cell as JSON holds it (numpy scalars and arrays as Python values)."""
    if isinstance(value, np.ndarray | list | tuple):
        return [_native(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
