"""Test helpers: greedy decoding by full re-forwards and attention-row recorders."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn.functional import pad

from interp.hooks import AttentionRows, head_output_hooks
from interp.inputs import ModelInputs
from interp.models import Model


def left_padded(model: Model, texts: list[str]) -> tuple[Tensor, Tensor]:
    """(input_ids, attention_mask) of `texts`, left-padded."""
    model.tokenizer.padding_side = "left"
    batch = model.tokenizer(texts, return_tensors="pt", padding=True)
    return batch["input_ids"], batch["attention_mask"]


def cached_greedy(model: Model, ids: Tensor, mask: Tensor, steps: int) -> Tensor:
    """Greedy tokens [batch, steps] from `generate` with the KV cache."""
    out = model.hf.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=steps,
        min_new_tokens=steps,
        do_sample=False,
        use_cache=True,
        pad_token_id=model.tokenizer.pad_token_id,
    )
    return out[:, ids.shape[1] :]


@torch.no_grad()
def full_greedy(model: Model, ids: Tensor, mask: Tensor, steps: int) -> Tensor:
    """Greedy tokens [batch, steps], re-forwarding the whole sequence without a cache."""
    new = []
    for _ in range(steps):
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        logits = model.hf(
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False
        ).logits
        token = logits[:, -1].argmax(-1, keepdim=True)
        new.append(token)
        ids = torch.cat([ids, token], dim=1)
        mask = torch.cat([mask, torch.ones_like(token)], dim=1)
    return torch.cat(new, dim=1)


def whole(blocks: list[AttentionRows]) -> tuple[Tensor, Tensor]:
    """One forward's blocks as (probs [batch, head, query, n_keys], visible [batch, query,
    n_keys]), each block padded past its narrowed key axis with zeros / False."""
    probs = [pad(r.probs, (0, r.n_keys - r.probs.shape[-1])) for r in blocks]
    visible = [pad(r.visible, (0, r.n_keys - r.visible.shape[-1])) for r in blocks]
    return torch.cat(probs, dim=2), torch.cat(visible, dim=1)


class Recorder:
    """Attention hook that keeps every (layer, probs, visible) it sees in `layers`."""

    def __init__(self, layers: list[int]) -> None:
        self.layers = layers
        self.seen: list[AttentionRows] = []

    def wants(self, layer: int, n_queries: int) -> bool:
        return layer in self.layers

    def __call__(self, rows: AttentionRows) -> None:
        self.seen.append(rows)


@torch.no_grad()
def vlm_cached_and_reforwarded(
    model: Model, inputs: ModelInputs, steps: int
) -> tuple[Tensor, Tensor]:
    """Greedy tokens [batch, steps] of a VLM from `generate` (KV cache) and by re-forwards.

    The re-forwards run the whole sequence each step without a cache, images included,
    under whatever intervention is active around the call.
    """
    cached = model.hf.generate(**inputs, max_new_tokens=steps, do_sample=False)[:, -steps:]
    ids, mask = inputs.input_ids, inputs.attention_mask
    extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    extra.pop("position_ids", None)
    for _ in range(steps):
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        logits = model.hf(
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False, **extra
        ).logits[:, -1]
        token = logits.argmax(-1, keepdim=True)
        ids = torch.cat([ids, token], 1)
        mask = torch.cat([mask, torch.ones_like(token)], 1)
    return cached, ids[:, -steps:]


@torch.no_grad()
def eager_forward(model: Model, inputs: Mapping[str, Tensor], **options: Any) -> Any:
    """HF's own forward under its eager attention (the reference for patterns), then back."""
    before = model.hf.config._attn_implementation
    model.hf.set_attn_implementation("eager")
    try:
        return model.hf(**inputs, output_attentions=True, **options)
    finally:
        model.hf.set_attn_implementation(before)


def eager_image_shares(
    model: Model, texts: list[str], images: list[Any], queries: str
) -> np.ndarray:
    """[example, layer, head] mean image share (probes.vision's definition) from HF's eager
    attention weights: over the text rows after each row's image, or the last row."""
    inputs = model.prepare(texts, images)
    probs = torch.stack(eager_forward(model, inputs).attentions, 1)  # [b, layer, head, q, k]
    image = inputs.image_mask.float()
    vis = (probs * image[:, None, None, None, :]).sum(-1)  # [batch, layer, head, query]
    width = image.shape[1]
    chosen = torch.zeros_like(image, dtype=torch.bool)
    for row in range(len(texts)):
        if queries == "last":
            chosen[row, -1] = True
        else:
            chosen[row, inputs.image_span(row)[1] : width] = True
    weights = chosen.float()[:, None, None, :]
    return ((vis * weights).sum(-1) / weights.sum(-1)).numpy()


def _last_z(model: Model, **kwargs: Any) -> Tensor:
    """[layer, head, d_head] z at the last position of one unpadded forward."""
    found: dict[int, Tensor] = {}

    def read(layer: int, z: Tensor) -> None:
        found[layer] = z[0, -1].float()

    with torch.no_grad(), head_output_hooks(model.hf, read):
        model.hf(**kwargs)
    return torch.stack([found[layer] for layer in sorted(found)])


def vhd_by_hand(model: Model, text: str, image: Any) -> tuple[Tensor, Tensor]:
    """([layer, head] VHD, text activation) of one prompt from two unbatched forwards: the
    prompt, and its text alone (ids without image tokens, no pixels, and the prompt's
    `token_type_ids` at those tokens where the model takes them: PaliGemma's prefix)."""
    inputs = model.prepare(text, image)
    with_image = _last_z(model, **inputs)
    text_only = ~inputs.image_mask
    alone = {"input_ids": inputs.input_ids[text_only][None]}
    if "token_type_ids" in inputs:
        alone["token_type_ids"] = inputs["token_type_ids"][text_only][None]
    without = _last_z(model, **alone)
    return (with_image - without).norm(dim=-1), without.pow(2).sum(-1)
