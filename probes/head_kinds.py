"""The classic head kinds: previous-token, duplicate-token and induction scores.

As TransformerLens's head detector defines them (`transformer_lens.head_detector.
detect_head`, its default error measure "mul", nothing excluded): for a sequence of tokens
t_0..t_{N-1} and a head's post-softmax pattern A [query, key], a 0/1 lower-triangular
detection pattern P gives the score sum(A ⊙ P) / sum(A), and a list of sequences the mean
of their scores. The patterns, from the tokens alone:

* previous token: P[i, i-1] = 1;
* duplicate token: P[i, j] = 1 iff j < i and t_j = t_i;
* induction: the duplicate pattern shifted one key to the right, P[i, j] = 1 iff
  1 <= j <= i and t_{j-1} = t_i (attend to the token after an earlier copy of yourself).

The sequences are repeated random tokens, as in TransformerLens's tutorials: BOS (when
the tokenizer has one), then n random ordinary tokens (no special tokens), then the same n
again, drawn with a seeded generator. On the second half an induction head attends to the
token after the current token's first occurrence, a duplicate-token head to that
occurrence.

Copy suppression (McDougall et al. 2023) needs each head's OV circuit through the
unembedding and a negative-head ablation, far from cheap; it is not scored here.

Memory: the scores are reduced inside an attention hook, one block of query rows at a
time: [batch, head] sums per layer and kind, never a stored [query, key] pattern.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.config import Config, check_range
from interp.hooks import AttentionRows, attention_hooks
from interp.models import Model
from interp.results import HeadScores, Provenance, hash_inputs, head_frame

ANALYZER = "head-kinds"
KINDS = ("previous_token", "duplicate_token", "induction")


@dataclass(frozen=True, kw_only=True)
class HeadKindConfig(Config):
    """The repeated random-token sequences the scores are read on.

    Attributes:
        n_sequences: sequences (TransformerLens's tutorials: 10 or more).
        length: random tokens before the repeat (each sequence holds them twice).
        batch_size: sequences per forward.
        seed: seed of the token draw.
    """

    n_sequences: int = 10
    length: int = 50
    batch_size: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "n_sequences", 1)
        check_range(self, "length", 1)
        check_range(self, "batch_size", 1)


def repeated_tokens(model: Model, config: HeadKindConfig) -> Int[Tensor, "batch pos"]:
    """[n_sequences, (BOS) + 2 x length] ids: random ordinary tokens, then the same again."""
    tokenizer = model.tokenizer
    special = set(tokenizer.all_special_ids)
    ordinary = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    generator = torch.Generator().manual_seed(config.seed)
    draw = torch.randint(len(ordinary), (config.n_sequences, config.length), generator=generator)
    halves = ordinary[draw]
    ids = torch.cat([halves, halves], dim=1)
    if tokenizer.bos_token_id is not None:
        bos = torch.full((config.n_sequences, 1), tokenizer.bos_token_id)
        ids = torch.cat([bos, ids], dim=1)
    return ids


def detection_patterns(ids: Int[Tensor, "batch pos"]) -> Float[Tensor, "kind batch query key"]:
    """The three detection patterns of each sequence (module doc), float 0/1."""
    n = ids.shape[-1]
    below = torch.ones(n, n, dtype=torch.bool).tril(-1)  # j < i
    previous = torch.zeros(n, n, dtype=torch.bool)
    previous[1:, :-1] = torch.eye(n - 1, dtype=torch.bool)
    same = ids[:, :, None] == ids[:, None, :]  # [batch, i, j]: t_i = t_j
    duplicate = same & below
    induction = torch.zeros_like(duplicate)
    induction[:, :, 1:] = duplicate[:, :, :-1]  # P[i, j] = D[i, j - 1] ...
    induction &= torch.ones(n, n, dtype=torch.bool).tril()  # ... for j <= i
    return torch.stack([previous.expand_as(duplicate), duplicate, induction]).float()


class _Matches:
    """Attention hook: per layer, [kind, batch, head] sums of A ⊙ P and [batch, head] of A."""

    def __init__(self, patterns: Tensor, n_layers: int) -> None:
        self.patterns = patterns
        self.matched = [torch.zeros(0)] * n_layers
        self.total = [torch.zeros(0)] * n_layers

    def wants(self, layer: int, n_queries: int) -> bool:
        return True

    def __call__(self, rows: AttentionRows) -> None:
        probs = rows.probs.float()  # [batch, head, query, key] over the block's keys
        queries = rows.query_positions.to(self.patterns.device)
        pattern = self.patterns[:, :, queries, : probs.shape[-1]].to(probs.device)
        matched = torch.einsum("bhqk,nbqk->nbh", probs, pattern).cpu()
        total = probs.sum((-1, -2)).cpu()
        if self.matched[rows.layer].numel():
            matched, total = matched + self.matched[rows.layer], total + self.total[rows.layer]
        self.matched[rows.layer], self.total[rows.layer] = matched, total


def kind_scores(model: Model, ids: Int[Tensor, "batch pos"]) -> np.ndarray:
    """[kind, sequence, layer, head] scores of the sequences `ids` (one forward, no padding)."""
    hook = _Matches(detection_patterns(ids), model.geometry.n_layers)
    with torch.no_grad(), attention_hooks(model.hf, hook):
        model.hf(input_ids=ids.to(model.device), use_cache=False, logits_to_keep=1)
    matched = torch.stack(hook.matched, dim=2)  # [kind, batch, layer, head]
    total = torch.stack(hook.total, dim=1)  # [batch, layer, head]
    return (matched.double() / total.double()).numpy()


def run(model: Model, config: HeadKindConfig | None = None) -> HeadScores:
    """Previous-token, duplicate-token and induction scores of every head.

    The table has one row per head: `score` (the induction score, the kind researchers
    look for first) and one column per kind, each the mean over the sequences.

    Example:
        >>> from interp.tiny_models import tiny_llama
        >>> table = run(tiny_llama(), HeadKindConfig(n_sequences=2, length=8)).data
        >>> table.columns[4:].tolist()
        ['previous_token', 'duplicate_token', 'induction']
    """
    config = config or HeadKindConfig()
    ids = repeated_tokens(model, config)
    scores = np.concatenate(
        [kind_scores(model, batch) for batch in ids.split(config.batch_size)], axis=1
    ).mean(axis=1)
    provenance = Provenance(
        **model.provenance_fields(),
        analyzer=ANALYZER,
        config=config.to_dict(),
        inputs_hash=hash_inputs(ids.tolist()),
        n_inputs=len(ids),
    )
    columns = {"score": scores[2], **dict(zip(KINDS, scores, strict=True))}
    return HeadScores(pd.DataFrame(head_frame(columns)), provenance)
