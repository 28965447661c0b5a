"""What a residual-stream SAE's latents say about a prompt, and which heads write a latent.

`top_latents` runs prompts, encodes the SAE's hook point at every token and keeps each
token's strongest latents: a tidy `TokenScores` (example, position, token, rank, latent,
activation). `latent_attribution` splits one latent's pre-activation at one position into
direct contributions (the direct-logit-attribution idea, with the SAE's encoder row in
place of an unembedding), so the latent can be joined with any other `HeadScores`:

    pre_j(x) = c(x)·Σ_parts part·w_j + b_enc,j - b_dec·w_j,   x = embed + Σ_l (attn_l + mlp_l)

where w_j = W_enc[:, j], c(x) = sqrt(d_model)/‖x‖ for an SAE with sae-lens's
`constant_norm_rescale` (else 1), and attn_l = Σ_h z_h·W_O,h. A head's score is
c(x)·(z_h·W_O,h)_p·w_j at the chosen position p: what it writes straight into the residual
the SAE reads, not what it causes through later layers (those paths are in the MLP and
later-head terms). Heads of layers after the hook cannot write it and are left out. For
`hook_resid_post` of layer L the heads of layers 0..L count; for `hook_resid_pre`, 0..L-1.
The terms add up to the pre-activation exactly (up to float error), so the embedding, MLP
and bias terms are what the heads leave. `constant_norm_rescale` is linear at a fixed x,
so the split stays exact. Method notes: docs/methods.md §11.

Cost: one forward per batch of prompts for `top_latents`; one forward keeping the
[pos, head, d_model] head outputs of every layer up to the hook for `latent_attribution`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interp.errors import InputError
from interp.hook_points import record
from interp.models import Model
from interp.prompts import as_texts
from interp.results import HeadScores, Provenance, TokenScores, hash_inputs
from interp.saes import TrainedSAE

__all__ = ["latent_attribution", "top_latents"]

_RESIDUAL = re.compile(r"blocks\.(\d+)\.hook_resid_(pre|post)")
_LINEAR_NORMALISATIONS = ("none", "constant_norm_rescale")  # one scale per residual vector


@dataclass(frozen=True)
class LatentReading:
    """What `read_latents` returns: its tables by file name, and the figures.

    Attributes:
        latents: each token's top latents (`top_latents`).
        heads: with a latent asked for, each head's direct contribution to it.
        figures: with `heads`, its layer x head map.
    """

    latents: TokenScores
    heads: HeadScores | None = None
    figures: dict[str, Any] = field(default_factory=dict)

    def summary_lines(self) -> list[str]:
        """Each token's top latents; with `heads`, the heads that write the latent most."""
        lines = []
        for pos, rows in self.latents.data.groupby("position"):
            listed = ", ".join(f"{r.latent} ({r.activation:.2f})" for r in rows.itertuples())
            lines.append(f"{pos:4d} {rows.token.iloc[0]!r:>14}: {listed}")
        if self.heads is not None:
            heads = self.heads.data
            top = heads.reindex(heads.score.abs().sort_values(ascending=False).index)
            listed = ", ".join(f"{r.label} {r.score:+.2f}" for r in top.head(5).itertuples())
            lines.append(
                f"latent {heads.latent.iloc[0]} at position {heads.position.iloc[0]}:"
                f" pre-activation {heads.pre_activation.iloc[0]:.2f};"
                f" heads {top.score.sum():+.2f}, top: {listed}"
            )
        return lines

    def tables(self) -> dict[str, TokenScores | HeadScores]:
        """The tables by file name: latents, and latent_<j>_heads with a latent."""
        if self.heads is None:
            return {"latents": self.latents}
        return {
            "latents": self.latents,
            f"latent_{self.heads.data.latent.iloc[0]}_heads": self.heads,
        }


def read_latents(
    model: Model,
    trained: TrainedSAE,
    prompt: str,
    *,
    top_k: int = 5,
    latent: int | None = None,
    position: int = -1,
) -> LatentReading:
    """`interp sae latents` in one call: each token's top latents of `prompt` and, for
    `latent`, the heads that write it at `position` (with their map)."""
    from interp.figures import head_heatmap

    trained.check(model)
    table = top_latents(model, trained, prompt, k=top_k)
    if latent is None:
        return LatentReading(table)
    heads = latent_attribution(model, trained, prompt, latent, position=position)
    title = f"Direct contribution of each head to latent {latent} ({trained.hook})"
    figure = head_heatmap(heads, "score", title, model.geometry, label="contribution")
    return LatentReading(table, heads, {f"latent_{latent}_heads": figure})


def _encode(trained: TrainedSAE, x: Tensor) -> Tensor:
    """Latents of [pos, ...] activations: a hook_z SAE flattens [head, d_head] itself."""
    if not getattr(trained.sae, "hook_z_reshaping_mode", False):
        x = x.flatten(1)
    with torch.no_grad():
        return trained.sae.encode(x.to(trained.sae.device, trained.sae.dtype))


def _provenance(trained: TrainedSAE, model: Model, config: dict, texts: list[str]) -> Provenance:
    return Provenance(
        **model.provenance_fields(),
        analyzer="sae_latents",
        config={"hook": trained.hook, "sae_inputs": _sae_inputs(trained), **config},
        inputs_hash=hash_inputs(texts),
        n_inputs=len(texts),
    )


def top_latents(
    model: Model, trained: TrainedSAE, prompts: str | Sequence[str], *, k: int = 5
) -> TokenScores:
    """Each token's `k` strongest active latents (fewer where fewer are active).

    Args:
        model: the model the SAE was trained on (checked).
        trained: an SAE on a token hook point.
        prompts: one prompt or several (one forward each, so no padding reaches the SAE).
        k: latents kept per token.

    Returns:
        TokenScores with example, position, token, rank (0 = strongest), latent, activation.

    Example:
        >>> from interp.activations import collect_tokens
        >>> from interp.saes import SAETrainConfig, train_sae
        >>> from interp.tiny_models import tiny_llama
        >>> model = tiny_llama()
        >>> acts = collect_tokens(model, ["hello world"], "blocks.1.hook_resid_post")
        >>> sae = train_sae(acts, SAETrainConfig(d_sae=16, l1_coefficient=0.0))
        >>> top_latents(model, sae, "hi there", k=2).data.columns.tolist()
        ['example', 'position', 'token', 'rank', 'latent', 'activation']
    """
    trained.check(model)
    _check_tokens(trained)
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}.")
    texts = as_texts(prompts)
    frames = []
    for example, text in enumerate(texts):
        ids = model.encode(text).input_ids
        x = record(model, ids, [trained.hook])[trained.hook][0]  # [pos, ...]
        acts = _encode(trained, x).float().cpu()  # [pos, d_sae]
        values, latents = acts.topk(min(k, acts.shape[-1]), dim=-1)  # [pos, k]
        position, rank = np.nonzero(values.numpy() > 0)
        tokens = [model.tokenizer.decode([token]) for token in ids[0].tolist()]
        frames.append(
            pd.DataFrame(
                {
                    "example": example,
                    "position": position,
                    "token": [tokens[p] for p in position],
                    "rank": rank,
                    "latent": latents.numpy()[position, rank],
                    "activation": values.numpy()[position, rank],
                }
            )
        )
    data = pd.concat(frames, ignore_index=True)
    return TokenScores(data, _provenance(trained, model, {"k": k}, texts))


def latent_attribution(
    model: Model, trained: TrainedSAE, prompt: str, latent: int, *, position: int = -1
) -> HeadScores:
    """Each head's direct contribution to one latent's pre-activation at one position.

    Args:
        model: the model the SAE was trained on (checked).
        trained: an SAE on `blocks.{L}.hook_resid_pre` or `hook_resid_post`.
        prompt: the text.
        latent: the latent's index.
        position: the token (negative counts from the end).

    Returns:
        HeadScores of the heads that write the hook point: `score` (contribution, in units
        of the pre-activation), `share` (score / the sum over heads), plus `latent`,
        `position`, `pre_activation` (the whole, heads and the rest) and `activation`.
    """
    trained.check(model)
    match = _RESIDUAL.fullmatch(trained.hook)
    if match is None:
        raise InputError(
            f"Head attribution needs an SAE on the residual stream, not on {trained.hook!r}."
        )
    if getattr(trained.sae, "b_enc", None) is None:
        raise InputError(
            f"Head attribution splits W_enc·x + b_enc; a {type(trained.sae).__name__} has no"
            " such pre-activation."
        )
    if trained.sae.cfg.normalize_activations not in _LINEAR_NORMALISATIONS:
        raise InputError(
            "Head attribution splits inputs scaled by 'none' or 'constant_norm_rescale' only,"
            f" not by {trained.sae.cfg.normalize_activations!r}."
        )
    d_sae = trained.sae.cfg.d_sae
    if not 0 <= latent < d_sae:
        raise InputError(f"Latent {latent} is out of range for an SAE of {d_sae} latents.")
    ids = model.encode(prompt).input_ids
    n_pos = ids.shape[1]
    if not -n_pos <= position < n_pos:
        raise InputError(f"Position {position} is out of range for a {n_pos}-token prompt.")
    position %= n_pos
    layers = range(int(match.group(1)) + (match.group(2) == "post"))
    if not layers:
        raise InputError(f"No head writes {trained.hook}: it is the embedding.")
    names = [f"blocks.{layer}.attn.hook_result" for layer in layers]
    recorded = record(model, ids, [trained.hook, *names])
    x = recorded[trained.hook][0, position].float().cpu()  # [d_model]
    sae = trained.sae
    w = sae.W_enc[:, latent].detach().float().cpu()  # [d_model]
    scale = (
        x.shape[-1] ** 0.5 / x.norm()
        if sae.cfg.normalize_activations == "constant_norm_rescale"
        else 1.0
    )
    rows = [recorded[name][0, position].float().cpu() @ w * scale for name in names]  # [head]
    heads = torch.stack(rows).detach().numpy()  # [layer, head]
    pre = _pre_activation(trained, x, latent)
    total = heads.sum()
    extra = {
        "share": heads / total if total != 0 else np.full(heads.shape, np.nan),
        "latent": np.full(heads.shape, latent),
        "position": np.full(heads.shape, position),
        "pre_activation": np.full(heads.shape, pre),
        "activation": np.full(heads.shape, float(_encode(trained, x[None])[0, latent])),
    }
    config = {"latent": latent, "position": position}
    return HeadScores.from_matrix(heads, _provenance(trained, model, config, [prompt]), extra)


def _pre_activation(trained: TrainedSAE, x: Tensor, latent: int) -> float:
    """The latent's pre-activation on one residual vector, through sae-lens's own encoder."""
    sae = trained.sae
    with torch.no_grad():
        hidden = sae.process_sae_in(x[None].to(sae.device, sae.dtype)) @ sae.W_enc + sae.b_enc
    return float(hidden[0, latent])


def _sae_inputs(trained: TrainedSAE) -> str | None:
    """The SAE's training-text hash; None for an SAE made outside the toolkit."""
    return None if trained.provenance is None else trained.provenance.inputs_hash


def _check_tokens(trained: TrainedSAE) -> None:
    if trained.reduction != "tokens":
        raise InputError("Token latents need an SAE on a token hook point, not on head outputs.")
