"""Model inputs: texts with optional images, as model kwargs plus a per-token kind.

`Model.prepare(texts, images)` returns a `ModelInputs`: the keyword arguments the HF
model's forward and `generate` take (`input_ids`, `attention_mask`, and for a
vision-language model (VLM) its pixel tensors: `pixel_values`, `image_sizes`,
`pixel_attention_mask`, `image_grid_thw`, ...), left-padded like `interp.encoding`, and a
[batch, pos] tensor saying what each position holds (`TokenKind`: text, image, padding).
Analyzers pass `**inputs` to the model instead of bare ids, and read image positions from
`inputs.kinds`, which come from the input ids *after* the processor expanded each image
placeholder into its image tokens (`input_ids == image_token_id`), so every row has its
own image span under left padding and for processors whose token count depends on the
image (LLaVA-NeXT tiles, Qwen2.5-VL's dynamic resolution, Idefics3 splitting).

Images are PIL images, paths of image files, or numpy arrays ([height, width] or
[height, width, channels], uint8, or float in [0, 1]). A text with no image placeholder
gets its images' placeholders put in front of it; a text that has placeholders must have
one per image. Memory: the kwargs plus one [batch, pos] int8 tensor.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import torch
from jaxtyping import Bool, Int
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from interp.encoding import Encoding
from interp.errors import InputError, UnsupportedModelError
from interp.image_layouts import image_placeholder, image_token_id, numbers_own_positions
from interp.prompts import as_texts

if TYPE_CHECKING:
    from interp.models import Model

ImageLike: TypeAlias = "Image.Image | str | os.PathLike | np.ndarray"
# Per text: no image, one image, or several (in placeholder order).
RowImages: TypeAlias = "ImageLike | Sequence[ImageLike] | None"

# The kwargs `ModelInputs.extended` rebuilds: everything else is per image.
PER_POSITION = frozenset({"input_ids", "attention_mask", "position_ids"})


class TokenKind(IntEnum):
    """What a position of a prepared batch holds."""

    TEXT = 0
    IMAGE = 1
    PADDING = 2


@dataclass(frozen=True, eq=False)
class ModelInputs(Mapping[str, Tensor]):
    """A prepared batch: model kwargs (a mapping, so `model.hf(**inputs)` works) and kinds.

    Attributes:
        kwargs: what the model's forward takes; padding is on the left.
        kinds: [batch, pos] `TokenKind` values (int8) of every position.

    Example:
        >>> from interp.tiny_models import tiny_llava
        >>> import numpy as np
        >>> model = tiny_llava()
        >>> inputs = model.prepare(["a cat", "hi"], [np.zeros((20, 30, 3), np.uint8), None])
        >>> inputs.image_span(0), inputs.image_span(1)
        ((0, 16), None)
        >>> model.hf(**inputs).logits.shape[:2]
        torch.Size([2, 22])
    """

    kwargs: Mapping[str, Tensor]
    kinds: Int[Tensor, "batch pos"]

    @classmethod
    def from_encoding(cls, encoding: Encoding) -> ModelInputs:
        """Text-only inputs: the encoding's kwargs, text where the mask is 1, else padding."""
        kinds = torch.where(encoding.attention_mask.bool(), TokenKind.TEXT, TokenKind.PADDING)
        return cls(dict(encoding), kinds.to(torch.int8))

    @property
    def input_ids(self) -> Int[Tensor, "batch pos"]:
        return self.kwargs["input_ids"]

    @property
    def attention_mask(self) -> Int[Tensor, "batch pos"]:
        return self.kwargs["attention_mask"]

    @property
    def image_mask(self) -> Bool[Tensor, "batch pos"]:
        """True at image tokens."""
        return self.kinds == TokenKind.IMAGE

    @property
    def lengths(self) -> list[int]:
        """Real (unpadded) tokens per row, image tokens included."""
        return (self.kinds != TokenKind.PADDING).sum(-1).tolist()

    @property
    def n_image_tokens(self) -> list[int]:
        """Image tokens per row."""
        return self.image_mask.sum(-1).tolist()

    def image_runs(self, row: int = 0) -> list[tuple[int, int]]:
        """Each run of consecutive image tokens in a row, as [start, stop) padded positions.

        One run per image for LLaVA-1.5/NeXT and Qwen2.5-VL (images whose placeholders
        touch in the text merge into one run); Idefics3 has one run per image, or per tile
        with image splitting, separated by its tags.
        """
        flags = self.image_mask[row].to(torch.int8)
        edges = torch.diff(flags, prepend=flags.new_zeros(1), append=flags.new_zeros(1))
        starts = (edges == 1).nonzero().flatten().tolist()
        stops = (edges == -1).nonzero().flatten().tolist()
        return list(zip(starts, stops, strict=True))

    def image_span(self, row: int = 0) -> tuple[int, int] | None:
        """[first image token, last image token + 1) of a row, or None if it has no image."""
        runs = self.image_runs(row)
        return (runs[0][0], runs[-1][1]) if runs else None

    def require_images(self, what: str = "This analyzer") -> None:
        """Raise InputError unless every row has at least one image token."""
        missing = [row for row, n in enumerate(self.n_image_tokens) if n == 0]
        if missing:
            raise InputError(
                f"{what} needs an image with every prompt; prompt {missing[0]} has none"
                f" ({len(missing)} of {len(self.n_image_tokens)} without). Pass images=."
            )

    def extended(self, tails: Sequence[Sequence[int]], pad_id: int) -> ModelInputs:
        """Each row with its own text token ids appended, re-padded on the left.

        For scoring continuations (a choice after a prompt with its image): the processor
        expands the images once, and the appended tokens are text. Pixel kwargs are per
        image, so they stay as they are; ids, mask, kinds and positions are rebuilt.

        Args:
            tails: one list of token ids per row (may be empty).
            pad_id: the id written on padding (masked out).

        Raises:
            InputError: not one tail per row.
            UnsupportedModelError: another per-position kwarg, which this cannot extend.
        """
        ids, kinds = self.input_ids, self.kinds
        if len(tails) != ids.shape[0]:
            raise InputError(f"Got {len(tails)} tails for {ids.shape[0]} rows: give one per row.")
        other = [
            key
            for key, value in self.kwargs.items()
            if key not in PER_POSITION and tuple(value.shape[:2]) == tuple(ids.shape)
        ]
        if other:
            raise UnsupportedModelError(
                f"Cannot append tokens to inputs with the per-position kwarg {other[0]!r}."
            )
        real = kinds != TokenKind.PADDING
        rows = [
            (ids[row][real[row]].tolist() + list(tail), kinds[row][real[row]].tolist(), len(tail))
            for row, tail in enumerate(tails)
        ]
        width = max(len(row_ids) for row_ids, _, _ in rows)
        new_ids = torch.full((len(rows), width), pad_id, dtype=ids.dtype)
        new_kinds = torch.full((len(rows), width), int(TokenKind.PADDING), dtype=kinds.dtype)
        for row, (row_ids, row_kinds, n_tail) in enumerate(rows):
            new_ids[row, width - len(row_ids) :] = torch.tensor(row_ids, dtype=ids.dtype)
            new_kinds[row, width - len(row_ids) :] = torch.tensor(
                row_kinds + [int(TokenKind.TEXT)] * n_tail, dtype=kinds.dtype
            )
        mask = (new_kinds != TokenKind.PADDING).to(self.attention_mask.dtype)
        kwargs = {**self.kwargs, "input_ids": new_ids.to(ids.device)}
        kwargs["attention_mask"] = mask.to(self.attention_mask.device)
        if "position_ids" in self.kwargs:
            kwargs["position_ids"] = (kwargs["attention_mask"].cumsum(-1) - 1).clamp_min(0)
        return ModelInputs(kwargs, new_kinds.to(kinds.device))

    def __getitem__(self, key: str) -> Tensor:
        return self.kwargs[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.kwargs)

    def __len__(self) -> int:
        return len(self.kwargs)


def prepare(model: Model, texts: str | Sequence[str], images: RowImages = None) -> ModelInputs:
    """Texts with optional images as a left-padded batch of model kwargs plus token kinds.

    Without images it is `model.encode` plus kinds; with images the model's processor
    expands each image placeholder into its image tokens, and a text with no placeholder
    gets its images' placeholders in front. `Model.prepare` calls this.

    Args:
        model: a `Model`; images need a vision-language model wrapped with its processor.
        texts: one text, or a list of texts (one batch row each).
        images: for one text, None, an image or a list of images; for a list of texts, a
            list with one such entry per text. An image is a PIL image, a path or a numpy
            array.

    Raises:
        InputError: images for a text-only model (or a VLM wrapped without its processor);
            a missing or unreadable image file; placeholders that do not match the images;
            image tokens that do not match the processor's count; a row longer than the
            context.

    Example:
        >>> from interp.tiny_models import tiny_idefics3
        >>> model = tiny_idefics3()
        >>> model.prepare("a cat", np.zeros((20, 30, 3), np.uint8)).n_image_tokens
        [4]
    """
    items = as_texts(texts)
    if not items:
        raise InputError("Nothing to prepare: give a string or a list of strings.")
    rows = row_images(items, images, single_text=isinstance(texts, str))
    if model.processor is None:
        if any(rows):
            raise InputError(
                f"{model.spec} was wrapped without its processor: pass"
                " Model.from_hf(hf, processor=processor) to give it images."
                if is_vision_model(model.hf)
                else f"{model.spec} is a text-only model: it takes no images."
            )
        return ModelInputs.from_encoding(model.encode(items))
    config = model.hf.config
    token_id = image_token_id(config)
    if token_id is None:
        raise UnsupportedModelError(
            f"{type(model.hf).__name__}'s config names no image_token_id: cannot find its"
            " image tokens."
        )
    inputs = prepare_images(
        model.processor,
        config,
        token_id,
        items,
        rows,
        model.device,
        model.hf.dtype,
    )
    for index, length in enumerate(inputs.lengths):
        model.check_length(length, what="prompt" if len(items) == 1 else f"prompt {index}")
    return inputs


def is_vision_model(hf: Any) -> bool:
    """Whether `hf` takes images: its config has a vision tower's config."""
    return getattr(hf.config, "vision_config", None) is not None


def load_image(image: Any) -> Image.Image:
    """An RGB PIL image from a PIL image, an image file's path, or a numpy array.

    Raises:
        InputError: a missing or unreadable file, an array of the wrong shape or range,
            or another type.
    """
    if isinstance(image, Image.Image):
        _check_pixels(image.size, "An image")
        return image.convert("RGB")
    if isinstance(image, str | os.PathLike):
        return _image_file(Path(image).expanduser())
    if isinstance(image, np.ndarray):
        return _array_image(image)
    raise InputError(
        f"An image must be a PIL image, a path or a numpy array, not {type(image).__name__}."
    )


# Largest image taken, in pixels (8192 x 8192): below PIL's decompression-bomb warning, and
# far above what any vision tower reads (they resize to at most a few thousand pixels a side).
MAX_IMAGE_PIXELS = 8192 * 8192


def _check_pixels(size: tuple[int, int], what: str) -> None:
    """Refuse an image of no pixels, or of more than MAX_IMAGE_PIXELS, before decoding it."""
    width, height = size
    if width < 1 or height < 1:
        raise InputError(f"{what} has no pixels ({width}x{height}).")
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(
            f"{what} is {width}x{height} pixels, more than the limit of {MAX_IMAGE_PIXELS}"
            " (8192x8192); shrink it first (vision towers resize far below this anyway)."
        )


def _image_file(path: Path) -> Image.Image:
    """An image file, its size read from the header and checked before its pixels are."""
    if not path.is_file():
        raise InputError(f"No image file at {path}.")
    try:
        with warnings.catch_warnings():  # our own limit, below PIL's, says what to do
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                _check_pixels(opened.size, f"The image file {path}")
                return opened.convert("RGB")
    except InputError:
        raise
    except Image.DecompressionBombError as exc:
        raise InputError(
            f"The image file {path} claims more than {MAX_IMAGE_PIXELS} pixels (the limit is"
            " 8192x8192): it is refused unread."
        ) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"Cannot read the image file {path}: {detail}") from exc


def _array_image(array: np.ndarray) -> Image.Image:
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (1, 3, 4)):
        raise InputError(
            f"An image array must be [height, width] or [height, width, 1|3|4], not {array.shape}."
        )
    _check_pixels((array.shape[1], array.shape[0]), f"An image array of shape {array.shape}")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise InputError(
                f"An image array must be uint8, or float in [0, 1]; got {array.dtype}."
            )
        if not np.isfinite(array).all():
            raise InputError("An image array holds NaN or infinite values.")
        if array.min() < 0 or array.max() > 1:
            raise InputError(
                f"An image array must be uint8, or float in [0, 1]; got {array.dtype} with"
                f" values in [{array.min()}, {array.max()}]."
            )
        array = np.round(array * 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return Image.fromarray(array).convert("RGB")


def row_images(texts: list[str], images: Any, single_text: bool) -> list[list[Image.Image]]:
    """Each text's images, loaded: `images` is one text's entry, or a list of one per text."""
    if images is None:
        return [[] for _ in texts]
    if single_text:
        entries = [images]
    elif isinstance(images, list | tuple):
        entries = list(images)
    else:
        raise InputError(
            "With a list of prompts, give images as a list with one entry per prompt"
            " (None, an image, or a list of images)."
        )
    if len(entries) != len(texts):
        raise InputError(
            f"Got {len(texts)} prompts and {len(entries)} image entries: give one entry per"
            " prompt (None, an image, or a list of images)."
        )
    return [[load_image(i) for i in _as_list(entry)] for entry in entries]


def _as_list(entry: Any) -> list[Any]:
    if entry is None:
        return []
    if isinstance(entry, list | tuple):
        return list(entry)
    return [entry]


def prepare_images(
    processor: Any,
    config: Any,
    token_id: int,
    texts: list[str],
    images: list[list[Image.Image]],
    device: torch.device,
    dtype: torch.dtype,
) -> ModelInputs:
    """Run a VLM processor on a left-padded batch and mark each position's kind.

    Raises:
        InputError: a text's placeholders do not match its images, or the image tokens in
            a row's ids differ from the count the processor expanded its images into.
    """
    token = processor.image_token
    placeholder = image_placeholder(config, token)
    prompts = [
        _with_placeholders(index, text, len(row), token, placeholder)
        for index, (text, row) in enumerate(zip(texts, images, strict=True))
    ]
    any_image = any(images)
    try:
        batch = processor(  # images nested per row: Gemma 3's and PaliGemma's processors need it
            text=prompts,
            images=images if any_image else None,
            padding=True,
            padding_side="left",
            return_tensors="pt",
            return_text_replacement_offsets=any_image,
        )
    except ValueError as exc:  # the processor's own checks (token counts, truncation)
        detail = str(exc).strip().split("\n")[0] or type(exc).__name__
        raise InputError(f"The processor refused the inputs: {detail}") from exc
    offsets = batch.pop("text_replacement_offsets", [[] for _ in prompts])
    batch.pop("labels", None)  # PaliGemma's training targets: the forward would add a loss
    ids = batch["input_ids"]
    is_image = ids == token_id
    # The token the image's features fill, which differs from the placeholder where the
    # expansion wraps them in other tokens (Gemma 3: <start_of_image> gives soft tokens).
    filled = getattr(processor.tokenizer, "image_token", None) or token
    for row, replaced in enumerate(offsets):
        expected = sum(r["replacement"].count(filled) for r in replaced if r["type"] == "image")
        found = int(is_image[row].sum())
        if found != expected:
            raise InputError(
                f"Prompt {row} has {found} image tokens (id {token_id}) but the processor"
                f" expanded its images into {expected}: does the tokenizer know {filled!r} as one"
                " token, and does the model's image_token_id match the processor's?"
            )
    kinds = torch.full(ids.shape, int(TokenKind.TEXT), dtype=torch.int8)
    kinds[is_image] = TokenKind.IMAGE
    kinds[batch["attention_mask"] == 0] = TokenKind.PADDING
    if not numbers_own_positions(config):
        # As in interp.encoding: number each row's tokens as if it were alone.
        batch["position_ids"] = (batch["attention_mask"].cumsum(-1) - 1).clamp_min(0)
    # Pixels in the model's dtype (a float16 LLaVA on a GPU takes float16 pixel_values).
    kwargs = {
        key: value.to(device, dtype if value.is_floating_point() else None)
        for key, value in batch.items()
    }
    return ModelInputs(kwargs, kinds.to(device))


def _with_placeholders(index: int, text: str, n_images: int, token: str, placeholder: str) -> str:
    """The text with one placeholder per image: put in front, a line each, if it has none."""
    found = text.count(token)
    if found == 0 and n_images:
        return "".join(placeholder + "\n" for _ in range(n_images)) + text
    if found != n_images:
        raise InputError(
            f"Prompt {index} has {found} image placeholder(s) {token!r} but {n_images}"
            " image(s): give one image per placeholder, or no placeholder to put the images"
            " in front."
        )
    return text
