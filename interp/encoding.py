"""A tokenized batch: left-padded token ids with their attention mask and positions.

`Model.encode` returns an `Encoding`: a batch of one row for one text, or a left-padded
batch for several, so every row's last token sits at position -1, where next-token logits,
choice scores and generation read. It is a mapping of the keyword arguments every HF causal
LM's forward and `generate` take (`input_ids`, `attention_mask`, `position_ids`), so
`model.hf(**encoding)` and `model.hf.generate(**encoding, max_new_tokens=20)` work as they
are (`len(encoding)` is 3, the number of those keys, as for a dict; the batch size is
`encoding.input_ids.shape[0]`). The explicit `position_ids` number each row's real tokens
0..n-1, as if the row were alone: without them HF's forward numbers a padded row's tokens
from the padding on, which shifts their rotary positions. Memory: three [batch, pos] int64
tensors.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

_KEYS = ("input_ids", "attention_mask", "position_ids")


@dataclass(frozen=True, eq=False)
class Encoding(Mapping[str, Tensor]):
    """Token ids of one or more texts as a left-padded batch.

    Attributes:
        input_ids: [batch, pos] token ids; padding is on the left.
        attention_mask: [batch, pos] 1 on real tokens, 0 on padding.

    Example:
        >>> from interp.tiny_models import tiny_llama
        >>> model = tiny_llama()
        >>> batch = model.encode(["hello", "hi"])
        >>> batch.input_ids.shape, batch.lengths
        (torch.Size([2, 5]), [5, 2])
        >>> model.hf(**batch).logits.shape
        torch.Size([2, 5, 259])
    """

    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]

    @classmethod
    def left_padded(
        cls, rows: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"
    ) -> Encoding:
        """Stack token-id rows into a batch, padding shorter rows on the left with `pad_id`."""
        width = max(len(row) for row in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for index, row in enumerate(rows):
            if row:
                ids[index, width - len(row) :] = torch.tensor(row, dtype=torch.long)
                mask[index, width - len(row) :] = 1
        return cls(ids.to(device), mask.to(device))

    @property
    def position_ids(self) -> Int[Tensor, "batch pos"]:
        """Each real token's position within its own text (0 on padding)."""
        return (self.attention_mask.cumsum(-1) - 1).clamp_min(0)

    @property
    def lengths(self) -> list[int]:
        """Real tokens per row."""
        return self.attention_mask.sum(-1).tolist()

    def ids(self, row: int = 0) -> Int[Tensor, " pos"]:
        """The unpadded token ids of one row (the APIs that take a single [pos] sequence)."""
        return self.input_ids[row, self.input_ids.shape[1] - self.lengths[row] :]

    def __getitem__(self, key: str) -> Tensor:
        if key not in _KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(_KEYS)

    def __len__(self) -> int:
        return len(_KEYS)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Encoding)
            and torch.equal(self.input_ids, other.input_ids)
            and torch.equal(self.attention_mask, other.attention_mask)
        )

    __hash__ = None  # type: ignore[assignment]  # holds mutable tensors
