"""The one generation driver: batched greedy or seeded sampling with the KV cache.

`generate(model, prompts, config)` decodes a list of prompts (texts, optionally through the
tokenizer's chat template, or token ids) in left-padded batches of similar length and
returns one `Generation` per prompt, in the given order: the prompt ids, the response ids
(the prompt/response boundary is `len(prompt_ids)`), the decoded text and why it stopped.

How a batch runs: the prompts minus their last token are prefilled in one forward with
the model's own (fused) kernel (`interp.prefill`; with `share_prefix`, through a prefix
tree that computes a prefix several prompts share once); the last prompt token and every
generated token then run as decode steps of one query row per batch row, so attention
hooks (`interp.hooks`) see each token that produces a response token as a single-row
step, the first one included.
A batch without padding passes neither mask nor position ids (exactly the forward of an
unbatched prompt); a padded batch passes its attention mask and per-row positions.
With `images=` (a vision-language model) each batch goes through the processor and is
prefilled whole, the first response token chosen from that forward, as `model.hf.generate`
does (see `generate`).

Stopping is per row: a row finishes at the end-of-sequence token (not kept in its
response), when its decoded response contains a stop string (the response keeps the token
that completed it, so `text` is exactly the decoded `response_ids`), or after
`max_new_tokens`. A finished row stops growing; it is fed padding until its batch ends
(`decode(drop_finished=True)`: it leaves the batch, for callers whose hooks do not index
batch rows).
A prompt that does not fit the context with its budget is a one-line error (nothing is
truncated).

Sampling (temperature > 0) draws each prompt's tokens from its own random stream, seeded by
(config.seed, prompt index), by inverse-CDF sampling over the top-p nucleus, so a prompt's
sample does not depend on which prompts share its batch.

Memory: the KV cache of one batch, [layer, batch, kv_head, pos, d_head] keys and values,
plus one step's logits [batch, vocab]; the prefill keeps only the last position's logits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.config import Config, check_range
from interp.errors import ConfigError, InputError
from interp.inputs import RowImages
from interp.kv_cache import cache_kwargs
from interp.models import Model
from interp.prefill import Prefilled, PrefixTree, default_batch_size, prefill, prefill_inputs

__all__ = [
    "Generation",
    "GenerationConfig",
    "Prefilled",
    "PrefixTree",
    "Step",
    "decode",
    "default_batch_size",
    "encode_prompts",
    "generate",
    "prefill",
    "prefill_inputs",
]

FinishReason = Literal["eos", "stop", "length"]
Prompt = str | Sequence[int] | Tensor


@dataclass(frozen=True, kw_only=True)
class GenerationConfig(Config):
    """How to decode.

    Attributes:
        max_new_tokens: generation budget per prompt.
        temperature: 0 decodes greedily (argmax, first index on ties); > 0 samples.
        top_p: nucleus mass kept when sampling (1.0 keeps every token).
        seed: seed of the sampling streams (one per prompt index).
        stop: strings that end a row once its decoded response contains one.
        stop_at_eos: end a row at the model's end-of-sequence token(s).
    """

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    stop_at_eos: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "max_new_tokens", 1)
        check_range(self, "temperature", 0.0)
        check_range(self, "top_p", 0.0, 1.0, strict_low=True)
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ConfigError(f"GenerationConfig.stop must be non-empty strings, got {self.stop}.")


@dataclass(frozen=True)
class Generation:
    """One prompt's generation.

    Attributes:
        prompt_ids: [pos] the prompt as the model saw it (after any chat template).
        response_ids: [new] the generated tokens (an ending EOS is not included).
        text: `response_ids` decoded, special tokens skipped.
        finish_reason: "eos", "stop" (a stop string) or "length" (the budget ran out).
    """

    prompt_ids: Int[Tensor, " pos"]
    response_ids: Int[Tensor, " new"]
    text: str
    finish_reason: FinishReason

    @property
    def boundary(self) -> int:
        """Index of the first response token in `token_ids`."""
        return len(self.prompt_ids)

    @property
    def token_ids(self) -> Int[Tensor, " total"]:
        """Prompt then response: the sequence whose positions hooks report."""
        return torch.cat([self.prompt_ids, self.response_ids])


@dataclass(frozen=True)
class Step:
    """One decode step of one batch, as `on_step` sees it (after the step's forward).

    Attributes:
        index: 0 for the step that produced each row's first response token.
        rows: the prompt index (in `generate`'s list) of every row of this step's forward,
            in batch order: attention hooks see these rows in this order (every batch row
            at every step, unless `decode` drops finished rows).
        tokens: [batch] the token each row chose (padding for rows finished earlier).
        kept: [batch] True where the token joins the row's response (False for finished
            rows and for an EOS that ends a row).
        logits: [batch, vocab] the logits the tokens were chosen from.
        padding: [batch] left padding of each row: key index k of a row's attention is
            position k - padding[row] of its prompt-then-response sequence, on every layer
            (attention hooks see a sliding window's dropped keys as positions none sees).
    """

    index: int
    rows: tuple[int, ...]
    tokens: Int[Tensor, " batch"]
    kept: Bool[Tensor, " batch"]
    logits: Float[Tensor, "batch vocab"]
    padding: Int[Tensor, " batch"]


def encode_prompts(
    model: Model, prompts: Prompt | Sequence[Prompt], *, chat: bool = False
) -> list[Tensor]:
    """Each prompt as [pos] token ids (texts tokenized, through the chat template if `chat`).

    Raises:
        InputError: an empty prompt, token ids with `chat`, a model without a chat
            template with `chat`, or a batch tensor instead of rows.
    """
    if isinstance(prompts, str | Tensor) or (
        isinstance(prompts, Sequence) and prompts and isinstance(prompts[0], int)
    ):
        prompts = [prompts]  # type: ignore[list-item]
    if not prompts:
        raise InputError("No prompts given: pass a text, token ids, or a list of them.")
    if chat and not getattr(model.tokenizer, "chat_template", None):
        raise InputError(f"{model.spec}'s tokenizer has no chat template; use chat=False.")
    out = []
    for index, prompt in enumerate(prompts):  # type: ignore[arg-type]
        if isinstance(prompt, str):
            if chat:
                text = _chat_text(model, prompt)
                ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
            else:
                ids = model.tokenizer(prompt)["input_ids"]
            out.append(torch.tensor(ids, dtype=torch.long))
            continue
        if chat:
            raise InputError(f"Prompt {index} is token ids; chat=True takes texts.")
        ids = torch.as_tensor(prompt, dtype=torch.long)
        if ids.ndim != 1:
            raise InputError(
                f"Prompt {index} has shape {tuple(ids.shape)}; pass each prompt as [pos] ids"
                " (a list of rows, e.g. [encoding.ids(i) for i in ...])."
            )
        out.append(ids.cpu())
    return out


@torch.no_grad()
def decode(
    model: Model,
    prefilled: Prefilled,
    config: GenerationConfig,
    on_step: Callable[[Step], None] | None = None,
    drop_finished: bool = False,
) -> list[Generation]:
    """Decode a prefilled batch to the end of its last row; grows `prefilled.cache`.

    Args:
        model: the model (hooks and interventions active around this call apply).
        prefilled: the batch, from `prefill` or `PrefixTree.prefill`.
        config: budget, sampling and stopping.
        on_step: called after every step (see `Step`).
        drop_finished: leave finished rows out of the following steps (their cache rows
            are dropped), so a batch's last steps cost what its unfinished rows cost. The
            rows of each forward, which hooks see, are then `Step.rows` of that step;
            hooks or interventions that index the batch's rows need it False.

    Returns one Generation per batch row, in batch order.
    """
    batch, cache = prefilled.batch, prefilled.cache
    n_rows, width = batch.input_ids.shape
    device = batch.input_ids.device
    eos = _eos_ids(model) if config.stop_at_eos else set()
    pad = model.tokenizer.pad_token_id or 0
    lengths = batch.lengths
    padding = torch.tensor([width - n for n in lengths], device=device)
    offsets = prefilled.position_offsets  # multimodal rotary: positions passed every step
    padded = bool((padding > 0).any()) or offsets is not None
    streams = [np.random.default_rng([config.seed, row]) for row in prefilled.rows]
    longest_stop = max((len(s) for s in config.stop), default=0)
    responses: list[list[int]] = [[] for _ in range(n_rows)]
    reasons: list[FinishReason | None] = [None] * n_rows
    live = list(range(n_rows))  # the batch rows in this step's forward
    current = batch.input_ids[:, -1:]
    mask = batch.attention_mask
    positions = torch.tensor(lengths, device=device)[:, None] - 1
    for index in range(config.max_new_tokens):
        if index == 0 and prefilled.first_logits is not None:
            logits = prefilled.first_logits
        else:
            at = positions if offsets is None else positions[None] + offsets
            extra = {"attention_mask": mask, "position_ids": at} if padded else {}
            cached = cache_kwargs(model.hf, cache)
            logits = model.hf(current, **extra, **cached, use_cache=True).logits[:, -1]
        tokens = _choose(logits, config, [streams[row] for row in live])
        chosen = tokens.tolist()  # the one host sync per step
        kept = []
        for row, token in zip(live, chosen, strict=True):
            keep = reasons[row] is None and token not in eos
            kept.append(keep)
            if reasons[row] is not None:
                continue
            if not keep:
                reasons[row] = "eos"
                continue
            responses[row].append(token)
            if longest_stop and _stopped(model, responses[row], config.stop, longest_stop):
                reasons[row] = "stop"
            elif len(responses[row]) == config.max_new_tokens:
                reasons[row] = "length"
        if on_step is not None:
            keep_mask = torch.tensor(kept, device=device)
            rows = tuple(prefilled.rows[row] for row in live)
            on_step(Step(index, rows, tokens, keep_mask, logits, padding[live]))
        if all(r is not None for r in reasons):
            break
        done = torch.tensor([reasons[row] is not None for row in live], device=device)
        if drop_finished and bool(done.any()):
            stay = (~done).nonzero()[:, 0]
            cache.batch_select_indices(stay)
            live = [live[i] for i in stay.tolist()]
            tokens, done, mask, positions = tokens[stay], done[stay], mask[stay], positions[stay]
            offsets = None if offsets is None else offsets[:, stay]
        current = torch.where(done, pad, tokens)[:, None]
        if padded:
            mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
            positions = positions + 1
    return [
        Generation(
            prompt_ids=batch.ids(row).cpu(),
            response_ids=torch.tensor(responses[row], dtype=torch.long),
            text=model.tokenizer.decode(responses[row], skip_special_tokens=True),
            finish_reason=reasons[row] or "length",
        )
        for row in range(n_rows)
    ]


def generate(
    model: Model,
    prompts: Prompt | Sequence[Prompt],
    config: GenerationConfig,
    *,
    images: Sequence[RowImages] | None = None,
    chat: bool = False,
    on_step: Callable[[Step], None] | None = None,
    batch_size: int | None = None,
    share_prefix: bool = False,
) -> list[Generation]:
    """Generate a response to every prompt, in left-padded batches of similar length.

    Args:
        model: a loaded model; hooks and interventions active around the call apply to
            every forward (prefill and decode steps).
        prompts: a text, [pos] token ids, or a list of either (texts only with `images`).
        config: budget, sampling and stopping.
        images: per prompt its image(s) or None, as `Model.prepare` takes them (a
            vision-language model). Each batch is prepared with its images and prefilled
            whole, as `model.hf.generate` does: the first response token comes from the
            prompt's forward (`interp.prefill.prefill_inputs`), so interventions that choose
            on the whole prompt (VHR's head selection, VAR's sinks) see all of it.
            `Generation.prompt_ids` are then the ids after the processor expanded each image.
            Qwen2-VL's multimodal rotary positions continue through the decode steps as
            under `generate` (each row's text position plus its offset on every axis).
        chat: wrap each text as a user message in the tokenizer's chat template.
        on_step: called after every decode step of every batch (see `Step`).
        batch_size: prompts per batch (default: `default_batch_size` for the longest).
        share_prefix: prefill through a `PrefixTree` over all the prompts, so a token
            prefix several prompts share is computed once (`interp.prefill`). The decode
            steps are the unshared run's; the cache equals it up to float rounding.
            Hooks that read prefill forwards see the tree's forwards instead. Not with
            `images`.

    Returns:
        One Generation per prompt, in the order given.

    Raises:
        InputError: a prompt is empty or, with the budget, longer than the context; images
            not one entry per prompt, with token-id prompts, or with `share_prefix`.

    Example:
        >>> from interp.tiny_models import tiny_llama
        >>> model = tiny_llama()
        >>> out = generate(model, ["abc", "hello"], GenerationConfig(max_new_tokens=4))
        >>> [len(g.response_ids) for g in out], out[0].finish_reason
        ([4, 4], 'length')
    """
    ids = encode_prompts(model, prompts, chat=chat)
    texts = None if images is None else _texts_for_images(model, prompts, images, chat)
    if texts is not None and share_prefix:
        raise InputError("share_prefix shares token prefixes of text prompts; not with images.")
    lengths = (
        [len(row) for row in ids] if texts is None else _image_prompt_lengths(model, texts, images)
    )  # type: ignore[arg-type]
    for index, n_tokens in enumerate(lengths):
        what = "prompt" if len(lengths) == 1 else f"prompt {index}"
        model.check_length(n_tokens, what=what)
        model.check_length(n_tokens + config.max_new_tokens, what=f"{what} plus max_new_tokens")
    if batch_size is None:
        batch_size = default_batch_size(model, max(lengths) + config.max_new_tokens)
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}.")
    order = sorted(range(len(ids)), key=lambda i: lengths[i])  # similar lengths together
    tree = PrefixTree(model, ids) if share_prefix else None
    results: dict[int, Generation] = {}
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        if texts is not None:
            inputs = model.prepare([texts[i] for i in rows], [images[i] for i in rows])  # type: ignore[index]
            prefilled = prefill_inputs(model, inputs, rows, whole_prompt=True)
        elif tree is not None:
            prefilled = tree.prefill([ids[i] for i in rows], rows)
        else:
            prefilled = prefill(model, [ids[i] for i in rows], rows)
        results.update(zip(rows, decode(model, prefilled, config, on_step), strict=True))
    return [results[i] for i in range(len(ids))]


def _texts_for_images(
    model: Model, prompts: Prompt | Sequence[Prompt], images: Sequence[RowImages], chat: bool
) -> list[str]:
    """The prompts as texts (through the chat template if `chat`), checked against `images`."""
    texts = [prompts] if isinstance(prompts, str) else list(prompts)  # type: ignore[arg-type]
    if not all(isinstance(text, str) for text in texts):
        raise InputError("Prompts with images must be texts (the processor places the images).")
    if isinstance(images, str) or len(images) != len(texts):
        raise InputError(
            f"Give images as a list with one entry (image, images or None) per prompt;"
            f" got {'a single value' if isinstance(images, str) else len(images)} for"
            f" {len(texts)} prompts."
        )
    return [_chat_text(model, text) if chat else text for text in texts]  # type: ignore[arg-type]


def _image_prompt_lengths(
    model: Model, texts: Sequence[str], images: Sequence[RowImages]
) -> list[int]:
    """Each prompt's length after its images are expanded (prepared alone, pixels dropped)."""
    return [model.prepare(text, row).lengths[0] for text, row in zip(texts, images, strict=True)]


def _chat_text(model: Model, text: str) -> str:
    """The text as a user message through the tokenizer's chat template, assistant turn open."""
    messages = [{"role": "user", "content": text}]
    return model.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _eos_ids(model: Model) -> set[int]:
    value = model.hf.generation_config.eos_token_id
    if value is None:
        value = model.tokenizer.eos_token_id
    return set() if value is None else {value} if isinstance(value, int) else set(value)


def _stopped(model: Model, response: list[int], stop: tuple[str, ...], longest: int) -> bool:
    """Whether the response's end holds a stop string (earlier text was checked before).

    Decodes only the last `longest + 8` tokens: every token adds at least one character
    except the few that decode to nothing, so that tail covers any newly completed string.
    """
    tail = model.tokenizer.decode(response[-(longest + 8) :])
    return any(s in tail for s in stop)


def _choose(
    logits: Float[Tensor, "batch vocab"],
    config: GenerationConfig,
    streams: list[np.random.Generator],
) -> Int[Tensor, " batch"]:
    """Greedy argmax, or one inverse-CDF draw per row from its top-p nucleus."""
    if config.temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / config.temperature, dim=-1)
    sorted_probs, order = probs.sort(-1, descending=True)
    # Keep the smallest prefix whose mass reaches top_p (the first token always).
    inside = (sorted_probs.cumsum(-1) - sorted_probs) < config.top_p
    nucleus = sorted_probs * inside
    cumulative = nucleus.cumsum(-1)
    draws = torch.tensor([s.random() for s in streams], device=logits.device)
    target = draws[:, None] * cumulative[:, -1:]
    index = (cumulative <= target).sum(-1, keepdim=True)
    index = torch.minimum(index, inside.sum(-1, keepdim=True) - 1)
    return order.gather(-1, index)[:, 0]
