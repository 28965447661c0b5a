"""Heads, head sets and a model's head geometry.

A head is a (layer, query head) pair, 0-based, labelled `L{l}H{h}`. With grouped-query
attention (GQA) `g = n_heads // n_kv_heads` query heads share one key/value head, labelled
`L{l}KV{k}`; editing a KV head touches its whole group, so the toolkit addresses query heads.
`RowHeads` is one HeadSet per batch row, for interventions that act on other heads in
each row of a batch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from interp.errors import InputError, UnsupportedModelError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

_LABEL = re.compile(r"^L(\d+)H(\d+)$")


@dataclass(frozen=True, order=True)
class Head:
    """One query head: `Head(12, 3)` is layer 12, head 3, labelled `L12H3`."""

    layer: int
    head: int

    @property
    def label(self) -> str:
        return f"L{self.layer}H{self.head}"

    @classmethod
    def parse(cls, label: str) -> Head:
        """Parse `L12H3` (or `12.3`, the papers' notation) into a Head."""
        text = label.strip()
        match = _LABEL.match(text) or re.match(r"^(\d+)\.(\d+)$", text)
        if not match:
            raise InputError(f"Cannot parse head {label!r}: expected 'L12H3' or '12.3'.")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True)
class HeadGeometry:
    """Attention shape of a model: what every analyzer needs to lay out its tables.

    `d_head` is each head's value and output width (z, results, mean ablation); `d_qk` its
    query/key width, which differs under latent attention (DeepSeek-V3: nope + rope dims
    for q and k, `v_head_dim` for v). None means the same as `d_head`.
    """

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    d_qk: int | None = None

    @property
    def d_query_key(self) -> int:
        """Width of each head's query and key."""
        return self.d_head if self.d_qk is None else self.d_qk

    @property
    def group_size(self) -> int:
        """Query heads per key/value head (1 without GQA)."""
        return self.n_heads // self.n_kv_heads

    def kv_head(self, head: int) -> int:
        """The key/value head that query head `head` reads."""
        return head // self.group_size

    def all_heads(self) -> HeadSet:
        return HeadSet(Head(i, h) for i in range(self.n_layers) for h in range(self.n_heads))

    def check(self, head: Head) -> None:
        """Raise InputError if `head` does not exist in this model."""
        if not (0 <= head.layer < self.n_layers and 0 <= head.head < self.n_heads):
            raise InputError(
                f"Head {head.label} does not exist: the model has layers 0..{self.n_layers - 1}"
                f" and heads 0..{self.n_heads - 1}."
            )


def geometry_of(hf: PreTrainedModel) -> HeadGeometry:
    """Read the attention geometry from a model's (text) config.

    It lives here, not with the loader, so the hooks can read it without importing the loader.
    """
    config = hf.config.get_text_config()
    n_heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None)
    n_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    d_model = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
    if not (n_heads and n_layers and d_model):
        raise UnsupportedModelError(
            f"Cannot read the attention geometry of {type(hf).__name__}: its config lacks"
            " num_attention_heads / num_hidden_layers / hidden_size."
        )
    n_kv = getattr(config, "num_key_value_heads", None) or n_heads
    d_head = getattr(config, "head_dim", None) or d_model // n_heads
    # Latent attention (DeepSeek-V3) sets head_dim to the rotary part of q/k only: the
    # output width is v_head_dim and the q/k width qk_head_dim (nope + rope).
    d_v = getattr(config, "v_head_dim", None) or d_head
    d_qk = getattr(config, "qk_head_dim", None) or d_head
    return HeadGeometry(
        int(n_layers),
        int(n_heads),
        int(n_kv),
        int(d_v),
        int(d_model),
        None if d_qk == d_v else int(d_qk),
    )


HeadLike = Head | str | tuple[int, int]


def _is_index(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _is_pair(value: object) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and all(_is_index(v) for v in value)


def _as_head(value: HeadLike) -> Head:
    if isinstance(value, Head):
        return value
    if isinstance(value, str):
        return Head.parse(value)
    if _is_pair(value):
        layer, head = (int(v) for v in value)  # type: ignore[union-attr]
        if layer < 0 or head < 0:
            raise InputError(f"A head's layer and index are >= 0, got {value!r}.")
        return Head(layer, head)
    raise InputError(f"Cannot read {value!r} as a head: give 'L12H3', (12, 3) or Head(12, 3).")


def _labels(text: str) -> list[str]:
    """The labels of "L12H3", "L12H3,L4H0" or "L12H3 L4H0"; an empty label is an error."""
    parts = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not part for part in parts):
        raise InputError(
            f"Cannot read {text!r} as heads: give labels such as 'L12H3' or 'L12H3,L4H0'"
            " (HeadSet() is the empty set)."
        )
    return [label for part in parts for label in part.split()]


class HeadSet:
    """An immutable, sorted set of heads with a dense [layer, head] mask view.

    Accepts heads, labels ('L12H3', '12.3') and (layer, head) pairs; a single head or a
    comma-separated string of labels ("L12H3,L4H0") is one set, not an iterable of letters.
    An empty string, an empty label ("L1H1,,L2H2") or a non-iterable is an InputError.
    """

    def __init__(self, heads: Iterable[HeadLike] | HeadLike = ()) -> None:
        if isinstance(heads, str):
            heads = _labels(heads)
        elif isinstance(heads, Head) or _is_pair(heads):
            heads = [heads]  # type: ignore[list-item]
        elif isinstance(heads, bytes | bytearray) or not isinstance(heads, Iterable):
            raise InputError(
                f"Cannot read a {type(heads).__name__} as heads: give labels ('L12H3,L4H0'),"
                " heads, (layer, head) pairs, or an iterable of them."
            )
        parsed = (_as_head(h) for h in heads)  # type: ignore[union-attr]
        self._heads: tuple[Head, ...] = tuple(sorted(set(parsed)))

    def __iter__(self) -> Iterator[Head]:
        return iter(self._heads)

    def __len__(self) -> int:
        return len(self._heads)

    def __contains__(self, head: object) -> bool:
        return head in self._heads

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HeadSet) and self._heads == other._heads

    def __hash__(self) -> int:
        return hash(self._heads)

    def __repr__(self) -> str:
        return f"HeadSet([{', '.join(h.label for h in self._heads)}])"

    @property
    def labels(self) -> list[str]:
        return [h.label for h in self._heads]

    @property
    def layers(self) -> list[int]:
        return sorted({h.layer for h in self._heads})

    def heads_in(self, layer: int) -> list[int]:
        return [h.head for h in self._heads if h.layer == layer]

    def index_by_layer(self) -> dict[int, torch.Tensor]:
        """{layer: LongTensor of the set's query heads in that layer}, for vectorized edits."""
        return {layer: torch.tensor(self.heads_in(layer)) for layer in self.layers}

    def mask(self, geometry: HeadGeometry) -> torch.Tensor:
        """Boolean [layer, head] tensor, True where a head is in the set."""
        out = torch.zeros(geometry.n_layers, geometry.n_heads, dtype=torch.bool)
        for head in self._heads:
            geometry.check(head)
            out[head.layer, head.head] = True
        return out

    def union(self, other: Iterable[Head]) -> HeadSet:
        return HeadSet([*self._heads, *other])

    def difference(self, other: Iterable[Head]) -> HeadSet:
        drop = set(other)
        return HeadSet(h for h in self._heads if h not in drop)


class RowHeads:
    """One HeadSet per batch row: the heads a per-row intervention acts on in each row.

    `HeadScale`, `AttentionEdit` (and the edits built on it) and `ACT` accept it wherever
    they accept a HeadSet; in batch row r they then act on `rows[r]` only, and compute
    for that row exactly what the intervention on the HeadSet `rows[r]` computes for it
    (tests/interp/test_row_heads.py). A batch of another size is refused. Rows may be
    HeadSets or anything a HeadSet reads; an empty row leaves its batch row unchanged.
    """

    def __init__(self, rows: Iterable[HeadSet | Iterable[HeadLike] | HeadLike]) -> None:
        if isinstance(rows, HeadSet | str | Head) or not isinstance(rows, Iterable):
            raise InputError(
                f"RowHeads takes one head set per batch row, got {rows!r}: give a list such"
                " as [HeadSet('L1H0'), HeadSet()]."
            )
        self.rows: tuple[HeadSet, ...] = tuple(
            row if isinstance(row, HeadSet) else HeadSet(row) for row in rows
        )
        if not self.rows:
            raise InputError("RowHeads needs at least one row.")

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[HeadSet]:
        return iter(self.rows)

    def __getitem__(self, row: int) -> HeadSet:
        return self.rows[row]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RowHeads) and self.rows == other.rows

    def __hash__(self) -> int:
        return hash(self.rows)

    def __repr__(self) -> str:
        return f"RowHeads({list(self.rows)!r})"

    @property
    def labels(self) -> list[list[str]]:
        """Each row's labels: the reproducible record of the sets."""
        return [row.labels for row in self.rows]

    @property
    def all_heads(self) -> HeadSet:
        """The union of the rows' sets: the heads some row acts on."""
        return HeadSet(h for row in self.rows for h in row)

    @property
    def layers(self) -> list[int]:
        return self.all_heads.layers

    def index_by_layer(self) -> dict[int, torch.Tensor]:
        """{layer: the heads some row acts on there}, as `HeadSet.index_by_layer`."""
        return self.all_heads.index_by_layer()

    def mask(self, geometry: HeadGeometry) -> torch.Tensor:
        """Boolean [layer, row, head] tensor, True where the row's set holds the head."""
        return torch.stack([row.mask(geometry) for row in self.rows], dim=1)

    def select(self, rows: Sequence[int]) -> RowHeads:
        """The sets of batch rows `rows`, in that order (a batch cut into slices)."""
        return RowHeads(self.rows[row] for row in rows)


Heads = HeadSet | RowHeads


def as_heads(heads: Heads | Iterable[HeadLike] | HeadLike) -> Heads:
    """RowHeads as they are, anything else read as one HeadSet for the whole batch."""
    return heads if isinstance(heads, RowHeads) else HeadSet(heads)
