"""Task metrics: logit difference and accuracy at the last position, and a batched runner.

`logit_difference` is Wang et al.'s logit(answer) - logit(wrong); `accuracy` says per row
whether the answer beats the other candidates (default) or is the argmax over the whole
vocabulary. `last_logits` runs the model without gradients in batches and keeps only the
last position's logits (HF `logits_to_keep=1`): memory one [batch, vocab] float32 row per
prompt. `prompt_metrics` puts both metrics of every row in a table with provenance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.encoding import Encoding
from interp.errors import ConfigError, did_you_mean
from interp.models import Model
from interp.results import ItemTable, Provenance

if TYPE_CHECKING:
    from circuits.circuit_task import CircuitTask

Among = Literal["choices", "vocab"]


def logit_difference(
    logits_last: Float[Tensor, "batch vocab"], task: CircuitTask
) -> Float[Tensor, " batch"]:
    """logit(answer) - logit(wrong) per row at the last position (Wang et al.'s metric)."""
    answer = task.answer_ids.to(logits_last.device)[:, None]
    wrong = task.wrong_ids.to(logits_last.device)[:, None]
    return (logits_last.gather(1, answer) - logits_last.gather(1, wrong))[:, 0]


def accuracy(
    logits_last: Float[Tensor, "batch vocab"], task: CircuitTask, *, among: Among = "choices"
) -> Bool[Tensor, " batch"]:
    """Per row, whether the model picks the answer.

    Args:
        logits_last: last-position logits.
        task: the task (its `choice_ids`).
        among: "choices" (default): the answer's logit is above every other candidate's
            (IOI: IO > S, Wang et al.'s accuracy; Colored Objects: the asked colour among
            the three listed). "vocab": the answer is the argmax over the whole vocabulary
            (Merullo et al.'s Colored Objects accuracy).
    """
    if among not in ("choices", "vocab"):
        raise ConfigError(
            f"Unknown accuracy kind {among!r}." + did_you_mean(str(among), ("choices", "vocab"))
        )
    if among == "vocab":
        return logits_last.argmax(-1).cpu() == task.answer_ids
    scores = logits_last.gather(1, task.choice_ids.to(logits_last.device)).cpu()
    return (scores[:, :1] > scores[:, 1:]).all(-1)


@torch.no_grad()
def last_logits(
    model: Model, batch: Encoding, *, batch_size: int = 64
) -> Float[Tensor, "batch vocab"]:
    """Next-token logits (float32, on CPU) at the last column of a left-padded batch."""
    rows = []
    for start in range(0, batch.input_ids.shape[0], batch_size):
        part = Encoding(
            batch.input_ids[start : start + batch_size].to(model.device),
            batch.attention_mask[start : start + batch_size].to(model.device),
        )
        logits = model.hf(**part, use_cache=False, logits_to_keep=1).logits[:, -1]
        rows.append(logits.float().cpu())
    return torch.cat(rows)


def logit_differences(
    model: Model, task: CircuitTask, *, corrupted: bool = False, batch_size: int = 64
) -> Float[Tensor, " batch"]:
    """Per-row logit difference of the clean (or corrupted) prompts, batched, no gradients."""
    batch = task.corrupted if corrupted else task.clean
    return logit_difference(last_logits(model, batch, batch_size=batch_size), task)


def prompt_metrics(model: Model, task: CircuitTask, *, batch_size: int = 64) -> ItemTable:
    """One row per prompt: logit differences (clean, corrupted) and both accuracies.

    Columns: row, family, template, prompt, corrupted_prompt, answer, wrong,
    logit_difference, corrupted_logit_difference, correct (among the choices), correct_vocab.
    """
    clean = last_logits(model, task.clean, batch_size=batch_size)
    bad = last_logits(model, task.corrupted, batch_size=batch_size)
    decode = model.tokenizer.decode
    frame = pd.DataFrame(
        {
            "row": np.arange(len(task)),
            "family": task.families,
            "template": task.templates,
            "prompt": task.prompts,
            "corrupted_prompt": task.corrupted_prompts,
            "answer": [decode([i]) for i in task.answer_ids.tolist()],
            "wrong": [decode([i]) for i in task.wrong_ids.tolist()],
            "logit_difference": logit_difference(clean, task).numpy(),
            "corrupted_logit_difference": logit_difference(bad, task).numpy(),
            "correct": accuracy(clean, task).numpy(),
            "correct_vocab": accuracy(clean, task, among="vocab").numpy(),
        }
    )
    provenance = Provenance(
        **model.provenance_fields(),
        analyzer="circuits.tasks.prompt_metrics",
        config=task.config,
        inputs_hash=task.inputs_hash(),
        n_inputs=len(task),
    )
    return ItemTable(frame, provenance)
