"""A one-layer tiny model with a planted circuit: some heads see a trigger's sign, others cannot.

Positive prompts hold "#" where their paired negative holds "$". The two embeddings are
equal except in one reserved dimension D (+c against -c, so RMSNorm scales them alike) and
no other token has a component there. Circuit heads read only D through their values and
write it along a head-specific direction; every other head's q, k and v ignore D, so its
output on a positive prompt is bit-for-bit its output on the paired negative.
"""

from __future__ import annotations

import torch

from interp.heads import Head, HeadSet
from interp.models import Model
from tests.tiny import tiny_llama

D = 63  # the reserved residual dimension
LETTERS = "abcdefghijklmnopqrstuvwxyz"


@torch.no_grad()
def planted_model(circuit: tuple[int, ...] = (1, 4, 6), n_heads: int = 8) -> tuple[Model, HeadSet]:
    """The model and its planted circuit (heads of layer 0)."""
    model = tiny_llama(n_layers=1, n_heads=n_heads, n_kv_heads=n_heads, seed=0)
    hf, d_head = model.hf, model.geometry.d_head
    embed = hf.get_input_embeddings().weight
    plus, minus = (model.tokenizer.convert_tokens_to_ids(t) for t in ("#", "$"))
    embed[:, D] = 0
    embed[minus] = embed[plus]
    embed[plus, D], embed[minus, D] = 1.0, -1.0
    attention = hf.model.layers[0].self_attn
    generator = torch.Generator().manual_seed(1)
    for head in range(n_heads):
        rows = slice(head * d_head, (head + 1) * d_head)
        if head in circuit:
            attention.v_proj.weight[rows] = 0
            attention.v_proj.weight[head * d_head, D] = 1.0
            attention.o_proj.weight[:, rows] = 0
            direction = torch.randn(model.geometry.d_model, generator=generator)
            attention.o_proj.weight[:, head * d_head] = direction / direction.norm()
        else:
            for projection in (attention.q_proj, attention.k_proj, attention.v_proj):
                projection.weight[rows, D] = 0
    return Model.from_hf(hf, model.tokenizer, spec="planted"), HeadSet(Head(0, h) for h in circuit)


def planted_prompts(n: int = 20, seed: int = 0) -> tuple[list[str], list[str]]:
    """n positives with "#" and their negatives with "$" at the same place."""
    generator = torch.Generator().manual_seed(seed)
    positives, negatives = [], []
    for _ in range(n):
        letters = [LETTERS[int(i)] for i in torch.randint(0, 26, (12,), generator=generator)]
        spot = int(torch.randint(0, 6, (1,), generator=generator))
        text = "".join(letters[:spot]) + "{}" + "".join(letters[spot:])
        positives.append(text.format("#"))
        negatives.append(text.format("$"))
    return positives, negatives
