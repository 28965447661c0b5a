"""Path patching: a sender head's effect on chosen receivers through direct paths only.

Wang et al. 2022 (arXiv 2211.00593, §3.1 and App. B), as Merullo et al. 2024 use it. For a
sender head h, a receiver set R and a position p (a named position of the task):

1. Run the clean prompt with h's z at p set to its value on the corrupted prompt and every
   other head's z frozen at its clean value (MLPs recomputed, as in Wang; frozen too with
   `freeze_mlps`). Record the receivers: the final residual stream (`receiver="logits"`) or
   the receiver heads' q, k or v input at p.
2. Run the clean prompt with only the receivers patched to the recorded values; read the
   logit difference LD at the last position.

Score = (LD_patched - LD_clean) / (LD_corrupt - LD_clean), each LD the mean over prompts:
1 is the whole corruption effect, 0 none; heads that lower the clean LD score positive.
(Merullo's code stores -100 x this, and averages per-batch ratios where this is the ratio
of the means over all prompts.) Senders, as in Merullo's code, are the heads of every layer
up to and including the lowest receiver layer, receivers excepted: a sender in that layer
reaches the receivers of higher layers (and scores 0 on those of its own layer).

Step 1 is exact on one token. With every head's z frozen, nothing reads position p from
another position, so p's residual stream depends only on its own token, the frozen z and
the MLPs: step 1 runs [rows, 1] inputs, one row per (sender, prompt). Step 2 changes
nothing before p and nothing below the lowest receiver layer: it runs positions p.. only,
one row per (sender, prompt), from that layer up, on the clean residual stream entering
it and the clean keys and values of positions before p (a KV cache of the clean prefix,
one prefix forward per distinct p, copied for each chunk of rows).

Receivers of k or v are KV heads under GQA; with `gqa_siblings="freeze"` (default) the
query heads that share a receiver's KV head but are not receivers keep their clean z, so
the patch reaches the named receivers only; `"share"` lets it reach the whole group.

The IOI stages (METHODS 9.1; Merullo's stage configs are unreleased, these are Wang's
classes): heads -> logits (name movers); -> name movers' queries at END (S-inhibition);
-> S-inhibition heads' values at S2 (induction, duplicate-token); -> induction heads' keys
at S1+1 (previous-token). `ioi_stage` builds each as a config.

Cost: two clean-length forwards (clean, corrupted), step 1 on senders x prompts rows of
one token, and for q/k/v receivers step 2 on senders x prompts rows of the tokens from p
on, over the layers from the first receiver, plus a prefix forward per distinct p.
Memory: the clean and corrupted z at p, [layer, prompt, head, d_head] each, plus per chunk
of `batch_size` rows one forward's activations.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformers import DynamicCache

from circuits.tasks import CircuitTask, logit_difference
from interp.config import Config, check_range
from interp.encoding import Encoding
from interp.errors import ConfigError, InputError
from interp.heads import Head, HeadSet
from interp.hooks import head_output_hooks, output_hooks, qkv_hooks, residual_hooks
from interp.kv_cache import cache_kwargs, prefix_caches, repeated_rows
from interp.midway import decoder_from
from interp.models import Model
from interp.results import HeadScores, Provenance

__all__ = ["IOI_STAGES", "PathPatchingConfig", "ioi_stage", "path_patching", "task_provenance"]

ANALYZER = "path_patching"
Receiver = Literal["logits", "q", "k", "v"]
Progress = Callable[[int, int], None]


@dataclass(frozen=True, kw_only=True)
class PathPatchingConfig(Config):
    """One path-patching stage.

    Attributes:
        stage: the name written into the result's `stage` column.
        receiver: "logits" (the final residual stream) or the receiver heads' "q", "k", "v".
        receivers: receiver head labels ("L12H3"); empty for "logits".
        position: the task's named position where senders are patched and receivers read.
        gqa_siblings: for k/v receivers under GQA, "freeze" keeps non-receiver heads of a
            receiver's KV group at clean z; "share" lets the patch reach the whole group.
        freeze_mlps: in step 1 also freeze MLP outputs at clean values, so the sender
            reaches the receivers only through the residual stream (Wang recomputes MLPs).
        batch_size: (sender, prompt) rows per forward.
    """

    stage: str = "logits"
    receiver: Receiver = "logits"
    receivers: tuple[str, ...] = ()
    position: str = "END"
    gqa_siblings: Literal["freeze", "share"] = "freeze"
    freeze_mlps: bool = False
    batch_size: int = 512

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "batch_size", 1)
        if (self.receiver == "logits") != (not self.receivers):
            raise ConfigError(
                f"PathPatchingConfig: receiver {self.receiver!r} takes"
                f" {'no receiver heads' if self.receiver == 'logits' else 'receiver heads'},"
                f" got receivers={list(self.receivers)}."
            )
        HeadSet(self.receivers)  # raises InputError on a bad label

    @property
    def receiver_heads(self) -> HeadSet:
        return HeadSet(self.receivers)


IOI_STAGES: dict[str, tuple[Receiver, str]] = {
    "logits": ("logits", "END"),
    "name_mover_queries": ("q", "END"),
    "s_inhibition_values": ("v", "S2"),
    "induction_keys": ("k", "S1+1"),
}


def ioi_stage(
    stage: str, receivers: HeadSet | None = None, **options: object
) -> PathPatchingConfig:
    """The config of one IOI stage (`IOI_STAGES`), with the previous stage's heads as receivers.

    Example:
        >>> ioi_stage("name_mover_queries", HeadSet("L9H9 L10H0")).receiver
        'q'
    """
    if stage not in IOI_STAGES:
        raise ConfigError(f"Unknown IOI stage {stage!r}; stages: {', '.join(IOI_STAGES)}.")
    receiver, position = IOI_STAGES[stage]
    labels = tuple(HeadSet(receivers or ()).labels)
    return PathPatchingConfig(
        stage=stage, receiver=receiver, receivers=labels, position=position, **options
    )


@dataclass(frozen=True)
class _Clean:
    """What both steps take from the clean and corrupted runs."""

    z_clean: Float[Tensor, "layer prompt head d_head"]  # at p
    z_corrupt: Float[Tensor, "layer prompt head d_head"]  # at p
    mlp_clean: Float[Tensor, "layer prompt d_model"]  # at p
    ld_clean: Float[Tensor, " prompt"]
    ld_corrupt: Float[Tensor, " prompt"]
    resid: Float[Tensor, "prompt pos d_model"] | None  # entering the lowest receiver layer
    z_full: dict[int, Tensor]  # receiver layers' clean z [prompt, pos, head, d_head]
    prefixes: dict[int, DynamicCache | None]  # per p, the clean KV cache of positions < p


def path_patching(
    model: Model,
    task: CircuitTask,
    config: PathPatchingConfig | None = None,
    *,
    progress: Progress | None = None,
) -> HeadScores:
    """Score every sender head up to the lowest receiver layer by path patching (module docstring).

    Returns:
        HeadScores, one row per sender: `score` (normalised effect), `ld_patched` (mean
        patched LD), `ld_clean`, `ld_corrupt`, `stage`, `receiver`, `position`.

    Raises:
        InputError: the task lacks `config.position`, a receiver head does not exist, or
            no head lies below the receivers.

    Example:
        >>> from interp.tiny_models import tiny_llama
        >>> from circuits.tiny_task import tiny_task
        >>> model = tiny_llama()
        >>> scores = path_patching(model, tiny_task(model))
        >>> len(scores) == model.geometry.n_layers * model.geometry.n_heads
        True
    """
    config = config or PathPatchingConfig()
    geometry = model.geometry
    receivers = config.receiver_heads
    for head in receivers:
        geometry.check(head)
    position = _position(task, config.position)
    last = task.clean.input_ids.shape[1] - 1
    if config.receiver == "logits" and not bool((position == last).all()):
        raise InputError(
            f"Receiver 'logits' reads the last position; position {config.position!r} is not"
            " it. With every other head frozen a sender elsewhere cannot reach the logits."
        )
    senders = _senders(geometry.n_layers, geometry.n_heads, receivers)
    lowest = min((s.layer for s in senders), default=geometry.n_layers)
    if receivers and lowest >= max(receivers.layers):
        raise InputError(f"No sender heads lie below the receivers {receivers.labels}.")
    clean = _clean_runs(model, task, config, position)
    n_prompts = position.shape[0]
    per_chunk = max(1, config.batch_size // n_prompts)  # whole senders per forward
    patched = []
    for start in range(0, len(senders), per_chunk):
        chunk = senders[start : start + per_chunk]
        recorded, logits = _step_one(model, task, config, clean, position, chunk)
        if config.receiver != "logits":
            logits = _step_two(model, task, config, clean, position, len(chunk), recorded)
        # Rows are sender-major, each sender's rows the task's prompts in order.
        for rows in logits.split(n_prompts):
            patched.append(logit_difference(rows, task).float().cpu().mean())
        if progress:
            progress(start + len(chunk), len(senders))
    ld_patched = torch.stack(patched)
    ld_clean, ld_corrupt = clean.ld_clean.mean(), clean.ld_corrupt.mean()
    score = (ld_patched - ld_clean) / (ld_corrupt - ld_clean)
    data = pd.DataFrame(
        {
            "layer": [s.layer for s in senders],
            "head": [s.head for s in senders],
            "label": [s.label for s in senders],
            "score": score.numpy().astype(np.float64),
            "ld_patched": ld_patched.numpy().astype(np.float64),
            "ld_clean": float(ld_clean),
            "ld_corrupt": float(ld_corrupt),
            "stage": config.stage,
            "receiver": config.receiver,
            "position": config.position,
        }
    )
    return HeadScores(data, task_provenance(model, task, ANALYZER, config.to_dict()))


def _senders(n_layers: int, n_heads: int, receivers: HeadSet) -> list[Head]:
    """Merullo's senders: every head of layers 0..lowest receiver layer that is no receiver."""
    top = min(receivers.layers) if receivers else n_layers - 1
    every = (Head(layer, h) for layer in range(top + 1) for h in range(n_heads))
    return [head for head in every if head not in receivers]


def task_provenance(
    model: Model, task: CircuitTask, analyzer: str, config: dict[str, object]
) -> Provenance:
    """Provenance of a result computed on a circuit task (the task's parameters included)."""
    return Provenance(
        **model.provenance_fields(),
        analyzer=analyzer,
        config={**config, "task": dict(task.config)},
        inputs_hash=task.inputs_hash(),
        n_inputs=len(task),
    )


def _position(task: CircuitTask, name: str) -> Int[Tensor, " prompt"]:
    if name not in task.positions:
        raise InputError(
            f"Task {task.name!r} has no position {name!r}; it has {', '.join(task.positions)}."
        )
    return task.positions[name].cpu()


@torch.no_grad()
def _clean_runs(
    model: Model, task: CircuitTask, config: PathPatchingConfig, position: Tensor
) -> _Clean:
    """One clean and one corrupted forward: z at p, both LDs, and what step 2 starts from."""
    rows = torch.arange(position.shape[0])
    receivers = config.receiver_heads

    def run(encoding: Encoding, full: bool) -> tuple[Tensor, Tensor, Tensor | None, dict, Tensor]:
        at_p: list[Tensor] = []
        mlp: list[Tensor] = []
        z_full: dict[int, Tensor] = {}
        resid: list[Tensor] = []

        def keep_z(layer: int, z: Tensor) -> None:
            at_p.append(z[rows, position.to(z.device)].float().cpu())
            if full and layer in receivers.layers:
                z_full[layer] = z.detach().clone()

        def keep_resid(_layer: int, x: Tensor) -> None:
            resid.append(x.detach().clone())

        def keep_mlp(_layer: int, x: Tensor) -> None:
            mlp.append(x[rows, position.to(x.device)].float().cpu())

        layers = receivers.layers[:1] if full else []
        with ExitStack() as stack:
            stack.enter_context(head_output_hooks(model.hf, keep_z))
            stack.enter_context(residual_hooks(model.hf, keep_resid, layers))
            stack.enter_context(output_hooks(model.hf, keep_mlp, "mlp", None if full else []))
            logits = model.hf(**encoding, use_cache=False, logits_to_keep=1).logits[:, -1]
        ld = logit_difference(logits, task).float().cpu()
        mlps = torch.stack(mlp) if mlp else torch.empty(0)
        return torch.stack(at_p), ld, (resid[0] if resid else None), z_full, mlps

    z_clean, ld_clean, resid, z_full, mlp_clean = run(task.clean, full=True)
    z_corrupt, ld_corrupt, _, _, _ = run(task.corrupted, full=False)
    prefixes = prefix_caches(model.hf, task.clean, position, model.device) if receivers else {}
    return _Clean(z_clean, z_corrupt, mlp_clean, ld_clean, ld_corrupt, resid, z_full, prefixes)


@torch.no_grad()
def _step_one(
    model: Model,
    task: CircuitTask,
    config: PathPatchingConfig,
    clean: _Clean,
    position: Tensor,
    senders: list[Head],
) -> tuple[dict[int, Tensor], Tensor]:
    """Position p alone, every z frozen but the sender's: the receivers' inputs and logits.

    Rows are (sender, prompt), sender-major. Returns {layer: [row, receiver slot, d_head]}
    for q/k/v receivers, and the last-position logits [row, vocab].
    """
    device = model.device
    n_prompts = position.shape[0]
    prompt_idx = torch.arange(n_prompts).repeat(len(senders))
    sender_layer = torch.tensor([s.layer for s in senders]).repeat_interleave(n_prompts)
    sender_head = torch.tensor([s.head for s in senders]).repeat_interleave(n_prompts)
    at_p = position[prompt_idx].to(device)
    rows = prompt_idx.to(device)
    ids = task.clean.input_ids[rows, at_p][:, None]
    pos_ids = task.clean.position_ids[rows, at_p][:, None]

    def freeze(layer: int, z: Tensor) -> Tensor:
        new = clean.z_clean[layer, prompt_idx].clone()  # [row, head, d_head]
        mine = torch.nonzero(sender_layer == layer).flatten()
        new[mine, sender_head[mine]] = clean.z_corrupt[layer, prompt_idx[mine], sender_head[mine]]
        return new[:, None].to(device=z.device, dtype=z.dtype)

    recorded: dict[int, Tensor] = {}
    receivers = config.receiver_heads

    def record(layer: int, kind: str, x: Tensor) -> None:
        if kind == config.receiver:
            recorded[layer] = x[:, 0, _slots(model, config, receivers, layer)].clone()

    def freeze_mlp(layer: int, x: Tensor) -> Tensor:
        return clean.mlp_clean[layer, prompt_idx][:, None].to(device=x.device, dtype=x.dtype)

    with ExitStack() as stack:
        stack.enter_context(head_output_hooks(model.hf, freeze))
        stack.enter_context(qkv_hooks(model.hf, record, receivers.layers))
        if config.freeze_mlps:
            stack.enter_context(output_hooks(model.hf, freeze_mlp, "mlp"))
        logits = model.hf(
            input_ids=ids, position_ids=pos_ids, use_cache=False, logits_to_keep=1
        ).logits
    return recorded, logits[:, -1]


def _slots(model: Model, config: PathPatchingConfig, receivers: HeadSet, layer: int) -> Tensor:
    """The receivers' indices in a layer's q (query heads) or k/v (KV heads)."""
    heads = receivers.heads_in(layer)
    if config.receiver == "q":
        return torch.tensor(heads)
    return torch.tensor(sorted({model.geometry.kv_head(h) for h in heads}))


@torch.no_grad()
def _step_two(
    model: Model,
    task: CircuitTask,
    config: PathPatchingConfig,
    clean: _Clean,
    position: Tensor,
    n_senders: int,
    recorded: dict[int, Tensor],
) -> Float[Tensor, "row vocab"]:
    """Clean prompts with only the receivers patched; rows (sender, prompt), sender-major.

    Positions before p are clean, so each group of prompts sharing p reuses the clean
    keys and values there (`_prefix`) and runs only positions p.. from the lowest
    receiver layer, on the clean residual stream entering it.
    """
    assert clean.resid is not None
    device = model.device
    geometry = model.geometry
    receivers = config.receiver_heads
    n_prompts = position.shape[0]
    out: Tensor | None = None
    for p in position.unique().tolist():
        group = torch.nonzero(position == p).flatten()
        prompt_idx = group.repeat_interleave(n_senders)  # prompt-major, as the cache repeats
        sender_idx = torch.arange(n_senders).repeat(len(group))
        source = (sender_idx * n_prompts + prompt_idx).to(device)  # step 1's sender-major rows
        rows = prompt_idx.to(device)

        def patch(layer: int, kind: str, x: Tensor, source: Tensor = source) -> Tensor | None:
            if kind != config.receiver:
                return None
            slots = _slots(model, config, receivers, layer).to(device)
            x = x.clone()
            x[:, 0, slots] = recorded[layer][source].to(x.dtype)
            return x

        def keep_siblings(layer: int, z: Tensor, rows: Tensor = rows, p: int = p) -> Tensor | None:
            mine = set(receivers.heads_in(layer))
            groups = {geometry.kv_head(h) for h in mine}
            siblings = [
                h
                for h in range(geometry.n_heads)
                if geometry.kv_head(h) in groups and h not in mine
            ]
            if not siblings:
                return None
            z = z.clone()
            z[:, :, siblings] = clean.z_full[layer][rows][:, p:, siblings].to(z.dtype)
            return z

        cache = repeated_rows(clean.prefixes[p], n_senders)
        freeze_siblings = config.receiver != "q" and config.gqa_siblings == "freeze"
        with ExitStack() as stack:
            stack.enter_context(qkv_hooks(model.hf, patch, receivers.layers))
            if freeze_siblings:
                stack.enter_context(head_output_hooks(model.hf, keep_siblings, receivers.layers))
            stack.enter_context(decoder_from(model.hf, receivers.layers[0]))
            logits = model.hf(
                inputs_embeds=clean.resid[rows, p:],
                attention_mask=task.clean.attention_mask[rows],
                position_ids=task.clean.position_ids[rows, p:],
                **cache_kwargs(model.hf, cache),
                use_cache=cache is not None,
                logits_to_keep=1,
            ).logits[:, -1]
        if out is None:
            out = logits.new_empty(n_senders * n_prompts, logits.shape[-1])
        out[source] = logits
    assert out is not None
    return out
