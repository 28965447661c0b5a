"""The arms of the retrieval-head ablation: which heads each NIAH test masks, per condition.

A `Condition` (one point of the curve: top-K or K random heads, a seed) is an effects arm
built per batch (`interp.interventions.base.PerItem`): random draws differ per test, so
`for_items(tests)` is the `Mask` of exactly those tests, one head set per batch row
(`interp.heads.RowHeads`). Every condition's identity is K = 0, the unmasked baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from interp.heads import Head, HeadSet, RowHeads
from interp.interventions import HeadScale, uniform_attention
from interp.interventions.base import applied_all
from interp.models import Model
from interp.work import Row
from probes.niah import NeedleTest


@dataclass(frozen=True)
class Mask:
    """The masking of one batch: `heads[row]` in each batch row (an `Intervention`).

    `masking="zero"` is `HeadScale(heads, alpha=0)`, exact per row for any rows. Under
    `"uniform"` every condition, K = 0 included, runs the explicit kernel in every layer
    (`uniform_attention` of all heads' `identity()` under the per-row edit), so all arms of
    the curve share their kernels and differ by the masking alone (like with like).
    """

    heads: RowHeads
    masking: Literal["zero", "uniform"]

    def applied(self, model: Model) -> AbstractContextManager[None]:
        if self.masking == "zero":
            return HeadScale(self.heads, alpha=0.0).applied(model)
        everywhere = uniform_attention(model.geometry.all_heads()).identity()
        return applied_all(model, everywhere, uniform_attention(self.heads))

    def identity(self) -> Mask:
        """No head masked in any row, through the same kernels."""
        return Mask(RowHeads(HeadSet() for _ in self.heads), self.masking)

    def to_dict(self) -> dict[str, Any]:
        return {"intervention": "Mask", "masking": self.masking, "heads": self.heads.labels}


@dataclass(frozen=True)
class Condition:
    """One curve point as an effects arm (`interp.interventions.base.PerItem`): the heads
    each test masks, as the `Mask` of a batch of tests; its identity is K = 0.

    Attributes:
        condition: "top" or "random" ("top" with k = 0: the unmasked baseline).
        k, seed: heads masked and the random draw's seed (0 for "top").
        top: the top-k heads; pool: the heads random ones are drawn from.
        masking, random_draw: as in `AblationConfig`.
    """

    condition: str
    k: int
    seed: int
    top: HeadSet
    pool: tuple[Head, ...]
    masking: Literal["zero", "uniform"]
    random_draw: Literal["per_test", "per_seed"]

    def identity(self) -> Condition:
        return Condition("top", 0, 0, HeadSet(), (), self.masking, self.random_draw)

    def for_items(self, values: Sequence[NeedleTest]) -> Mask:
        return Mask(RowHeads(self.heads(test) for test in values), self.masking)

    def heads(self, test: NeedleTest) -> HeadSet:
        """The heads `test` masks under this condition."""
        if self.condition != "random":
            return self.top
        # Seeded by (seed, k[, test]), so runs are reproducible and their tables merge.
        where = [test.needle_index, test.length, round(test.depth * 1e4)]
        key = [self.seed, self.k] + ([] if self.random_draw == "per_seed" else where)
        chosen = np.random.default_rng(key).choice(len(self.pool), size=self.k, replace=False)
        return HeadSet(self.pool[i] for i in chosen)

    def row(self, test: NeedleTest) -> Row:
        """The test's row of the tests table, but for its response."""
        return {
            **test.key(),
            "answer": test.answer,
            "condition": "none" if self.k == 0 else self.condition,
            "k": self.k,
            "seed": self.seed,
            "heads": ",".join(self.heads(test).labels),
        }
