"""Vision-language heads: how much attention each head puts on the image, and VHD.

Image attention share (the image-centric test of VAR, Kang et al., ICLR 2025, arXiv
2503.03321; code seilk/VisAttnSink): for head h of layer l and query row i,
vis_i = sum_{j in I_vis} A_ij, the post-softmax attention row i puts on the image tokens
I_vis of its prompt. The image tokens of each row are found from its expanded input ids
(`Model.prepare`, `ModelInputs.kinds`), so rows of a left-padded batch each have their own
span. Per (prompt, layer, head) the table reports the mean of vis_i over the scored query
rows: by default the text rows after the image's end (VAR's scope: text queries that can
see the whole image), or only the last row (`queries="last"`, the position that predicts
the next token).
The non-sink visual share (VAR's image-centric test) is r_i = sum_{j in I_vis, not a sink}
A_ij / vis_i, with the sinks of layer l the tokens whose residual entering l has phi >= tau
(`probes.visual_sinks`); `nonsink_share` is its mean over the scored rows with vis_i > 0.

Vision-aware head divergence (VHD; He et al., ACL 2025, arXiv 2412.13949): per head, the
distance between its output with and without the prompt's image tokens at the last
position, with the paper's outlier filter (`vision_head_divergence`; computed by
`interp.interventions.vhr.divergence`, which VHR's selection shares). Cost: one forward of
twice the batch; memory [batch, layer, head].

Memory (image attention): one [batch, head] accumulator per layer; explicit attention is
computed one layer and one block of query rows at a time (interp.explicit_attention), never
all layers' [query, key] patterns. Cost: one forward of the base model per batch, without
the LM head.

Method notes: docs/methods.md §10.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool
from PIL import Image
from torch import Tensor

from interp.config import Config, check_range
from interp.errors import InputError
from interp.hooks import AttentionRows, attention_hooks, residual_hooks
from interp.inputs import ModelInputs, RowImages, TokenKind
from interp.interventions.var import check_sink_dims, sink_ratio
from interp.interventions.vhr import divergence
from interp.models import Model
from interp.prompts import as_texts
from interp.results import HeadScores, Provenance, TokenScores, hash_inputs, head_frame

ANALYZER = "image_attention"
VHD_ANALYZER = "vision_head_divergence"
TableT = TypeVar("TableT", HeadScores, TokenScores)


@dataclass(frozen=True, kw_only=True)
class ImageAttentionConfig(Config):
    """Parameters of the image-attention analyzer.

    Attributes:
        queries: which query rows are averaged: "after_image" (VAR's scope: every text
            row after the image's last token) or "last" (the last row only).
        tau: phi threshold of a sink token, for the non-sink share r_i (VAR: 20).
        sink_dims: VAR's D_sink for phi; None takes every dimension.
        batch_size: prompts per forward (left-padded together).
    """

    queries: Literal["after_image", "last"] = "after_image"
    tau: float = 20.0
    sink_dims: tuple[int, ...] | None = None
    batch_size: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "batch_size", 1)
        check_range(self, "tau", 0.0, strict_low=True)
        check_sink_dims(self)


def scored_queries(inputs: ModelInputs, queries: str) -> Bool[Tensor, "batch pos"]:
    """The query rows each prompt averages over: text after its image's end, or its last row.

    Raises:
        InputError: a prompt without an image, or with no text after its image.
    """
    inputs.require_images("Image attention")
    if queries == "last":
        chosen = torch.zeros_like(inputs.kinds, dtype=torch.bool)
        chosen[:, -1] = True
        return chosen
    positions = torch.arange(inputs.kinds.shape[1], device=inputs.kinds.device)
    last_image = torch.where(inputs.image_mask, positions, -1).amax(-1, keepdim=True)
    chosen = (positions > last_image) & (inputs.kinds == TokenKind.TEXT)
    empty = (~chosen.any(-1)).nonzero().flatten().tolist()
    if empty:
        raise InputError(
            f"Prompt {empty[0]} has no text after its image: put the question after the image,"
            " or score the last row with queries='last'."
        )
    return chosen


class _ImageShare:
    """Attention hook summing vis_i and r_i over the chosen query rows, per layer and head.

    The sinks of each layer come from its residual (`find_sinks`, a residual hook that
    runs before the layer's attention).
    """

    def __init__(self, config: ImageAttentionConfig, inputs: ModelInputs, chosen: Tensor) -> None:
        self.config = config
        self.image = inputs.image_mask  # [batch, key]
        self.real = inputs.kinds != TokenKind.PADDING
        self.chosen = chosen.float()  # [batch, query position]
        self.sinks: Tensor | None = None  # [batch, key] of the layer being run
        self.sums: dict[str, dict[int, Tensor]] = {"vis": {}, "nonsink": {}, "rows": {}}

    def find_sinks(self, layer: int, x: Tensor) -> None:
        phi = sink_ratio(x.detach(), self.config.sink_dims)[0]
        self.sinks = (phi >= self.config.tau) & self.real.to(phi.device)

    def wants(self, layer: int, n_queries: int) -> bool:
        return True

    def __call__(self, rows: AttentionRows) -> None:
        assert self.sinks is not None  # find_sinks ran on this layer's residual
        n_keys = rows.probs.shape[-1]  # the block's keys: a prefix of the key axis
        device = rows.probs.device
        image = self.image[:, None, None, :n_keys].to(device)
        nonsink_keys = image & ~self.sinks[:, None, None, :n_keys].to(device)
        vis = (rows.probs * image).sum(-1)  # [batch, head, query]
        nonsink = (rows.probs * nonsink_keys).sum(-1)
        chosen = self.chosen[:, rows.query_positions].to(device)[:, None, :]  # [batch, 1, query]
        # r_i is undefined where a row puts nothing on the image: those rows are left out.
        share = torch.where(vis > 0, nonsink / vis.clamp_min(torch.finfo(vis.dtype).tiny), 0.0)
        blocks = {
            "vis": (vis * chosen).sum(-1),  # [batch, head]
            "nonsink": (share * chosen).sum(-1),
            "rows": ((vis > 0) * chosen).sum(-1),
        }
        for name, block in blocks.items():
            total = self.sums[name].get(rows.layer)
            self.sums[name][rows.layer] = block if total is None else total + block


def image_attention(
    model: Model,
    prompts: str | Sequence[str],
    images: RowImages | Sequence[RowImages],
    config: ImageAttentionConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> HeadScores:
    """Each head's share of attention on the image tokens, per prompt.

    Args:
        model: a vision-language model with its processor.
        prompts: one text or a list; images go in front of a text without a placeholder.
        images: as `Model.prepare` takes them: for one text its image(s), for a list one
            entry per text. Every prompt needs an image.
        config: which query rows to average, batch size.
        progress: called as progress(done, total) after each batch.

    Returns:
        `HeadScores` with one row per (layer, head, example): `score` the mean image share
        of the scored rows, `nonsink_share` the mean r_i over those with vis_i > 0 (NaN if
        none), `n_queries` their number, `n_image_tokens` the prompt's.

    Raises:
        InputError: a prompt without an image, or with no text after it; images for a
            text-only model.

    Example:
        >>> from interp.tiny_models import tiny_llava
        >>> import numpy as np
        >>> scores = image_attention(tiny_llava(), "what is it?", np.zeros((32, 32, 3), np.uint8))
        >>> scores.data[["label", "score"]].shape
        (12, 2)
    """
    config = config or ImageAttentionConfig()

    def score(inputs: ModelInputs, first: int) -> list[pd.DataFrame]:
        return _score_batch(model, inputs, config, first_example=first)

    return run_batches(
        model, prompts, images, config, config.batch_size, ANALYZER, score, progress, HeadScores
    )


def run_batches(
    model: Model,
    prompts: str | Sequence[str],
    images: RowImages | Sequence[RowImages],
    config: Config,
    batch_size: int,
    analyzer: str,
    score: Callable[[ModelInputs, int], list[pd.DataFrame]],
    progress: Callable[[int, int], None] | None,
    table: type[TableT],
) -> TableT:
    """Prepare the prompts in batches, score each (frames per prompt), add provenance.

    Returns a `table` (HeadScores, TokenScores) of the frames, with the run's provenance.
    """
    texts = as_texts(prompts)
    if not texts:
        raise InputError(f"No prompts given: {analyzer} needs at least one.")
    entries = [images] if isinstance(prompts, str) else list(images)  # type: ignore[arg-type]
    if len(entries) != len(texts):
        raise InputError(
            f"Got {len(texts)} prompts and {len(entries)} image entries: give one per prompt."
        )
    frames = []
    starts = range(0, len(texts), batch_size)
    for done, start in enumerate(starts, 1):
        stop = start + batch_size
        frames.extend(score(model.prepare(texts[start:stop], entries[start:stop]), start))
        if progress:
            progress(done, len(starts))
    provenance = Provenance(
        **model.provenance_fields(),
        analyzer=analyzer,
        config=config.to_dict(),
        inputs_hash=hash_inputs({"prompts": texts, "images": _describe(entries)}),
        n_inputs=len(texts),
    )
    return table(pd.concat(frames, ignore_index=True), provenance)


def _score_batch(
    model: Model, inputs: ModelInputs, config: ImageAttentionConfig, first_example: int
) -> list[pd.DataFrame]:
    chosen = scored_queries(inputs, config.queries)
    share = _ImageShare(config, inputs, chosen)
    with (
        torch.no_grad(),
        residual_hooks(model.hf, share.find_sinks),
        attention_hooks(model.hf, share),
    ):
        model.hf.base_model(**inputs, use_cache=False)  # no LM head: the score needs no logits
    sums = {  # [layer, batch, head]
        name: torch.stack([by_layer[layer] for layer in sorted(by_layer)]).float().cpu()
        for name, by_layer in share.sums.items()
    }
    n_queries = chosen.sum(-1).cpu()
    frames = []
    for row in range(len(n_queries)):
        mean = (sums["vis"][:, row] / n_queries[row]).numpy()
        rows_seen = sums["rows"][:, row]
        nonsink = torch.where(rows_seen > 0, sums["nonsink"][:, row] / rows_seen, torch.nan)
        frame = head_frame({"score": mean, "nonsink_share": nonsink.numpy()})
        frame.insert(3, "example", first_example + row)
        frame["n_queries"] = int(n_queries[row])
        frame["n_image_tokens"] = inputs.n_image_tokens[row]
        frames.append(frame)
    return frames


@dataclass(frozen=True, kw_only=True)
class VhdConfig(Config):
    """Parameters of the VHD analyzer (He et al. 2025).

    Attributes:
        outlier_filter: zero the VHD of heads whose VHD and text activation are both above
            their layer's mean + std (paper: on).
        batch_size: prompts per forward (each runs with its no-image branch: twice this).
    """

    outlier_filter: bool = True
    batch_size: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "batch_size", 1)


def vision_head_divergence(
    model: Model,
    prompts: str | Sequence[str],
    images: RowImages | Sequence[RowImages],
    config: VhdConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> HeadScores:
    """Each head's vision-aware head divergence (VHD) at the last position, per prompt.

    VHD = ||z(prompt) - z(prompt without its image tokens)||_2 of the head's output before
    the output projection, the two run as a left-padded batch of two
    (`interp.interventions.vhr.divergence`).

    Args:
        model: a vision-language model with its processor.
        prompts: one text or a list; the last token must be text (after the image).
        images: as `Model.prepare` takes them; every prompt needs an image.
        config: outlier filter, batch size.
        progress: called as progress(done, total) after each batch.

    Returns:
        `HeadScores`, one row per (layer, head, example): `score` the VHD after the outlier
        filter, `vhd` before it, `text_activation` ||z(no image)||^2, `chosen` whether the
        head is above its layer's median score (VHR's choice), `n_image_tokens`.

    Raises:
        InputError: a prompt without an image, or ending with its image.

    Example:
        >>> from interp.tiny_models import tiny_llava
        >>> import numpy as np
        >>> image = np.zeros((32, 32, 3), np.uint8)
        >>> scores = vision_head_divergence(tiny_llava(), "what is it?", image)
        >>> scores.data[["label", "score", "chosen"]].shape
        (12, 3)
    """
    config = config or VhdConfig()

    def score(inputs: ModelInputs, first: int) -> list[pd.DataFrame]:
        result = divergence(model, inputs, outlier_filter=config.outlier_filter)
        frames = []
        for row in range(result.vhd.shape[0]):
            frame = head_frame(
                {
                    "score": result.score[row].numpy(),
                    "vhd": result.vhd[row].numpy(),
                    "text_activation": result.text_activation[row].numpy(),
                    "chosen": result.chosen[row].numpy(),
                }
            )
            frame.insert(3, "example", first + row)
            frame["n_image_tokens"] = inputs.n_image_tokens[row]
            frames.append(frame)
        return frames

    return run_batches(
        model, prompts, images, config, config.batch_size, VHD_ANALYZER, score, progress, HeadScores
    )


def _describe(entries: list) -> list:
    """The images as hashable data: paths as given, pixels by their SHA-256."""

    def one(image: object) -> object:
        if isinstance(image, list | tuple):
            return [one(i) for i in image]
        if isinstance(image, np.ndarray):
            return [list(image.shape), str(image.dtype), _sha(image.tobytes())]
        if isinstance(image, Image.Image):
            return [list(image.size), image.mode, _sha(image.tobytes())]
        return None if image is None else str(image)

    return [one(entry) for entry in entries]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
