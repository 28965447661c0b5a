"""VAR, visual attention redistribution: move sink attention onto the image in image-centric rows.

Kang et al., ICLR 2025, arXiv 2503.03321; code seilk/VisAttnSink @98e62d6 (docs/methods.md
§10). In a VLM's language model:

* Sinks (massive activations): for the residual x entering layer l, phi(x) =
  max_{d in D_sink} |x_d| / RMS(x), RMS = sqrt(mean x^2 + 1e-6), float32, no norm weight;
  the sinks of layer l are the prompt tokens with phi >= tau (tau = 20). Found at the prompt
  and reused at every later step: generated tokens are never sinks. Visual sinks are the
  sinks among the image tokens.
* Image-centric rows, per (layer, head, query row i), from the current attention A:
  vis_i = sum_{j in image} A_ij; r_i = sum_{j in image, not sink} A_ij / vis_i; the row is
  selected iff vis_i >= 0.2, r_i >= rho, and the layer has a visual sink in this prompt.
* Redistribution in a selected row, with S the sinks (text and visual) and V' the non-sink
  image tokens: A'_ij = (1 - p) A_ij on S, and the budget p * sum_S A_ij goes to V' in
  proportion, A'_ij = A_ij + budget * A_ij / sum_{V'} A_ik. Other entries are unchanged, so
  the row still sums to 1. Between softmax and A·V.
* Scope: query rows after the row's last image token (prefill) and every decode row; layers
  2 .. L-2 (`include_last_layer` adds L-1, as the reference code does).

Conventions: the paper's p is the share *moved* and rho the least non-sink visual share; the
code keeps p_code = 1 - p and tests the sink share 1 - r_i <= rho_code = 1 - rho
(`convention="code"` reads p and rho that way). Batches: sinks, image tokens and scope per
batch row; padding is never a sink, an image token or a scored row.

Cost: explicit attention in VAR's layers (others keep SDPA), one [batch, pos] ratio per
layer at the prompt, and per edited block two small matrix products with the key classes.
Memory: [layer, batch, key, 3] floats (the key classes).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.config import Config, check_range
from interp.errors import ConfigError, InputError, UnsupportedModelError
from interp.hooks import AttentionRows, attention_hooks, residual_hooks
from interp.interventions.prompt_state import PromptState, prompt_state
from interp.models import Model


@dataclass(frozen=True, kw_only=True)
class VarConfig(Config):
    """VAR parameters; defaults are the paper convention's (docs/methods.md §10).

    Attributes:
        p: share of the sinks' attention moved (paper 0.4); with convention "code", the
            share kept (code 0.6).
        rho: least non-sink share r_i of a selected row (0.5); with convention "code", the
            most sink share 1 - r_i (same 0.5).
        min_image_share: rows with less attention on the image are skipped (0.2).
        tau: phi threshold of a sink token (20).
        sink_dims: D_sink, the model's sink dimensions (LLaVA-1.5-7B: 1415, 2533); None
            takes every dimension (a token with any massive activation is a sink).
        convention: "paper" or "code" (p and rho flipped, see the module docstring).
        include_last_layer: also edit layer L-1 (the reference code does).
    """

    p: float = 0.4
    rho: float = 0.5
    min_image_share: float = 0.2
    tau: float = 20.0
    sink_dims: tuple[int, ...] | None = None
    convention: Literal["paper", "code"] = "paper"
    include_last_layer: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "p", 0.0, 1.0)
        check_range(self, "rho", 0.0, 1.0)
        check_range(self, "min_image_share", 0.0, 1.0)
        check_range(self, "tau", 0.0, strict_low=True)
        check_sink_dims(self)

    @property
    def moved(self) -> float:
        """The share of sink attention moved (the paper's p)."""
        return self.p if self.convention == "paper" else 1.0 - self.p

    @property
    def min_nonsink_share(self) -> float:
        """The least r_i of a selected row (the paper's rho)."""
        return self.rho if self.convention == "paper" else 1.0 - self.rho


def var_layers(n_layers: int, config: VarConfig) -> list[int]:
    """VAR's layers: 2 .. L-2, plus L-1 with `include_last_layer`."""
    return list(range(2, n_layers if config.include_last_layer else n_layers - 1))


def check_sink_dims(config: object) -> None:
    """A config's `sink_dims`: None (every dimension) or non-negative dimensions."""
    dims = config.sink_dims
    if dims is not None and (not dims or any(isinstance(d, bool) or d < 0 for d in dims)):
        raise ConfigError(
            f"{type(config).__name__}.sink_dims must be non-negative dimensions or None,"
            f" got {dims}."
        )


def sink_ratio(
    residual: Float[Tensor, "batch pos d_model"], dims: tuple[int, ...] | None
) -> tuple[Float[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """phi = max_{d in dims} |x_d| / RMS(x) in float32 (every dim if `dims` is None), and
    the dimension that gives it."""
    x = residual.float()
    if dims is not None and max(dims) >= x.shape[-1]:
        raise InputError(
            f"Sink dimension {max(dims)} is out of range: the residual stream has"
            f" {x.shape[-1]} dimensions."
        )
    rms = torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    picked = x if dims is None else x[..., list(dims)]
    phi, where = (picked.abs() / rms).max(-1)
    if dims is not None:
        where = torch.tensor(dims, device=where.device)[where]
    return phi, where


def _key_classes(sinks: Bool[Tensor, "batch key"], image: Bool[Tensor, "batch key"]) -> Tensor:
    """[batch, key, 3] float: image token, non-sink image token (V'), sink (S).

    All zero in a batch row without a visual sink: VAR never edits it.
    """
    has_visual_sink = (sinks & image).any(-1)[:, None, None]
    return torch.stack([image, image & ~sinks, sinks], -1).float() * has_visual_sink


def _redistribute(
    probs: Float[Tensor, "batch head query key"],
    keys: Float[Tensor, "batch key 3"],
    scope: Bool[Tensor, "batch query"],
    config: VarConfig,
) -> Float[Tensor, "batch head query key"]:
    """The edit as one factor per entry: 1 - p on S, 1 + budget / sum_V' A on V', else 1.

    Few kernels per call (a decode step runs it in every VAR layer): the three row sums are
    one product with the key classes, and the factors another. Unselected rows get factors
    of exactly 1, so they (and every row at p = 0) come back bit for bit.
    """
    sums = torch.matmul(probs, keys[:, None])  # [batch, head, query, 3]
    vis, nonsink, sink_mass = sums.unbind(-1)
    selected = (
        scope[:, None, :]
        & (vis > 0)
        & (vis >= config.min_image_share)
        & (nonsink >= config.min_nonsink_share * vis)
        & (nonsink > 0)  # somewhere to put the budget
    )
    moved = config.moved
    gain = moved * sink_mass / nonsink.clamp_min(torch.finfo(probs.dtype).tiny)
    zero = probs.new_zeros(())
    coefficients = torch.stack(  # [batch, head, query, 2]: on V', on S
        [torch.where(selected, gain, zero), torch.where(selected, -moved, zero)], -1
    )
    factors = torch.matmul(coefficients, keys[:, None, :, 1:].transpose(-1, -2))
    return probs * (factors + 1.0)


@dataclass(frozen=True)
class VAR:
    """Visual attention redistribution, applied with `with VAR().applied(model):`.

    Inside the context the first forward on a prompt finds its sinks; decode steps and
    re-forwards that extend the prompt reuse them. Combined with VHR, VHR's selection
    forward (the prompts plus their no-image branches) runs without VAR's edit.

    Example:
        >>> from interp.tiny_models import tiny_llava
        >>> import numpy as np
        >>> model = tiny_llava(n_layers=4)
        >>> inputs = model.prepare("what is it?", np.zeros((32, 32, 3), np.uint8))
        >>> with VAR(VarConfig(tau=2.0, sink_dims=(0, 1, 2))).applied(model):
        ...     out = model.hf.generate(**inputs, max_new_tokens=3, do_sample=False)
        >>> tuple(out.shape)
        (1, 31)
    """

    config: VarConfig = field(default_factory=VarConfig)

    def to_dict(self) -> dict[str, Any]:
        """The reproducible record: every VAR parameter."""
        return {"intervention": "VAR", **self.config.to_dict()}

    def identity(self) -> VAR:
        """Nothing moved (p = 0, or 1 in the code convention): same sinks, rows and kernels."""
        return VAR(replace(self.config, p=0.0 if self.config.convention == "paper" else 1.0))

    @contextmanager
    def applied(self, model: Model) -> Iterator[None]:
        geometry = model.geometry
        layers = var_layers(geometry.n_layers, self.config)
        if not layers:
            raise UnsupportedModelError(
                f"VAR edits layers 2..L-2 (and L-1 with include_last_layer) and {model.spec}"
                f" has {geometry.n_layers} layers: nothing to edit"
                + (" unless include_last_layer=True." if geometry.n_layers == 3 else ".")
            )
        with prompt_state(model, "VAR") as prompt:
            state = _Redistributor(self.config, prompt, layers)
            with (
                residual_hooks(model.hf, state.find_sinks, layers=layers),
                attention_hooks(model.hf, state),
            ):
                yield


class _Redistributor:
    """VAR's state in one context: each layer's sinks and the image tokens of the prompt.

    Per layer the key classes are kept padded past the prompt (tokens after it are neither
    sinks nor image tokens), grown by doubling, so a decode step only slices them.
    """

    def __init__(self, config: VarConfig, prompt: PromptState, layers: list[int]) -> None:
        self.config, self.prompt, self.first_layer = config, prompt, layers[0]
        self.layers = set(layers)
        self.keys: dict[int, Tensor] = {}  # layer -> [batch, key capacity, 3]
        self.last_image: Tensor | None = None  # [batch] last image position (-1: none)
        self.new_prompt = False

    def wants(self, layer: int, n_queries: int) -> bool:
        return layer in self.layers

    def _foreign(self, batch: int) -> bool:
        """A decoder forward the base model did not start (VHR's selection): left alone."""
        return self.prompt.ids is None or batch != self.prompt.ids.shape[0]

    def find_sinks(self, layer: int, x: Float[Tensor, "batch pos d_model"]) -> None:
        if self._foreign(x.shape[0]):
            return
        if self.prompt.decoding:
            self.prompt.check_batch(x.shape[0])
            return
        if layer == self.first_layer:  # decided once per forward, before its first layer
            self.new_prompt = self.prompt.is_new_prompt()
            if self.new_prompt:
                self.prompt.remember()
                image = self.prompt.image.to(x.device)
                positions = torch.arange(image.shape[1], device=x.device)
                self.last_image = torch.where(image, positions, -1).amax(-1)
        if not self.new_prompt:
            return
        real = self.prompt.mask.bool().to(x.device)  # type: ignore[union-attr]
        sinks = (sink_ratio(x, self.config.sink_dims)[0] >= self.config.tau) & real
        image = self.prompt.image.to(x.device)
        self.keys[layer] = _key_classes(sinks, image)

    def __call__(self, rows: AttentionRows) -> Tensor | None:
        if self._foreign(rows.probs.shape[0]):
            return None
        n_block = rows.probs.shape[-1]
        keys = self.keys[rows.layer]
        if keys.shape[1] < n_block:  # tokens after the prompt: no class
            keys = torch.nn.functional.pad(keys, (0, 0, 0, max(n_block, 2 * keys.shape[1])))
            self.keys[rows.layer] = keys
        assert self.last_image is not None  # find_sinks ran on the prompt
        scope = rows.query_positions[None, :] > self.last_image[:, None]  # [batch, query]
        return _redistribute(rows.probs, keys[:, :n_block], scope, self.config)
