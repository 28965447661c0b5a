"""Which prompt a forward belongs to, for interventions that choose once per prompt.

VHR chooses its heads and VAR finds its sink tokens on a prompt, then reuse the choice for
the rest of that generation: decode steps on the KV cache, or re-forwards of the prompt plus
generated tokens without a cache (which must give the same tokens). `PromptState` reads each
forward's `input_ids`, `attention_mask`, `token_type_ids` and `pixel_values` through a
pre-hook on the top model and says whether the forward is a decode step, a new prompt, or a
continuation of the remembered one (its ids and pixels extend it). Memory: the remembered ids
and pixels.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Bool
from torch import Tensor

from interp.errors import HookError, UnsupportedModelError
from interp.hooks import model_input_hooks
from interp.image_layouts import image_token_id as image_token_id_of
from interp.kv_cache import is_decode_step
from interp.models import Model


class PromptState:
    """The current forward's inputs and the prompt an intervention chose on.

    Attributes:
        ids: [batch, pos] the current forward's input ids (None before the first).
        mask: [batch, pos] its attention mask (ones if none was passed).
        token_types: [batch, pos] its `token_type_ids` (None if none were passed).
        decoding: whether the current forward continues a non-empty KV cache.
        prompt_length: positions of the remembered prompt (None: nothing remembered).
    """

    def __init__(self, name: str, image_token_id: int) -> None:
        self.name, self.image_token_id = name, image_token_id
        self.ids: Tensor | None = None
        self.mask: Tensor | None = None
        self.pixels: Tensor | None = None
        self.token_types: Tensor | None = None
        self.decoding = False
        self._prompt: tuple[Tensor, Tensor | None] | None = None

    def read(self, args: tuple, kwargs: dict[str, Any]) -> None:
        """Reads a base-model forward's inputs (LLaVA-NeXT passes ids first)."""
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            raise HookError(f"{self.name} needs input_ids in the model's forward, not embeddings.")
        self.decoding = is_decode_step(kwargs)
        mask = kwargs.get("attention_mask")
        self.ids, self.pixels = ids, kwargs.get("pixel_values")
        self.mask = torch.ones_like(ids) if mask is None else mask
        self.token_types = kwargs.get("token_type_ids")

    @property
    def image(self) -> Bool[Tensor, "batch pos"]:
        """Image tokens of the current forward."""
        assert self.ids is not None  # read() ran: every forward passes the pre-hook
        return self.ids == self.image_token_id

    @property
    def prompt_length(self) -> int | None:
        return None if self._prompt is None else self._prompt[0].shape[1]

    def is_new_prompt(self) -> bool:
        """A forward without cache that does not extend the remembered prompt."""
        return not self.decoding and not self._continues()

    def remember(self) -> None:
        """Make the current forward's ids and pixels the prompt."""
        assert self.ids is not None
        self._prompt = (self.ids, self.pixels)

    def check_batch(self, batch: int) -> None:
        """Raise HookError unless a prompt of this batch size was seen in this context."""
        if self._prompt is None or self._prompt[0].shape[0] != batch:
            raise HookError(
                f"{self.name} saw a forward on a cache without its prompt: run the prefill"
                f" inside the same `{self.name}(...).applied(model)` context (e.g. call"
                " generate inside it)."
            )

    def _continues(self) -> bool:
        if self._prompt is None or self.ids is None:
            return False
        ids, pixels = self._prompt
        same_pixels = (pixels is None) == (self.pixels is None) and (
            pixels is None or torch.equal(pixels, self.pixels)  # type: ignore[arg-type]
        )
        return (
            self.ids.shape[0] == ids.shape[0]
            and self.ids.shape[1] >= ids.shape[1]
            and torch.equal(self.ids[:, : ids.shape[1]], ids)
            and same_pixels
        )


def image_token_id(model: Model, name: str) -> int:
    """The model's image token id; UnsupportedModelError for a text-only model."""
    token_id = image_token_id_of(model.hf.config)
    if token_id is None:
        raise UnsupportedModelError(f"{model.spec} has no image token: {name} needs a VLM.")
    return token_id


@contextmanager
def prompt_state(model: Model, name: str) -> Iterator[PromptState]:
    """A `PromptState` fed by the base model's inputs (`model_input_hooks`), until exit."""
    state = PromptState(name, image_token_id(model, name))
    with model_input_hooks(model.hf, state.read):
        yield state
