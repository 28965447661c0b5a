"""Memory plan: will this model and analyzer fit, before any weight is loaded?

`plan_memory(config, n_tokens)` states, from the config alone (the model is built on the
meta device to count parameters; nothing is allocated or downloaded beyond the config), the
weights' size and the peak memory of a plain forward and of each analyzer on one N-token
prompt (batch 1 by default). Each peak is weights + the run's live tensors at its busiest
moment, modelled from what the code keeps:

* forward (the fused SDPA kernel, as `model.hf(ids, logits_to_keep=1)` or the base model
  runs it; HF keeps the KV cache by default): the KV cache, 2·L·KV·d_head·N values, the
  residual stream and rotary tables, and the larger of one layer's attention phase (q, k,
  v, rotary temporaries, output) and MLP phase (gate, up and their product, 3·N·d_ff);
* sinks: every layer's attention is explicit (`interp.explicit_attention`): one block of
  float32 scores and one of probabilities, [batch, head, rows, keys] within the block
  budget, a float32 copy of the scaled queries and the output, plus the [layer, head, N]
  column sums it keeps; its forward keeps no KV cache (`use_cache=False`);
* retrieval: a forward's prefill (SDPA), then decode steps that add `max_new_tokens` to the
  cache and copy one layer's cache as it grows; one attention row per step is negligible;
* ACT: explicit attention in the selected layers only, with its row edit's temporaries:
  the block's rows, their clone and about two copies of the selected heads' share of a
  block (the count measured on the default model; the rest follows from the code);
* full logits: what returning every position's logits adds ([N, vocab]).

Checked against measured peaks on the default model (benchmarks/memory_plan.py). Not
modelled: the allocator's free-page cache (glibc keeps freed memory; measure with
MALLOC_MMAP_THRESHOLD_ set to see live bytes), the process and its libraries (Python,
torch, transformers: a few hundred MiB), and gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from transformers import AutoModelForCausalLM, PretrainedConfig

from interp.errors import InputError
from interp.explicit_attention import _block_rows

FLOAT32 = 4  # explicit attention computes in float32 whatever the weights' dtype


@dataclass(frozen=True)
class _Shape:
    """The text model's sizes that memory depends on."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    d_mlp: int
    vocab: int

    @classmethod
    def of(cls, config: PretrainedConfig) -> _Shape:
        text = config.get_text_config()
        n_heads = text.num_attention_heads
        d_model = text.hidden_size
        return cls(
            n_layers=text.num_hidden_layers,
            n_heads=n_heads,
            n_kv_heads=getattr(text, "num_key_value_heads", None) or n_heads,
            d_head=getattr(text, "head_dim", None) or d_model // n_heads,
            d_model=d_model,
            d_mlp=getattr(text, "intermediate_size", None) or 4 * d_model,
            vocab=text.vocab_size,
        )


@dataclass(frozen=True)
class MemoryPlan:
    """Planned peak memory per run, as a table.

    Attributes:
        n_tokens: prompt length N.
        batch: prompts per forward.
        dtype: the weights' (and activations') dtype.
        n_parameters: unique parameters (tied embeddings counted once).
        table: one row per run: `run`, `extra_bytes` (above a plain forward; the forward's
            and the weights' rows hold their own size), `peak_bytes` (weights + forward +
            extra) and `detail`.
    """

    n_tokens: int
    batch: int
    dtype: torch.dtype
    n_parameters: int
    table: pd.DataFrame

    def peak(self, run: str) -> int:
        """Planned peak bytes of `run` ("forward", "sinks", "retrieval", "act", ...)."""
        return int(self.table.set_index("run").loc[run, "peak_bytes"])

    def extra(self, run: str) -> int:
        """Planned bytes of `run` above a plain forward (weights alone for "weights")."""
        return int(self.table.set_index("run").loc[run, "extra_bytes"])


def count_parameters(config: PretrainedConfig) -> int:
    """Unique parameters of the causal LM `config` describes, built on the meta device."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def plan_memory(
    config: PretrainedConfig,
    n_tokens: int,
    *,
    dtype: torch.dtype | None = None,
    batch: int = 1,
    device: str | torch.device = "cpu",
    max_new_tokens: int = 50,
    act_heads_per_layer: int | None = None,
) -> MemoryPlan:
    """The planned peak memory of a forward and each analyzer at `n_tokens`.

    Args:
        config: the model's config (`interp.models.load_config(spec)`; no weights).
        n_tokens: prompt length N.
        dtype: the weights' dtype; None takes the config's (float32 if it names none).
        batch: prompts per forward.
        device: where the model runs; it sets explicit attention's block budget.
        max_new_tokens: the retrieval analyzer's decoding budget (paper: 50).
        act_heads_per_layer: heads ACT edits in each selected layer (None: all of them,
            the largest edit).

    Example:
        >>> from interp.tiny_models import tiny_llama
        >>> plan = plan_memory(tiny_llama().hf.config, 512)
        >>> plan.peak("sinks") > plan.peak("forward") > plan.extra("weights")
        True
    """
    device = _plan_device(device)
    _check_plan(config, n_tokens, batch, max_new_tokens)
    shape = _Shape.of(config)
    dtype = dtype or _config_dtype(config)
    size = torch.empty((), dtype=dtype).element_size()
    n_parameters = count_parameters(config)
    weights = n_parameters * size
    n, b, s = n_tokens, batch, shape
    d_q, d_kv = s.n_heads * s.d_head, s.n_kv_heads * s.d_head

    def cache(tokens: int) -> int:
        return 2 * s.n_layers * b * tokens * d_kv * size

    # Kept through the forward: hidden state and residual, cos/sin, the KV cache.
    kept = cache(n) + b * n * (2 * s.d_model + 2 * s.d_head) * size
    mlp = b * n * (s.d_model + 3 * s.d_mlp) * size
    attention = b * n * (s.d_model + 4 * d_q + 2 * d_kv) * size
    forward = kept + max(mlp, attention)

    rows = min(n, _block_rows(b, s.n_heads, n, device))
    widest = (n // rows) * rows  # keys of the last full block (a block sees keys < its end)
    block = b * s.n_heads * max(rows * widest, (n - widest) * n) * FLOAT32
    # Explicit attention replaces the kernel: the scaled float32 queries, the output, and
    # blocks of scores and probabilities (two at once while softmax runs).
    explicit = attention + b * n * d_q * (FLOAT32 + size) + 2 * block
    sums = s.n_layers * b * s.n_heads * n * FLOAT32
    sinks = kept - cache(n) + sums + max(mlp, explicit) - forward  # no KV cache kept

    retrieval = cache(max_new_tokens) + 2 * b * (n + max_new_tokens) * d_kv * size

    share = (act_heads_per_layer or s.n_heads) / s.n_heads
    # The edit holds the block's rows, their clone and about two copies of the selected
    # heads' share (4 blocks with every head selected, measured at 1k-4k tokens).
    act_edit = explicit + round(2 * share * block)
    act = kept + max(mlp, act_edit) - forward

    logits = b * n * s.vocab * size
    table = pd.DataFrame(
        [
            ("weights", weights, weights, f"{n_parameters / 1e6:,.1f}M parameters x {size} B"),
            ("forward", forward, weights + forward, "SDPA, KV cache kept, last logits only"),
            ("full logits", logits, weights + forward + logits, f"[{n}, {s.vocab}] logits"),
            (
                "sinks",
                sinks,
                weights + forward + sinks,
                "explicit rows in every layer, no KV cache",
            ),
            (
                "retrieval",
                retrieval,
                weights + forward + retrieval,
                f"prefill, then {max_new_tokens} decode steps",
            ),
            (
                "act",
                act,
                weights + forward + act,
                f"explicit rows and the edit, {act_heads_per_layer or s.n_heads} of"
                f" {s.n_heads} heads per chosen layer",
            ),
            (
                "explicit layer",
                kept + max(mlp, explicit) - forward,
                weights + kept + max(mlp, explicit),
                f"one hooked layer: blocks of {rows} rows x up to {n} keys,"
                f" {block / 2**20:.0f} MiB each",
            ),
        ],
        columns=["run", "extra_bytes", "peak_bytes", "detail"],
    )
    return MemoryPlan(n, b, dtype, n_parameters, table)


MAX_BATCH = 1 << 16  # prompts per forward; a larger batch is a typo, not a plan


def _check_plan(config: PretrainedConfig, n_tokens: int, batch: int, max_new_tokens: int) -> None:
    """The plan's sizes, tied to the model: a prompt plus its decoding fits the context."""
    if n_tokens < 1 or not 1 <= batch <= MAX_BATCH or max_new_tokens < 0:
        raise InputError(
            f"A memory plan needs n_tokens >= 1, batch in 1..{MAX_BATCH} and max_new_tokens"
            f" >= 0; got {n_tokens}, {batch} and {max_new_tokens}."
        )
    context = context_length(config)
    if context and n_tokens > context:
        raise InputError(
            f"A memory plan for {n_tokens} tokens: the model's context is {context} tokens,"
            " so no prompt can be longer."
        )


def context_length(config: PretrainedConfig) -> int:
    """The model's context in tokens (0 when its config does not say)."""
    context = getattr(config.get_text_config(), "max_position_embeddings", None)
    return context if isinstance(context, int) and context > 0 else 0


def _plan_device(device: str | torch.device) -> torch.device:
    """The device a plan is for; it need not be present here (plan for cuda on a laptop)."""
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(
            f"Unknown device {device!r} for the memory plan: give e.g. cpu, cuda or cuda:0."
        ) from exc


def _config_dtype(config: PretrainedConfig) -> torch.dtype:
    named = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(named, str):
        named = getattr(torch, named, None)
    return named if isinstance(named, torch.dtype) else torch.float32


def format_plan(plan: MemoryPlan) -> str:
    """The plan as a fixed-width text table in GiB (the CLI prints it)."""
    lines = [
        f"memory plan: {plan.n_tokens} tokens, batch {plan.batch}, {plan.dtype}",
        f"{'run':<15} {'extra GiB':>10} {'peak GiB':>9}  detail",
    ]
    for row in plan.table.itertuples():
        lines.append(
            f"{row.run:<15} {row.extra_bytes / 2**30:>10.3f} {row.peak_bytes / 2**30:>9.3f}"
            f"  {row.detail}"
        )
    return "\n".join(lines)
