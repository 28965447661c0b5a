"""SAE circuit identification: heads scored by discrete SAE codes seen only when the task is on.

O'Neill & Bui 2024 (arXiv 2405.12522; reference code charlieoneill11/sae-circuits @10fd2e7):
each head's output z_h·W_O,h, averaged over a prompt's positions, is one [d_model] row
(`interp.activations.collect_heads`); one SAE shared by every head is trained on the rows of a few
prompts drawn from positives and negatives together; a head's *code* on a prompt is its
row's argmax latent. A head's node score is the number of codes it shows on positive
prompts (the model can do the task) and never on negatives, |codes(pos) \\ codes(neg)|,
optionally divided by |codes(pos) ∪ codes(neg)|. The paper softmaxes the scores over heads
before its ROC; softmax is monotone, so the ranking and the ROC AUC are the same without it.

Edges: for each ordered pair of heads (h1, h2), the code pairs (code of h1, code of h2) seen
together on some positive prompt and on no negative one (`normalise`: divided by the
distinct pairs on positives plus those on negatives, as the reference code). Ordered pairs
are ranked by that count and flattened into heads (h1, h2, h1, h2, ...); the first
`edge_entries` heads of that list (reference code: (all heads)² // 2, 36,450 on a 270-head
model; `edge_rule="per_layer"` is the toolkit's earlier heads-per-layer² // 2, 40 there)
each add 1 to their head's edge-derived node score. Ties keep
pair order (h1, then h2), where the reference's unstable sort leaves them arbitrary, and a
head is never paired with itself (the reference ranks those zero-count pairs too).

The SAE is sae-lens's standard ReLU SAE trained by its `SAETrainer` (`interp.saes`). Where
it differs from the paper's hand-written one: the paper averages the squared error over
d_model and renormalises decoder rows to unit norm each step; sae-lens sums the error over
d_model and weights each latent's L1 by its decoder row's norm. `sparsity` is the paper's λ;
it reaches sae-lens as l1_coefficient = λ·d_model. This is not the reference's objective: the
reference normalises each input dimension's decoder row (not each latent's), keeps encoder
rows at unit norm and does not clip gradients, where sae-lens clips them to norm 1.

Cost: one forward per batch of prompts with every layer's head outputs reduced in the hook
([batch, pos, head, d_model] per layer, transiently), and `epochs` full-batch SAE steps on
n_train x heads rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from scipy.stats import rankdata
from torch import Tensor

from interp.activations import Activations, collect_heads
from interp.config import Config, check_range
from interp.errors import InputError
from interp.heads import HeadSet
from interp.models import Model
from interp.results import HeadScores, Provenance, hash_inputs
from interp.saes import SAETrainConfig, TrainedSAE, train_sae

__all__ = [
    "SAECircuit",
    "SAECircuitConfig",
    "codes",
    "edge_node_scores",
    "edge_scores",
    "node_scores",
    "roc_auc",
    "roc_points",
    "sae_circuit",
    "score_heads",
]

ANALYZER = "sae_circuit"


@dataclass(frozen=True, kw_only=True)
class SAECircuitConfig(Config):
    """The paper's settings (its `main_results.py` and §3).

    Attributes:
        d_sae: latents of the shared SAE (paper: 200).
        sparsity: λ of the paper's loss MSE + λ·mean‖latent‖₁ (IOI and Greater-than 0.02;
            Docstring 0.05).
        lr: Adam learning rate (paper: 1e-3).
        epochs: full-batch training steps (paper: 500).
        n_train: prompts the SAE trains on, drawn at random from positives and negatives
            together (paper: 10; 5-10 suffice).
        normalise: divide each node score by the head's number of distinct codes, each
            edge count by the pair's distinct code pairs (the reference code's
            `normalise`, off in its main results).
        edge_entries: heads taken from the flattened edge ranking; 0 means `edge_rule`'s.
        edge_rule: "all_heads": (all heads)² // 2, the reference code's; "per_layer":
            heads-per-layer² // 2, the toolkit's earlier count.
        batch_size: prompts per forward when collecting head outputs.
        seed: seeds the draw of training prompts and the SAE.
    """

    d_sae: int = 200
    sparsity: float = 0.02
    lr: float = 1e-3
    epochs: int = 500
    n_train: int = 10
    normalise: bool = False
    edge_entries: int = 0
    edge_rule: Literal["all_heads", "per_layer"] = "all_heads"
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("d_sae", "epochs", "n_train", "batch_size"):
            check_range(self, name, 1)
        check_range(self, "edge_entries", 0)
        check_range(self, "seed", 0)
        check_range(self, "sparsity", 0)
        check_range(self, "lr", 0, strict_low=True)


@dataclass(frozen=True, eq=False)
class SAECircuit:
    """Node scores per head, and the SAE that made them.

    Attributes:
        nodes: `score` (|codes(pos) \\ codes(neg)|, normalised if asked), `positive_only`,
            `negative_only`, `distinct` (codes over both) per head.
        edges: [head, head] code pairs seen on positives and never on negatives, heads in
            `nodes` order (normalised if asked; 0 on the diagonal).
        edge_nodes: `score` per head: its entries among the top of the edge ranking.
        sae: the shared SAE with its provenance.
    """

    nodes: HeadScores
    edges: np.ndarray
    edge_nodes: HeadScores
    sae: TrainedSAE


def codes(sae: TrainedSAE, acts: Activations) -> Int[Tensor, "text head"]:
    """Each (text, head) row's argmax latent: the head's discrete code on that text."""
    values = acts.values.to(sae.sae.device, sae.sae.dtype)  # [text, head, d_model]
    with torch.no_grad():
        return sae.sae.encode(values).argmax(-1).cpu()


def _code_sets(
    positive: Int[Tensor, "pos_text group"], negative: Int[Tensor, "neg_text group"], n_values: int
) -> dict[str, np.ndarray]:
    """Per column (group): distinct values on positives, on negatives, and only on either."""
    if positive.shape[1] != negative.shape[1]:
        raise InputError(
            f"Positive codes cover {positive.shape[1]} heads, negative {negative.shape[1]}."
        )
    groups = positive.shape[1]
    offset = torch.arange(groups) * n_values  # one key space per group
    pos, neg = torch.unique(positive + offset), torch.unique(negative + offset)

    def per_group(keys: Tensor) -> np.ndarray:
        return torch.bincount(keys // n_values, minlength=groups).numpy()

    return {
        "positive_only": per_group(pos[~torch.isin(pos, neg)]),
        "negative_only": per_group(neg[~torch.isin(neg, pos)]),
        "positive": per_group(pos),
        "negative": per_group(neg),
    }


def node_scores(
    positive: Int[Tensor, "pos_text head"],
    negative: Int[Tensor, "neg_text head"],
    *,
    normalise: bool = False,
) -> dict[str, np.ndarray]:
    """Per head: codes on positives never seen on negatives, and the counts behind it.

    Returns:
        {"score", "positive_only", "negative_only", "distinct"}, each a [head] array.
    """
    n_values = int(max(positive.max(), negative.max())) + 1
    sets = _code_sets(positive, negative, n_values)
    distinct = sets["positive"] + sets["negative_only"]
    score = sets["positive_only"].astype(np.float64)
    return {
        "score": score / distinct if normalise else score,
        "positive_only": sets["positive_only"],
        "negative_only": sets["negative_only"],
        "distinct": distinct,
    }


def edge_scores(
    positive: Int[Tensor, "pos_text head"],
    negative: Int[Tensor, "neg_text head"],
    *,
    normalise: bool = False,
    block: int = 16,
) -> Float[np.ndarray, "head head"]:
    """Per ordered pair of heads: code pairs seen together on positives, never on negatives.

    Computed `block` first heads at a time: [text, block x head] pair keys per step.
    """
    n_heads = positive.shape[1]
    n_codes = int(max(positive.max(), negative.max())) + 1
    out = np.zeros((n_heads, n_heads))
    for first in range(0, n_heads, block):
        rows = slice(first, min(first + block, n_heads))

        def pairs(codes: Tensor, rows: slice = rows) -> Tensor:  # [text, block * head]
            return (codes[:, rows, None] * n_codes + codes[:, None, :]).flatten(1)

        sets = _code_sets(pairs(positive), pairs(negative), n_codes**2)
        count = sets["positive_only"].astype(np.float64)
        if normalise:
            total = sets["positive"] + sets["negative"]
            count = np.divide(count, total, out=np.zeros_like(count), where=total > 0)
        out[rows] = count.reshape(-1, n_heads)
    np.fill_diagonal(out, 0)
    return out


def edge_node_scores(edges: Float[np.ndarray, "head head"], entries: int) -> np.ndarray:
    """Per head: its entries among the first `entries` of the flattened edge ranking."""
    n_heads = edges.shape[0]
    first, second = np.nonzero(~np.eye(n_heads, dtype=bool))  # ordered pairs, h1 then h2
    order = np.argsort(-edges[first, second], kind="stable")
    flat = np.stack([first[order], second[order]], axis=1).ravel()  # h1, h2, h1, h2, ...
    return np.bincount(flat[:entries], minlength=n_heads).astype(np.float64)


def sae_circuit(
    model: Model,
    positives: Sequence[str],
    negatives: Sequence[str],
    config: SAECircuitConfig | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> SAECircuit:
    """Score every head by SAE codes seen on positive prompts and never on negatives.

    Args:
        model: the model.
        positives: prompts on which the model does the task (IOI: the clean prompts).
        negatives: prompts on which it cannot (IOI: the corrupted, ABC prompts).
        config: the method's settings (default: the paper's).
        progress: (prompts done, prompts in all) while collecting head outputs.

    Returns:
        Node scores for every head and the trained SAE.
    """
    config = config or SAECircuitConfig()
    if not positives or not negatives:
        raise InputError("sae_circuit needs positive and negative prompts; one set is empty.")
    texts = [*positives, *negatives]
    acts = collect_heads(model, texts, batch_size=config.batch_size, progress=progress)
    return score_heads(acts, len(positives), config)


def score_heads(
    acts: Activations, n_positive: int, config: SAECircuitConfig | None = None
) -> SAECircuit:
    """`sae_circuit` on head outputs already collected: positives first, then negatives.

    Collecting once and scoring with several seeds is how the paper's spread over trials
    is measured without a forward per trial.
    """
    config = config or SAECircuitConfig()
    if acts.reduction != "head_mean":
        raise InputError("score_heads needs head outputs from collect_heads, not token rows.")
    if not 0 < n_positive < acts.n_texts:
        raise InputError(
            f"n_positive {n_positive} must leave both sets non-empty of {acts.n_texts}."
        )
    if config.n_train > acts.n_texts:
        raise InputError(f"n_train {config.n_train} is more than the {acts.n_texts} prompts given.")
    generator = torch.Generator().manual_seed(config.seed)
    chosen = torch.randperm(acts.n_texts, generator=generator)[: config.n_train]
    trained = train_sae(
        acts.select(chosen),
        SAETrainConfig(
            d_sae=config.d_sae,
            l1_coefficient=config.sparsity * acts.values.shape[-1],
            lr=config.lr,
            batch_size=config.n_train * len(acts.heads),  # full batch, as the paper
            epochs=config.epochs,
            seed=config.seed,
        ),
    )
    seen = codes(trained, acts)
    positive, negative = seen[:n_positive], seen[n_positive:]
    columns = node_scores(positive, negative, normalise=config.normalise)
    edges = edge_scores(positive, negative, normalise=config.normalise)
    per_layer = len(acts.heads) // len(acts.layers)
    by_rule = len(acts.heads) if config.edge_rule == "all_heads" else per_layer
    entries = config.edge_entries or by_rule**2 // 2
    provenance = scores_provenance(acts, n_positive, config)
    heads = {
        "layer": [head.layer for head in acts.heads],
        "head": [head.head for head in acts.heads],
        "label": [head.label for head in acts.heads],
    }
    nodes = pd.DataFrame({**heads, "score": columns.pop("score"), **columns})
    edge_nodes = pd.DataFrame({**heads, "score": edge_node_scores(edges, entries)})
    return SAECircuit(
        HeadScores(nodes, provenance), edges, HeadScores(edge_nodes, provenance), trained
    )


def scores_provenance(acts: Activations, n_positive: int, config: SAECircuitConfig) -> Provenance:
    """The provenance of `score_heads(acts, n_positive, config)`'s tables, known before it runs."""
    return Provenance(
        model=acts.model,
        weights_hash=acts.weights_hash,
        analyzer=ANALYZER,
        config=config.to_dict(),
        inputs_hash=hash_inputs([acts.data_hash, n_positive]),
        n_inputs=acts.n_texts,
    )


def _inside(scores: HeadScores, circuit: HeadSet) -> tuple[pd.DataFrame, np.ndarray]:
    """The per-head table and which of its rows are circuit heads (both sides non-empty)."""
    table = scores.per_head()
    wanted = {(h.layer, h.head) for h in circuit}
    inside = np.array([(int(r.layer), int(r.head)) in wanted for r in table.itertuples()])
    n_in, n_out = int(inside.sum()), int((~inside).sum())
    if n_in == 0 or n_out == 0:
        raise InputError(
            f"ROC AUC needs heads inside and outside the circuit; got {n_in} inside, {n_out} out."
        )
    return table, inside


def roc_points(scores: HeadScores, circuit: HeadSet, column: str = "score") -> pd.DataFrame:
    """The ROC curve of a head ranking against a circuit: `fpr`, `tpr` per distinct score.

    One point per threshold, from (0, 0) to (1, 1); tied heads move both rates at once,
    so the area under these points (trapezoids) is `roc_auc` with ties counting one half.
    """
    table, inside = _inside(scores, circuit)
    values = table[column].to_numpy()
    order = np.argsort(-values, kind="stable")
    values, hits = values[order], inside[order]
    last = np.r_[np.nonzero(np.diff(values))[0], len(values) - 1]  # end of each tie block
    tpr = np.r_[0.0, np.cumsum(hits)[last] / hits.sum()]
    fpr = np.r_[0.0, np.cumsum(~hits)[last] / (~hits).sum()]
    return pd.DataFrame({"fpr": fpr, "tpr": tpr})


def roc_auc(scores: HeadScores, circuit: HeadSet, column: str = "score") -> float:
    """ROC AUC of a head ranking against a reference circuit (ties count one half).

    The Mann-Whitney form: the chance that a circuit head outscores a head outside it.
    """
    table, inside = _inside(scores, circuit)
    n_in, n_out = int(inside.sum()), int((~inside).sum())
    ranks = rankdata(table[column].to_numpy())
    return float((ranks[inside].sum() - n_in * (n_in + 1) / 2) / (n_in * n_out))
