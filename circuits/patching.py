"""Per-head activation patching: how much of a task's behaviour each head's output carries.

For every head h of every layer l, the clean run is repeated with z^{l,h} (the head's output
before W_O, TransformerLens `hook_z`) replaced by its value on the corrupted prompt, at all
positions, one padded position at a time, or one named position of the task (Wang et al.
2022, arXiv 2211.00593; Heimersheim & Nanda 2024, "How to use and interpret activation
patching"). The score follows METHODS §9.1's normalisation, over means across prompts:

    score(l, h) = (mean LD_patched - mean LD_clean) / (mean LD_corrupt - mean LD_clean)

with LD = logit(answer) - logit(wrong) at the last position. 0: patching the head changes
nothing; 1: it alone moves the logit difference all the way to the corrupted run's; negative:
it moves it the other way. (Merullo et al.'s code stores -100 x score.)

The sweep is batched: its rows are (prompt, head[, position]) pairs, grouped by layer, and
one forward patches a different head and prompt in each row (`interp.hook_points.patched`).
A patched run cannot differ from the clean one below its layer, so on architectures
`interp.midway.decoder_from` supports it starts at the patched layer from the clean run's
cached resid_pre: all L x H heads cost about (L + 1) / 2L of L x H full forwards, plus the
clean and corrupted runs. Elsewhere each patched run is a full forward (same scores).

Memory: the clean resid_pre and corrupted z of every layer, 2 x L x batch x pos x d_model
floats (100 IOI prompts of ~20 tokens on SmolLM2-135M: ~0.3 GB), plus one patched forward
of `batch_size` rows at a time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuits.circuit_task import CircuitTask
from interp.encoding import Encoding
from interp.errors import ConfigError, InputError, UnsupportedModelError, did_you_mean
from interp.heads import Head
from interp.hook_points import HeadPatch, hooked, patched
from interp.midway import check_midway_start, decoder_from
from interp.models import Model
from interp.results import HeadScores, Provenance

__all__ = ["activation_patching"]

_Job = tuple[int, int, tuple[int, ...] | None]  # (prompt, head, positions or None: all)


@torch.no_grad()
def activation_patching(
    model: Model,
    task: CircuitTask,
    *,
    positions: str = "all",
    heads: Iterable[Head] | None = None,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> HeadScores:
    """Patch each head's z from the corrupted run into the clean run; score its effect.

    Args:
        model: the model.
        task: clean and corrupted prompts of the same padded shape, answers, positions.
        positions: "all" patches every position at once (one row per head); "each" one
            padded position at a time (one row per head and position, column `position`;
            positions that are padding in a prompt count as no change there); a name of
            `task.positions` (e.g. "END", "S2") patches that position of each prompt.
        heads: the heads to score (default: every head); rows only for these.
        batch_size: patched rows per forward.
        progress: called as progress(done, total) after each layer with heads to score.

    Returns:
        HeadScores, one row per head (per head and position with "each"): `score` as in
        the module docstring, `logit_difference` (mean patched LD), `clean_logit_difference`
        and `corrupted_logit_difference` (mean LDs of the unpatched runs).

    Raises:
        ConfigError: unknown `positions` or a batch size below 1.
        InputError: the corruption leaves the mean logit difference unchanged.

    Example:
        >>> from circuits.tiny_task import tiny_task
        >>> from interp.tiny_models import tiny_llama
        >>> model = tiny_llama()
        >>> scores = activation_patching(model, tiny_task(model))
        >>> len(scores.top(5))
        5
    """
    named = dict(task.positions)
    if positions not in ("all", "each", *named):
        choices = ("all", "each", *named)
        raise ConfigError(f"Unknown positions {positions!r}." + did_you_mean(positions, choices))
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}.")
    hf, geometry = model.hf, model.geometry
    by_layer = _heads_by_layer(heads, geometry.n_layers, geometry.n_heads)
    clean, corrupted = _on(task.clean, model), _on(task.corrupted, model)
    answer, wrong = task.answer_ids.to(model.device), task.wrong_ids.to(model.device)
    midway = _starts_midway(model)
    resid_names = [f"blocks.{layer}.hook_resid_pre" for layer in by_layer]
    z_names = {layer: f"blocks.{layer}.attn.hook_z" for layer in by_layer}
    resid, clean_logits = _run(model, clean, resid_names if midway else [])
    source, corrupted_logits = _run(model, corrupted, list(z_names.values()))
    ld_clean = _logit_difference(clean_logits, answer, wrong)
    ld_corrupt = _logit_difference(corrupted_logits, answer, wrong)
    if abs(float((ld_corrupt - ld_clean).double().mean())) < 1e-6:
        raise InputError(
            "The corruption leaves the mean logit difference unchanged, so no head can be"
            " scored against it: check the task's corrupted prompts and answers."
        )
    # Summed LD change per (layer, head, position or None); a prompt where the position is
    # padding contributes 0 (patching padding changes nothing).
    change: dict[tuple[int, int, int | None], float] = defaultdict(float)
    for done, layer in enumerate(by_layer):
        jobs = _jobs(task, positions, by_layer[layer])
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            prompts = torch.tensor([prompt for prompt, _, _ in chunk], device=model.device)
            patches = [
                HeadPatch(row=i, layer=layer, head=head, source_row=prompt, positions=pos)
                for i, (prompt, head, pos) in enumerate(chunk)
            ]
            with patched(hf, {z_names[layer]: source[z_names[layer]]}, patches):
                logits = _forward(model, clean, prompts, resid, layer if midway else None)
            ld = _logit_difference(logits, answer[prompts], wrong[prompts])
            delta = (ld - ld_clean[prompts]).double().cpu().tolist()
            for (_, head, pos), value in zip(chunk, delta, strict=True):
                change[layer, head, pos[0] if positions == "each" else None] += value  # type: ignore[index]
        if progress is not None:
            progress(done + 1, len(by_layer))
    return _scores(model, task, positions, by_layer, change, ld_clean, ld_corrupt)


def _heads_by_layer(
    heads: Iterable[Head] | None, n_layers: int, n_heads: int
) -> dict[int, list[int]]:
    """Layer -> its heads to score, layers in order."""
    if heads is None:
        return {layer: list(range(n_heads)) for layer in range(n_layers)}
    by_layer: dict[int, list[int]] = defaultdict(list)
    for head in sorted(set(heads)):
        if not (0 <= head.layer < n_layers and 0 <= head.head < n_heads):
            raise ConfigError(f"Head {head} is outside the model's {n_layers} x {n_heads} heads.")
        by_layer[head.layer].append(head.head)
    if not by_layer:
        raise ConfigError("activation_patching needs at least one head.")
    return dict(sorted(by_layer.items()))


def _on(batch: Encoding, model: Model) -> dict[str, Tensor]:
    """The forward kwargs of a batch (ids, mask, position ids) on the model's device."""
    return {key: value.to(model.device) for key, value in batch.items()}


def _starts_midway(model: Model) -> bool:
    """Whether a patched forward can start at the patched layer from the cached residual."""
    try:
        check_midway_start(model.hf)
    except UnsupportedModelError:
        return False
    return True


def _logit_difference(
    logits: Float[Tensor, "row vocab"], answer: Int[Tensor, " row"], wrong: Int[Tensor, " row"]
) -> Float[Tensor, " row"]:
    """logit(answer) - logit(wrong) per row (`circuits.metrics.logit_difference`, per row ids)."""
    return (logits.gather(1, answer[:, None]) - logits.gather(1, wrong[:, None]))[:, 0].float()


def _run(
    model: Model, batch: dict[str, Tensor], names: list[str]
) -> tuple[dict[str, Tensor], Float[Tensor, "batch vocab"]]:
    """One forward: the named activations and the last position's logits."""
    acts: dict[str, Tensor] = {}

    def keep(name: str) -> Callable[[Tensor], None]:
        return lambda x: acts.__setitem__(name, x)

    with hooked(model.hf, {name: keep(name) for name in names}):
        logits = model.hf(**batch, use_cache=False, logits_to_keep=1).logits[:, -1]
    return acts, logits


def _forward(
    model: Model,
    clean: dict[str, Tensor],
    prompts: Int[Tensor, " row"],
    resid: dict[str, Tensor],
    start: int | None,
) -> Float[Tensor, "row vocab"]:
    """Last-position logits of the clean prompts `prompts`, from layer `start` if given."""
    kwargs = {
        "attention_mask": clean["attention_mask"][prompts],
        "position_ids": clean["position_ids"][prompts],
        "use_cache": False,
        "logits_to_keep": 1,
    }
    if start is None:
        return model.hf(input_ids=clean["input_ids"][prompts], **kwargs).logits[:, -1]
    embeds = resid[f"blocks.{start}.hook_resid_pre"][prompts]
    with decoder_from(model.hf, start):
        return model.hf(inputs_embeds=embeds, **kwargs).logits[:, -1]


def _jobs(task: CircuitTask, positions: str, heads: list[int]) -> list[_Job]:
    """Every patched row of one layer: (prompt, head, positions or None for all)."""
    n_prompts, width = task.clean.input_ids.shape
    if positions == "all":
        return [(p, h, None) for p in range(n_prompts) for h in heads]
    if positions == "each":  # a prompt's padding positions are skipped: no change there
        first = (width - task.clean.attention_mask.sum(-1)).tolist()
        return [
            (p, h, (pos,))
            for p in range(n_prompts)
            for h in heads
            for pos in range(int(first[p]), width)
        ]
    named = task.positions[positions].tolist()
    return [(p, h, (int(named[p]),)) for p in range(n_prompts) for h in heads]


def _scores(
    model: Model,
    task: CircuitTask,
    positions: str,
    by_layer: dict[int, list[int]],
    change: dict[tuple[int, int, int | None], float],
    ld_clean: Tensor,
    ld_corrupt: Tensor,
) -> HeadScores:
    width = task.clean.input_ids.shape[1]
    slots = range(width) if positions == "each" else [None]
    keys = [(layer, h, pos) for layer, hs in by_layer.items() for h in hs for pos in slots]
    clean_mean = float(ld_clean.double().mean())
    corrupt_mean = float(ld_corrupt.double().mean())
    mean_change = np.array([change[key] for key in keys]) / len(task)
    frame = pd.DataFrame(
        {
            "layer": [layer for layer, _, _ in keys],
            "head": [h for _, h, _ in keys],
            "label": [Head(layer, h).label for layer, h, _ in keys],
            "score": mean_change / (corrupt_mean - clean_mean),
            "logit_difference": clean_mean + mean_change,
            "clean_logit_difference": clean_mean,
            "corrupted_logit_difference": corrupt_mean,
        }
    )
    if positions == "each":
        frame.insert(3, "position", [pos for _, _, pos in keys])
    provenance = Provenance(
        **model.provenance_fields(),
        analyzer="circuits.activation_patching",
        config={"point": "hook_z", "positions": positions, "task": task.config},
        inputs_hash=task.inputs_hash(),
        n_inputs=len(task),
    )
    return HeadScores(frame, provenance)
