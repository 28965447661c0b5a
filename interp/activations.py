"""Activations for sparse autoencoders, recorded through the toolkit's hook points.

`collect_tokens` keeps one [d_model] row per real token of a residual-stream-shaped point
(`blocks.{layer}.hook_resid_post`, ...); `collect_heads` one [head, d_model] block per text,
each head's output z_h·W_O,h averaged over the text's real positions (O'Neill & Bui 2024,
arXiv 2405.12522: the input of SAE circuit identification). Both go through
`interp.hook_points` (TransformerLens names on the plain HF model), batched, with a progress
callback; `interp.saes` trains SAEs on them (docs/methods.md §11).

Memory: everything is in memory. `collect_tokens` holds [tokens, d_model] float32 (135M
model: 2.3 KiB a token); `collect_heads` [texts, layers x heads, d_model] float32 and, per
batch, one [batch, pos, head, d_model] tensor of each layer, reduced inside its hook.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import ConfigError, InputError, did_you_mean
from interp.heads import Head
from interp.hook_points import hooked
from interp.models import Model
from interp.results import hash_inputs

__all__ = ["HEAD_FORM", "TOKEN_FORMS", "Activations", "collect_heads", "collect_tokens"]

Progress = Callable[[int, int], None]
Reduction = Literal["tokens", "head_mean"]
TOKEN_FORMS = (
    "blocks.{layer}.hook_resid_pre",
    "blocks.{layer}.hook_resid_post",
    "blocks.{layer}.hook_attn_out",
    "blocks.{layer}.hook_mlp_out",
)
HEAD_FORM = "blocks.{layer}.attn.hook_result"
_TOKEN_NAME = re.compile(
    r"blocks\.(\d+)\.(" + "|".join(f.split(".")[-1] for f in TOKEN_FORMS) + ")"
)


@dataclass(frozen=True, eq=False)
class Activations:
    """Activations collected for an SAE, with the model, hook and texts they came from.

    Attributes:
        values: [token, d_model] for "tokens" (real tokens of every text, in order);
            [text, head, d_model] for "head_mean" (heads in `heads` order).
        hook: the TL name ("blocks.3.hook_resid_post"), or `HEAD_FORM` for head outputs.
        layers: the layers recorded.
        reduction: "tokens" or "head_mean" (each head's output averaged over positions).
        model: the model's spec.
        weights_hash: the model's weights fingerprint (`Model.weights_hash`).
        data_hash: `hash_inputs` of the texts.
        n_texts: how many texts.
        heads: the heads of the second axis for "head_mean"; empty for "tokens".
        skip_first: "tokens" rows leave out each text's first token (see `collect_tokens`).
    """

    values: Tensor
    hook: str
    layers: tuple[int, ...]
    reduction: Reduction
    model: str
    weights_hash: str
    data_hash: str
    n_texts: int
    heads: tuple[Head, ...] = ()
    skip_first: bool = False

    def rows(self) -> Float[Tensor, "row d_model"]:
        """The SAE's training rows: one per token, or one per (text, head)."""
        return self.values.reshape(-1, self.values.shape[-1])

    def select(self, texts: Sequence[int] | Tensor) -> Activations:
        """The "head_mean" activations of some texts; the data hash records which."""
        if self.reduction != "head_mean":
            raise InputError("select picks texts of head outputs; token rows have no text axis.")
        index = torch.as_tensor(texts, dtype=torch.long).reshape(-1)
        return replace(
            self,
            values=self.values[index],
            data_hash=hash_inputs([self.data_hash, index.tolist()]),
            n_texts=len(index),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Activations):
            return NotImplemented
        mine, theirs = _fields(self), _fields(other)
        return torch.equal(mine.pop("values"), theirs.pop("values")) and mine == theirs

    __hash__ = None  # type: ignore[assignment]  # holds a mutable tensor


def _fields(acts: Activations) -> dict[str, Any]:
    """Fields of an Activations as a dict, without copying the tensor."""
    return {name: getattr(acts, name) for name in acts.__dataclass_fields__}


def _batches(texts: Sequence[str], batch_size: int) -> list[list[str]]:
    if isinstance(texts, str):
        raise InputError("Give a list of texts, not one string.")
    if not texts:
        raise InputError("No texts to collect activations from: the dataset is empty.")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
    return [list(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]


def _check_layer(layer: int, model: Model, what: str) -> None:
    if not 0 <= layer < model.geometry.n_layers:
        raise InputError(
            f"{what}: layer {layer} is out of range for a {model.geometry.n_layers}-layer model."
        )


def collect_tokens(
    model: Model,
    texts: Sequence[str],
    hook: str,
    *,
    batch_size: int = 8,
    skip_first: bool = False,
    progress: Progress | None = None,
) -> Activations:
    """Record a [batch, pos, d_model] hook point on every real token of the texts.

    With `skip_first` each text's first token is left out: on SmolLM2 and most LLMs its
    residual has a massive norm (the attention sink; on SmolLM2's layer 3 ~9x the median) that
    would dominate an SAE's squared error. An SAE trained so is spliced in everywhere but
    there (`interp.saes.splice_loss`).

    Args:
        model: the model.
        texts: the dataset, tokenized as `model.encode` does (left-padded batches).
        hook: a TL name of a residual-stream-shaped point (forms: `TOKEN_FORMS`).
        batch_size: texts per forward.
        skip_first: leave out each text's first token.
        progress: called with (texts done, texts in all) after each batch.

    Returns:
        Activations with values [tokens, d_model] float32 on the CPU.

    Raises:
        InputError: an unknown or wrongly shaped hook, a layer out of range, no texts.

    Example:
        >>> from interp.tiny_models import tiny_llama
        >>> acts = collect_tokens(tiny_llama(), ["hello", "hi"], "blocks.1.hook_resid_post")
        >>> acts.values.shape
        torch.Size([7, 64])
    """
    match = _TOKEN_NAME.fullmatch(hook)
    if match is None:
        names = [form.format(layer=0) for form in TOKEN_FORMS]
        raise InputError(
            f"No token hook point {hook!r}; forms: {', '.join(TOKEN_FORMS)}."
            + did_you_mean(hook, names)
        )
    layer = int(match.group(1))
    _check_layer(layer, model, hook)
    batches = _batches(texts, batch_size)
    chunks: list[Tensor] = []
    done = 0
    for batch in batches:
        encoding = model.encode(batch)
        real = encoding.attention_mask.bool()
        if skip_first:
            real &= encoding.position_ids > 0

        def keep(x: Tensor, real: Tensor = real) -> None:
            chunks.append(x[real].detach().to("cpu", torch.float32))  # [tokens, d_model]

        with torch.no_grad(), hooked(model.hf, {hook: keep}):
            model.hf(**encoding, use_cache=False, logits_to_keep=1)  # only the hooks' reads
        done += len(batch)
        if progress is not None:
            progress(done, len(texts))
    return Activations(
        values=torch.cat(chunks),
        hook=hook,
        layers=(layer,),
        reduction="tokens",
        model=model.spec,
        weights_hash=model.weights_hash,
        data_hash=hash_inputs(list(texts)),
        n_texts=len(texts),
        skip_first=skip_first,
    )


def collect_heads(
    model: Model,
    texts: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    batch_size: int = 8,
    progress: Progress | None = None,
) -> Activations:
    """Each head's output z_h·W_O,h averaged over each text's real positions.

    This is the input of SAE circuit identification (O'Neill & Bui 2024, §3): one SAE
    shared by all heads sees one [d_model] row per (text, head). Padding is left out of the
    mean, so a text's rows do not depend on the batch it was padded in (up to float error).

    Args:
        model: the model.
        texts: the dataset.
        layers: layers whose heads to record (default: all).
        batch_size: texts per forward.
        progress: called with (texts done, texts in all) after each batch.

    Returns:
        Activations with values [texts, len(layers) x n_heads, d_model] float32 on the CPU.

    Example:
        >>> from interp.tiny_models import tiny_llama
        >>> acts = collect_heads(tiny_llama(), ["hello", "hi"])
        >>> acts.values.shape, acts.heads[5].label
        (torch.Size([2, 12, 64]), 'L1H1')
    """
    wanted = tuple(range(model.geometry.n_layers) if layers is None else layers)
    if not wanted:
        raise InputError("collect_heads: no layers given.")
    for layer in wanted:
        _check_layer(layer, model, "collect_heads")
    batches = _batches(texts, batch_size)
    blocks: list[Tensor] = []
    done = 0
    for batch in batches:
        blocks.append(_head_means(model, batch, wanted))
        done += len(batch)
        if progress is not None:
            progress(done, len(texts))
    n_heads = model.geometry.n_heads
    return Activations(
        values=torch.cat(blocks),
        hook=HEAD_FORM,
        layers=wanted,
        reduction="head_mean",
        model=model.spec,
        weights_hash=model.weights_hash,
        data_hash=hash_inputs(list(texts)),
        n_texts=len(texts),
        heads=tuple(Head(layer, head) for layer in wanted for head in range(n_heads)),
    )


def _head_means(
    model: Model, texts: list[str], layers: tuple[int, ...]
) -> Float[Tensor, "batch layer_head d_model"]:
    """One forward: each head's output averaged over each text's real positions."""
    encoding = model.encode(texts)
    mask = encoding.attention_mask.to(torch.float32)[:, :, None, None]  # [batch, pos, 1, 1]
    means: dict[int, Tensor] = {}

    def keep(layer: int) -> Callable[[Tensor], None]:
        def fn(result: Tensor) -> None:  # [batch, pos, head, d_model], reduced here
            on = mask.to(result.device)
            summed = (result.detach().to(torch.float32) * on).sum(1)
            means[layer] = (summed / on.sum(1)).cpu()  # [batch, head, d_model]

        return fn

    fns = {HEAD_FORM.format(layer=layer): keep(layer) for layer in layers}
    with torch.no_grad(), hooked(model.hf, fns):
        model.hf(**encoding, use_cache=False, logits_to_keep=1)
    return torch.cat([means[layer] for layer in layers], dim=1)
