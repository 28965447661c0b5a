"""shapes-llava: a LLaVA whose language model is the default SmolLM2-135M-Instruct, frozen.

`load_shapes_llava()` (or `load_model("shapes-llava")`, which it registers) assembles a standard
`LlavaForConditionalGeneration` at load time: the language model's weights come from
`load_model()` unchanged (so its heads and sinks are the default model's), and a small
vision tower and projector trained by `python -m probes.organisms.shapes.train` come from
`data/shapes/tower.safetensors` (about 6 MB). Nothing is downloaded.

Vision tower: a CLIP vision encoder from scratch, 64x64 images in 16x16 patches, 3 layers of
width 128 (`TOWER`). As in LLaVA-1.5 its CLS feature is dropped ("default" strategy), so an
image is 16 tokens, which the two-layer GELU projector maps to the LM's width (576).
Image token: the tokenizer's `<empty_output>` (id 16), a StarCoder-era special token that
the chat model never uses, so the vocabulary and the embedding matrix stay as they are.

Prompt format (the instruct model's chat markup without the system turn, image first):
`<|im_start|>user\\n<empty_output>\\n{question}<|im_end|>\\n<|im_start|>assistant\\n`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import init_empty_weights
from safetensors.torch import load_file
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from interp.errors import InputError, UnsupportedModelError
from interp.models import Model, load_config, load_model, register_builder
from interp.placement import Placement
from interp.prompts import DATA_DIR
from probes.organisms.shapes.scenes import IMAGE_SIZE

SPEC = "shapes-llava"
WEIGHTS = DATA_DIR / "shapes" / "tower.safetensors"
IMAGE_TOKEN = "<empty_output>"
PATCH = 16
TOWER = {
    "hidden_size": 128,
    "intermediate_size": 512,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "image_size": IMAGE_SIZE,
    "patch_size": PATCH,
    "projection_dim": 128,
}
# Trainable parts, by their key prefix in the assembled model's state dict.
TOWER_PREFIXES = ("model.vision_tower.", "model.multi_modal_projector.")
CAPTION_QUESTION = "Describe the image."
CAPTION_TOKENS = 40  # the generation budget of a caption
# POPE answers, with the leading space `interp.tasks` joins a choice with, so scoring the
# choices "Yes"/"No" there reads the very tokens the model was trained to answer with.
ANSWERS = {True: " Yes", False: " No"}


def prompt(question: str) -> str:
    """The user turn with the image placeholder, then the assistant's turn opening."""
    return f"<|im_start|>user\n{IMAGE_TOKEN}\n{question}<|im_end|>\n<|im_start|>assistant\n"


def follow_up(question: str) -> str:
    """A later user turn (no image) in a multi-turn conversation."""
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def load_shapes_llava(
    weights: Path = WEIGHTS, *, device: str | torch.device | None = None
) -> Model:
    """The trained shapes-llava: the default LM plus the shipped tower and projector.

    Raises:
        UnsupportedModelError: the weights file is missing (train it with
            `python -m probes.organisms.shapes.train`).
    """
    if not Path(weights).is_file():
        raise UnsupportedModelError(
            f"No shapes-llava weights at {weights}: train them with"
            " python -m probes.organisms.shapes.train."
        )
    try:
        tower = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error type on bad bytes
        raise UnsupportedModelError(
            f"Cannot read the shapes-llava weights {weights}: truncated or not safetensors"
            f" ({type(exc).__name__})."
        ) from exc
    model = assemble(load_model(device=device), tower)
    model.spec = SPEC
    return model


def _build(placement: Placement, dtype: torch.dtype | None) -> Model:
    """`load_model("shapes-llava")`: on one device, cast to `dtype` once assembled."""
    if placement.device_map is not None:
        raise InputError(f"{SPEC} loads on one device: pass device=, not device_map=.")
    model = load_shapes_llava(device=placement.device)
    if dtype is not None:
        model.hf.to(dtype)
    return model


def _language_model_config() -> PretrainedConfig:
    """Its language model's config, the default model's: what memory plans read."""
    return load_config(None)


# The loader imports this module the first time it is asked for SPEC (interp.models).
register_builder(SPEC, _build, config=_language_model_config, takes_images=True)


def assemble(lm: Model, tower_state: dict[str, torch.Tensor]) -> Model:
    """A LLaVA from a loaded text model and a tower/projector state dict (keys `TOWER_PREFIXES`).

    The language model's tensors are reused, not copied: `lm` must not be used afterwards.
    """
    tokenizer = lm.tokenizer
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if len(tokenizer) != lm.hf.config.vocab_size:
        raise UnsupportedModelError(
            f"{IMAGE_TOKEN!r} is not in {lm.spec}'s vocabulary: shapes-llava needs"
            " SmolLM2's tokenizer."
        )
    config = _config(lm, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    # Parameters on the meta device (buffers real), then the weights are assigned: no random
    # init of the 135M language model that is overwritten anyway.
    with init_empty_weights():
        hf = LlavaForConditionalGeneration(config)
    state = {_lm_key(key): value for key, value in lm.hf.state_dict().items()}
    state |= tower_state
    hf.load_state_dict(state, strict=True, assign=True)
    hf.tie_weights()
    hf.to(lm.device)
    model = Model.from_hf(hf, processor=_processor(tokenizer), spec=SPEC)
    model.weights_hash = f"{lm.weights_hash}+{model.weights_hash}"
    return model


def init_tower(lm: Model, seed: int) -> dict[str, torch.Tensor]:
    """A freshly initialised tower and projector state dict (training starts here)."""
    config = _config(lm, 0)
    torch.manual_seed(seed)
    tower = CLIPVisionModel(config.vision_config)
    projector = LlavaMultiModalProjector(config)
    state = {f"model.vision_tower.{k}": v for k, v in tower.state_dict().items()}
    state |= {f"model.multi_modal_projector.{k}": v for k, v in projector.state_dict().items()}
    return state


def tower_state(hf: LlavaForConditionalGeneration) -> dict[str, torch.Tensor]:
    """The tower and projector part of an assembled model's state dict (what is shipped)."""
    return {
        k: v.detach().contiguous()
        for k, v in hf.state_dict().items()
        if k.startswith(TOWER_PREFIXES)
    }


def _config(lm: Model, image_token_id: int) -> LlavaConfig:
    return LlavaConfig(
        vision_config=CLIPVisionConfig(**TOWER),
        text_config=lm.hf.config,
        image_token_id=image_token_id,
        image_seq_length=(IMAGE_SIZE // PATCH) ** 2,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )


def _lm_key(key: str) -> str:
    """A LlamaForCausalLM key as LLaVA names it (the LM body sits under model.language_model)."""
    return (
        key if key.startswith("lm_head.") else "model.language_model." + key.removeprefix("model.")
    )


def _processor(tokenizer: PreTrainedTokenizerBase) -> LlavaProcessor:
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE}, crop_size=size)
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token=IMAGE_TOKEN,
    )
