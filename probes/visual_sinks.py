"""Visual sink tokens: image tokens with massive activations in the sink dimensions.

VAR (Kang et al., ICLR 2025, arXiv 2503.03321) finds sinks in the residual stream: for the
residual x entering layer l, phi(x) = max_{d in D_sink} |x_d| / RMS(x), RMS = sqrt(mean
x^2 + 1e-6), in float32 with no learned norm weight; a token is a sink of layer l iff
phi >= tau (20), and a visual sink if it is also an image token. D_sink is the model's
(LLaVA-1.5-7B: 1415, 2533); with none given every dimension counts, and `sink_dimensions`
ranks the dimensions that fire, for the user to pick D_sink (no published procedure).
The same `phi` is what `interp.interventions.VAR` uses.

Returns a `TokenScores` with one row per (example, layer, real position). Memory: the
table itself plus one [batch, pos] ratio per layer; cost: one forward of the base model.
`sink_patches` places the image tokens, with their sink counts, on the image's patches
(`interp.image_patches`: exact for the VLMs of `interp.image_layouts.PATCH_MAPS`), for the
sink-patch figure.
Method notes: docs/methods.md §10.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interp.config import Config, check_range
from interp.errors import InputError
from interp.hooks import residual_hooks
from interp.image_patches import patch_table
from interp.inputs import ModelInputs, RowImages, TokenKind
from interp.interventions.var import check_sink_dims, sink_ratio
from interp.models import Model
from interp.prompts import as_texts
from interp.results import TokenScores
from probes.sinks import massive_dimensions
from probes.vision import run_batches

ANALYZER = "visual_sinks"


@dataclass(frozen=True, kw_only=True)
class VisualSinkConfig(Config):
    """Parameters of the visual-sink analyzer (VAR's defaults).

    Attributes:
        tau: phi threshold of a sink (20).
        sink_dims: D_sink; None takes every dimension.
        batch_size: prompts per forward.
    """

    tau: float = 20.0
    sink_dims: tuple[int, ...] | None = None
    batch_size: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "tau", 0.0, strict_low=True)
        check_range(self, "batch_size", 1)
        check_sink_dims(self)


def visual_sinks(
    model: Model,
    prompts: str | Sequence[str],
    images: RowImages | Sequence[RowImages],
    config: VisualSinkConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TokenScores:
    """phi of every real token entering every layer, with its sink and visual-sink flags.

    Returns:
        `TokenScores`, one row per (example, layer, position): `token`, `kind` ("text" or
        "image"), `phi`, `dim` (the dimension that gives phi), `sink` (phi >= tau) and
        `visual_sink` (a sink that is an image token). Positions are those of the prompt
        alone (padding removed).

    Raises:
        InputError: a prompt without an image; images for a text-only model.

    Example:
        >>> from interp.tiny_models import tiny_llava
        >>> import numpy as np
        >>> table = visual_sinks(tiny_llava(), "what?", np.zeros((32, 32, 3), np.uint8))
        >>> sorted(set(table.data.kind))
        ['image', 'text']
    """
    config = config or VisualSinkConfig()

    def score(inputs: ModelInputs, first: int) -> list[pd.DataFrame]:
        inputs.require_images("Visual sinks")
        found: dict[int, tuple[Tensor, Tensor]] = {}

        def read(layer: int, x: Tensor) -> None:
            phi, dim = sink_ratio(x.detach(), config.sink_dims)
            found[layer] = (phi.cpu(), dim.cpu())

        with torch.no_grad(), residual_hooks(model.hf, read):
            model.hf.base_model(**inputs, use_cache=False)
        return [
            _frame(model, inputs, found, row, first + row, config.tau)
            for row in range(len(inputs.lengths))
        ]

    return run_batches(
        model, prompts, images, config, config.batch_size, ANALYZER, score, progress, TokenScores
    )


def _frame(
    model: Model,
    inputs: ModelInputs,
    found: dict[int, tuple[Tensor, Tensor]],
    row: int,
    example: int,
    tau: float,
) -> pd.DataFrame:
    kinds = inputs.kinds[row].cpu()
    real = (kinds != TokenKind.PADDING).nonzero().flatten()
    tokens = model.tokenizer.convert_ids_to_tokens(inputs.input_ids[row, real].tolist())
    is_image = (kinds[real] == TokenKind.IMAGE).numpy()
    frames = []
    for layer in sorted(found):
        phi, dim = found[layer][0][row, real].numpy(), found[layer][1][row, real].numpy()
        frames.append(
            pd.DataFrame(
                {
                    "example": example,
                    "position": np.arange(len(real)),
                    "token": tokens,
                    "layer": layer,
                    "kind": np.where(is_image, "image", "text"),
                    "phi": phi,
                    "dim": dim,
                    "sink": phi >= tau,
                    "visual_sink": (phi >= tau) & is_image,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def sink_dimensions(tokens: TokenScores) -> pd.DataFrame:
    """Candidate D_sink: per dimension, the sink (layer, token) hits it gives, most first."""
    return massive_dimensions(TokenScores(tokens.data[tokens.data.sink], tokens.provenance))


def sink_patches(
    model: Model,
    prompts: str | Sequence[str],
    images: RowImages | Sequence[RowImages],
    sinks: TokenScores,
) -> pd.DataFrame:
    """Every image token's patch, with how often it is a visual sink: where sinks sit.

    Args:
        model: the VLM `sinks` came from (`interp.image_layouts.PATCH_MAPS`).
        prompts, images: the inputs `visual_sinks` scored (same order).
        sinks: `visual_sinks(model, prompts, images, ...)`.

    Returns:
        One row per (example, image token): `example`, the `interp.image_patches.patch_table`
        columns (`position`, `view` within the example, `patch_row`, `patch_col`, `top`,
        `left`, `bottom`, `right`), `n_layers` (layers where it is a visual sink) and
        `max_phi` (its largest phi over layers).

    Raises:
        UnsupportedModelError: an architecture without an exact token-to-patch map.
    """
    texts = as_texts(prompts)
    entries = [images] if isinstance(prompts, str) else list(images)  # type: ignore[arg-type]
    data = sinks.data[sinks.data.kind == "image"]
    counts = data.groupby(["example", "position"]).agg(
        n_layers=("visual_sink", "sum"), max_phi=("phi", "max")
    )
    frames = []
    for example, (text, image) in enumerate(zip(texts, entries, strict=True)):
        table = patch_table(model, model.prepare(text, image))
        found = counts.loc[example] if example in counts.index.get_level_values(0) else None
        if found is None:
            raise InputError(f"The sink table has no example {example}: pass the same inputs.")
        table = table.join(found, on="position")
        table.insert(0, "example", example)
        frames.append(table)
    return pd.concat(frames, ignore_index=True)
