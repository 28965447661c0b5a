"""VHD and VHR: vision-aware head divergence, and reinforcing the vision-aware heads.

He et al., ACL 2025, arXiv 2412.13949 (docs/methods.md §10). For head i of layer l, at the
position that predicts the next token,

    VHD_{l,i} = || z^{l,i}(. | x_V, x_T) - z^{l,i}(. | x_T) ||_2   (Eq. 4),

with z the head's output before the output projection and the counterfactual x_T the same
prompt with its image tokens removed. The two branches differ in length and rotary
positions, so they run as one left-padded batch of two and are compared at the last
position only. Outlier filter (paper §3.2): with TA_{l,i} = ||z^{l,i}(. | x_T)||^2, VHD is
zeroed where VHD > mu_l + sigma_l and TA > mu^TA_l + sigma^TA_l (mean and population
standard deviation over layer l's heads; the paper does not name the estimator).

VHR (Alg. 1): at the first generated token, layer by layer inside that lockstep forward,
the heads of layer l above the layer's median (filtered) VHD are chosen, and their z is
multiplied by alpha before layer l + 1 runs, in both branches by default
(`reinforce_counterfactual`; the paper does not say). The choice is frozen: every later
forward of the generation scales the same heads of each batch row at every position.

How it runs. The counterfactual is built from the decoder's own inputs (`inputs_embeds`
after the VLM merged the image features; `interp.hooks.decoder_input_hooks`): each row's
image tokens are dropped and its text left-padded to the prompt's width, with positions
renumbered and its mask built as if it were alone (a model that hands its language model
a built mask, Gemma 3 or PaliGemma, builds the text's mask with its own rules: causal text,
a bidirectional prefix). So the text embeddings are exactly the prompt's and every VLM
family works the same way. Cost of VHR: one extra forward of twice the batch at the
prompt (the selection), then a multiply per chosen layer per forward. Memory: [batch,
layer, head] scores; no attention pattern is kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from interp.config import Config, check_range
from interp.errors import InputError, UnsupportedModelError
from interp.hooks import decoder_input_hooks, head_output_hooks
from interp.image_layouts import language_model_mask
from interp.inputs import ModelInputs
from interp.interventions.prompt_state import PromptState, prompt_state
from interp.kv_cache import without_cache
from interp.models import Model


@dataclass(frozen=True, kw_only=True)
class VhrConfig(Config):
    """VHR parameters; defaults are the paper's (LLaVA-1.5-7B, LLaVA-NeXT-7B).

    Attributes:
        alpha: factor on the chosen heads' z (paper: 2; 1 is the identity).
        last_layers: reinforce the last this many layers (paper: 14).
        first_layer: also reinforce layer 1 (paper: yes).
        outlier_filter: zero the VHD of heads with outlying VHD and text activation.
        reinforce_counterfactual: scale the no-image branch too during selection.
    """

    alpha: float = 2.0
    last_layers: int = 14
    first_layer: bool = True
    outlier_filter: bool = True
    reinforce_counterfactual: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "alpha", 0.0)
        check_range(self, "last_layers", 0)


def vhr_layers(n_layers: int, config: VhrConfig) -> list[int]:
    """The reinforced layers: {1} (if `first_layer`) plus the last `last_layers`."""
    layers = set(range(max(0, n_layers - config.last_layers), n_layers))
    if config.first_layer and n_layers > 1:
        layers.add(1)
    return sorted(layers)


def filter_outliers(
    vhd: Float[Tensor, "... head"], activation: Float[Tensor, "... head"]
) -> Float[Tensor, "... head"]:
    """VHD with heads zeroed whose VHD and text activation both exceed mean + std (per layer)."""

    def outlying(x: Tensor) -> Tensor:
        return x > x.mean(-1, keepdim=True) + x.std(-1, correction=0, keepdim=True)

    return vhd.masked_fill(outlying(vhd) & outlying(activation), 0.0)


def above_median(scores: Float[Tensor, "... head"]) -> Bool[Tensor, "... head"]:
    """Heads strictly above their layer's median score (the usual median: mid-point of two)."""
    return scores > scores.quantile(0.5, dim=-1, keepdim=True)


@dataclass(frozen=True)
class Divergence:
    """VHD of every head for each batch row, at the last position.

    Attributes:
        vhd: [batch, layer, head] ||z(image) - z(no image)||_2, unfiltered.
        text_activation: [batch, layer, head] ||z(no image)||^2 (TA).
        score: VHD after the outlier filter (= vhd without it).
        chosen: [batch, layer, head] above the layer's median `score`.
    """

    vhd: Float[Tensor, "batch layer head"]
    text_activation: Float[Tensor, "batch layer head"]
    score: Float[Tensor, "batch layer head"]
    chosen: Bool[Tensor, "batch layer head"]


def without_images(
    model: Model,
    kwargs: dict[str, Any],
    image: Bool[Tensor, "batch pos"],
    padding: Tensor,
    token_types: Tensor | None = None,
) -> dict[str, Any]:
    """Decoder kwargs for the lockstep batch: the rows as given, then each without its image.

    Each counterfactual row keeps its text embeddings in order, left-padded to the same
    width, with positions numbered on from its first token's as if it were alone. Its mask is
    the one the model builds for that text alone: where the model hands its language model
    a built mask (Gemma 3's bidirectional image blocks, PaliGemma's bidirectional prefix),
    the model's own builder makes it from the text's padding and `token_type_ids`
    (`interp.image_layouts.language_model_mask`); the prompt rows keep the mask given.

    Args:
        model: the VLM.
        kwargs: the decoder's keyword arguments for the prompts.
        image: [batch, pos] the prompts' image tokens.
        padding: [batch, pos] the model inputs' attention mask (1 = real token).
        token_types: [batch, pos] the model inputs' `token_type_ids`, if it takes them.

    Raises:
        InputError: a row whose last position is an image token (nothing to compare).
        UnsupportedModelError: positions or a built mask of a form VHD cannot join.
    """
    embeds = kwargs.get("inputs_embeds")
    if embeds is None:
        raise UnsupportedModelError("VHD needs the decoder's inputs_embeds; this model passed ids.")
    batch, width = embeds.shape[:2]
    padding = padding.to(embeds.device)
    positions = kwargs.get("position_ids")
    if positions is None:
        positions = torch.arange(width, device=embeds.device).expand(batch, -1)
    if positions.dim() not in (2, 3):
        raise UnsupportedModelError(
            "VHD builds its no-image branch from [batch, pos] or [axis, batch, pos] positions;"
            f" this model passes position ids of shape {tuple(positions.shape)}."
        )
    if bool(image[:, -1].any()):
        raise InputError("A prompt ends with its image: VHD compares the text after the image.")
    keep = padding.bool() & ~image.to(padding.device)
    n_keep = keep.sum(-1)
    cf_embeds = embeds.new_zeros(embeds.shape)
    cf_padding = torch.zeros_like(padding)
    cf_types = None if token_types is None else torch.zeros_like(token_types)
    for row in range(batch):  # setup only: one gather per batch row
        count = int(n_keep[row])
        cf_embeds[row, width - count :] = embeds[row, keep[row]]
        cf_padding[row, width - count :] = 1
        if cf_types is not None and token_types is not None:
            cf_types[row, width - count :] = token_types[row, keep[row].to(token_types.device)]
    first = padding.long().argmax(-1)  # each row's first real token
    index = first[:, None].expand(*positions.shape[:-1], 1)
    start = positions.gather(-1, index)  # its position (on every rotary axis)
    cf_positions = start + (cf_padding.cumsum(-1) - 1).clamp_min(0).to(positions.dtype)
    given = kwargs.get("attention_mask")
    if given is None or (isinstance(given, Tensor) and given.dim() == 2):
        mask: Any = torch.cat([padding if given is None else given, cf_padding])
    else:
        text_alone = language_model_mask(model.hf, cf_embeds, cf_padding, cf_positions, cf_types)
        mask = _stacked(given, text_alone, batch)
    return {
        **without_cache(kwargs),
        "inputs_embeds": torch.cat([embeds, cf_embeds]),
        "attention_mask": mask,
        "position_ids": torch.cat([positions, cf_positions], dim=-2),
    }


def _stacked(prompts: Any, counterfactuals: Any, batch: int) -> Any:
    """The prompt rows' built mask above the no-image rows' (per layer type for a dict)."""
    if isinstance(prompts, dict) and isinstance(counterfactuals, dict):
        if prompts.keys() == counterfactuals.keys():
            return {key: _stacked(prompts[key], counterfactuals[key], batch) for key in prompts}
    elif (
        isinstance(prompts, Tensor)
        and isinstance(counterfactuals, Tensor)
        and prompts.dim() == 4
        and prompts.shape[1:] == counterfactuals.shape[1:]
        and prompts.dtype == counterfactuals.dtype
    ):
        parts = [m.expand(batch, *m.shape[1:]) for m in (prompts, counterfactuals)]
        return torch.cat(parts)
    raise UnsupportedModelError(
        "VHD cannot stack its no-image branch's attention mask under the one this model hands"
        f" its language model ({_form(prompts)} and {_form(counterfactuals)})."
    )


def _form(mask: Any) -> str:
    if isinstance(mask, dict):
        return "{" + ", ".join(f"{key}: {_form(value)}" for key, value in mask.items()) + "}"
    if isinstance(mask, Tensor):
        return f"{mask.dtype} {tuple(mask.shape)}"
    return type(mask).__name__


class _Selection:
    """The lockstep z hook: scores each layer's heads, then scales the chosen ones.

    Rows 0..B-1 of the forward are the prompts, rows B..2B-1 their no-image branches.
    """

    def __init__(self, config: VhrConfig, layers: set[int], n_layers: int) -> None:
        self.config, self.layers = config, layers
        self.scores: dict[str, list[Tensor | None]] = {
            name: [None] * n_layers for name in ("vhd", "text_activation", "score", "chosen")
        }

    def __call__(self, layer: int, z: Float[Tensor, "batch pos head d_head"]) -> Tensor | None:
        batch = z.shape[0] // 2
        last = z[:, -1].float()  # [2B, head, d_head]
        vhd = (last[:batch] - last[batch:]).norm(dim=-1)  # [B, head]
        activation = last[batch:].pow(2).sum(-1)
        score = filter_outliers(vhd, activation) if self.config.outlier_filter else vhd
        chosen = above_median(score)
        for name, value in zip(self.scores, (vhd, activation, score, chosen), strict=True):
            self.scores[name][layer] = value
        if layer not in self.layers:
            return None
        factors = torch.where(chosen, self.config.alpha, 1.0)  # [B, head]
        other = factors if self.config.reinforce_counterfactual else torch.ones_like(factors)
        both = torch.cat([factors, other]).to(z.device, z.dtype)
        return z * both[:, None, :, None]

    def result(self) -> Divergence:
        stacked = {name: torch.stack(values, 1).cpu() for name, values in self.scores.items()}  # type: ignore[arg-type]
        return Divergence(**stacked)


def divergence(model: Model, inputs: ModelInputs, outlier_filter: bool = True) -> Divergence:
    """VHD of every head for each prompt of a prepared batch (no head is reinforced).

    One forward of twice the batch: the prompts and their no-image branches.

    Raises:
        InputError: a prompt without an image, or ending with its image.
    """
    inputs.require_images("Vision-aware head divergence")
    config = VhrConfig(alpha=1.0, outlier_filter=outlier_filter)
    n_layers = model.geometry.n_layers
    selection = _Selection(config, set(), n_layers)

    def lockstep(_decoder: nn.Module, kwargs: dict[str, Any]) -> dict[str, Any]:
        return without_images(
            model, kwargs, inputs.image_mask, inputs.attention_mask, inputs.get("token_type_ids")
        )

    with (
        torch.no_grad(),
        decoder_input_hooks(model.hf, lockstep),
        head_output_hooks(model.hf, selection),
    ):
        model.hf.base_model(**inputs, use_cache=False)
    return selection.result()


@dataclass(frozen=True)
class VHR:
    """Vision-aware head reinforcement, applied with `with VHR().applied(model):`.

    Inside the context the first forward on a prompt (no cache) first runs the selection
    (one lockstep forward with the prompt's no-image branch), then every forward scales the
    chosen heads of each batch row. A later forward without cache whose ids and pixels
    extend that prompt (a re-forward of the same generation) keeps the choice; another
    prompt gets a new one.

    Example:
        >>> from interp.tiny_models import tiny_llava
        >>> import numpy as np
        >>> model = tiny_llava()
        >>> inputs = model.prepare("what is it?", np.zeros((32, 32, 3), np.uint8))
        >>> with VHR().applied(model):
        ...     out = model.hf.generate(**inputs, max_new_tokens=3, do_sample=False)
        >>> tuple(out.shape)
        (1, 31)
    """

    config: VhrConfig = field(default_factory=VhrConfig)

    def to_dict(self) -> dict[str, Any]:
        """The reproducible record: every VHR parameter."""
        return {"intervention": "VHR", **self.config.to_dict()}

    def identity(self) -> VHR:
        """alpha = 1: the same selection and hooks, scaling nothing (bit-for-bit the model)."""
        return VHR(replace(self.config, alpha=1.0))

    @contextmanager
    def applied(self, model: Model) -> Iterator[None]:
        with prompt_state(model, "VHR") as prompt:
            state = _Reinforcer(self.config, model, prompt)
            with (
                decoder_input_hooks(model.hf, state.before_decoder),
                head_output_hooks(model.hf, state.edit),  # the selection scores every layer
            ):
                yield


class _Reinforcer:
    """VHR's state in one context: the heads chosen on the current prompt, as factors."""

    def __init__(self, config: VhrConfig, model: Model, prompt: PromptState) -> None:
        self.config, self.model, self.prompt = config, model, prompt
        self.n_layers = model.geometry.n_layers
        self.layers = set(vhr_layers(self.n_layers, config))
        self.factors: dict[int, Tensor] = {}  # layer -> [batch, head]
        self.selection: _Selection | None = None

    def before_decoder(self, decoder: nn.Module, kwargs: dict[str, Any]) -> None:
        if self.selection is not None:  # the selection's own forward
            return
        if self.prompt.decoding:
            self.prompt.check_batch(kwargs["inputs_embeds"].shape[0])
            return
        if not self.prompt.is_new_prompt():
            return
        self.selection = _Selection(self.config, self.layers, self.n_layers)
        try:
            with torch.no_grad():
                prompt = self.prompt
                decoder(
                    **without_images(
                        self.model, kwargs, prompt.image, prompt.mask, prompt.token_types
                    )
                )
            chosen = self.selection.result().chosen
        finally:
            self.selection = None
        alpha = self.config.alpha
        self.factors = {layer: torch.where(chosen[:, layer], alpha, 1.0) for layer in self.layers}
        self.prompt.remember()

    def edit(self, layer: int, z: Float[Tensor, "batch pos head d_head"]) -> Tensor | None:
        if self.selection is not None:
            return self.selection(layer, z)
        if layer not in self.layers:
            return None
        factors = self.factors[layer].to(z.device, z.dtype)  # [batch, head]
        return z * factors[:, None, :, None]
