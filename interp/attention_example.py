"""Every head's attention pattern on one short prompt: what the atlas page shows on a click.

`attention_example(model, prompt)` runs one forward and keeps the post-softmax pattern of
every layer and head ([layer, head, query, key] float32, TransformerLens `hook_pattern`
through `interp.hook_points.record`). That is layers x heads x N² floats, 270 KB for the
default model on a 16-token prompt, so the prompt must stay short (`MAX_TOKENS`); saved as
one compressed `.npz` with the prompt and its tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from interp.errors import InputError
from interp.hook_points import record
from interp.models import Model

EXAMPLE_PROMPT = "When Mary and John went to the store, John gave a drink to"
MAX_TOKENS = 64  # the pattern grows with N²: a page carries it for every head


@dataclass(frozen=True, eq=False)
class AttentionExample:
    """One prompt's tokens and every head's pattern.

    Attributes:
        prompt: the text.
        tokens: its tokens as text, one per position (each decoded alone: a leading
            space shows as a space, not as the tokenizer's marker).
        patterns: [layer, head, query, key] post-softmax attention, float32.
    """

    prompt: str
    tokens: list[str]
    patterns: np.ndarray

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, AttentionExample)
            and (self.prompt, self.tokens) == (other.prompt, other.tokens)
            and np.array_equal(self.patterns, other.patterns)
        )

    __hash__ = None  # type: ignore[assignment]

    def save(self, path: str | Path) -> Path:
        """Write `path` (.npz: prompt, tokens, patterns); returns it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:  # a file handle: numpy adds no second suffix
            np.savez_compressed(
                handle,
                prompt=np.array(self.prompt),
                tokens=np.array(self.tokens),
                patterns=self.patterns,
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> AttentionExample:
        with np.load(Path(path)) as stored:
            return cls(str(stored["prompt"]), stored["tokens"].tolist(), stored["patterns"])


def attention_example(model: Model, prompt: str = EXAMPLE_PROMPT) -> AttentionExample:
    """Every head's attention on `prompt` (one forward, explicit attention in every layer).

    Raises:
        InputError: the prompt is longer than `MAX_TOKENS` tokens.
    """
    batch = model.encode(prompt)
    ids = batch.input_ids[0]
    if len(ids) > MAX_TOKENS:
        raise InputError(
            f"The example prompt has {len(ids)} tokens; keep it to {MAX_TOKENS} or fewer."
        )
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.geometry.n_layers)]
    acts = record(model, batch, names)
    patterns = torch.stack([acts[name][0].float().cpu() for name in names])
    tokens = [model.tokenizer.decode([i]) for i in ids.tolist()]
    return AttentionExample(prompt, tokens, patterns.numpy())
