"""Tiny random-init vision-language models of the families the VLM zoo test covers.

Each scales a real checkpoint's options down (32x32 images in 8x8 patches, a one-layer
vision tower, a two-layer language model of width 32): the options that shape attention
are the checkpoint's own, so the hooks meet the same masks as on the real model. The
processors are the real ones over PIL image processors (no torchvision) and the byte
tokenizer with each family's image tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import (
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3Processor,
    Gemma3TextConfig,
    GemmaConfig,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionProcessor,
    MllamaConfig,
    MllamaForConditionalGeneration,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    PaliGemmaProcessor,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2Config,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLProcessor,
    SiglipVisionConfig,
)
from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
    LlavaOnevisionImageProcessorPil,
)
from transformers.models.mllama.configuration_mllama import MllamaTextConfig, MllamaVisionConfig
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from interp.image_layouts import PATCH_MAPS
from interp.models import Model
from interp.tiny_models import byte_tokenizer

# SigLIP towers (both families), scaled: 32x32 images in 8x8 patches, 16 patches an image.
_SIGLIP = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
    image_size=32, patch_size=8,
)  # fmt: skip
_IMAGE_SIZE = {"height": 32, "width": 32}
_TEXT = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
    head_dim=8, pad_token_id=0, bos_token_id=1, eos_token_id=2,
)  # fmt: skip


def _tokenizer(**image_tokens: str) -> PreTrainedTokenizerFast:
    """The byte tokenizer with a family's image tokens as named special tokens."""
    return PreTrainedTokenizerFast(
        tokenizer_object=byte_tokenizer().backend_tokenizer,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens=image_tokens,
    )


def tiny_gemma3(seed: int = 0) -> Model:
    """Gemma-3-4B scaled: sliding (1024; 4 here) and full layers, 256 image tokens an image
    (4 here) average-pooled from the tower's patches, bidirectional attention among an
    image's tokens (the mask HF builds from `token_type_ids`)."""
    tokenizer = _tokenizer(
        boi_token="<start_of_image>", eoi_token="<end_of_image>", image_token="<image_soft_token>"
    )
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessorPil(size=_IMAGE_SIZE),
        tokenizer=tokenizer,
        image_seq_length=4,
    )
    text = Gemma3TextConfig(
        **_TEXT,
        vocab_size=len(tokenizer),
        num_key_value_heads=2,
        query_pre_attn_scalar=8,  # 4B: head_dim (256)
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"] * 2,
    )
    config = Gemma3Config(
        text_config=text,
        vision_config=SiglipVisionConfig(**_SIGLIP),
        mm_tokens_per_image=4,
        boi_token_index=tokenizer.boi_token_id,
        eoi_token_index=tokenizer.eoi_token_id,
        image_token_index=tokenizer.image_token_id,
    )
    model = _wrap(Gemma3ForConditionalGeneration, config, processor, "tiny-gemma3", seed)
    with torch.no_grad():  # initialised to zeros: every image token would be the same
        model.hf.model.multi_modal_projector.mm_input_projection_weight.normal_(std=0.5)
    return model


def tiny_paligemma(seed: int = 0) -> Model:
    """PaliGemma-3B (224px) scaled: multi-query Gemma (one KV head), one image token a tower
    patch (256; 16 here), the prompt after the image a bidirectional prefix (prefix-LM)."""
    tokenizer = _tokenizer()
    image_processor = SiglipImageProcessorPil(size=_IMAGE_SIZE)
    image_processor.image_seq_length = 16  # PaliGemmaProcessor reads it from its processor
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    text = GemmaConfig(**_TEXT, vocab_size=len(tokenizer), num_key_value_heads=1)
    config = PaliGemmaConfig(
        text_config=text.to_dict(),
        vision_config=SiglipVisionConfig(**_SIGLIP).to_dict(),
        image_token_index=processor.image_token_id,
        projection_dim=32,
        hidden_size=32,
    )
    return _wrap(PaliGemmaForConditionalGeneration, config, processor, "tiny-paligemma", seed)


class _NoVideoProcessor:
    """A processor built without its video processor, which needs torchvision (it does not
    import beside this CPU torch); images are processed as by the original."""

    def check_argument_for_proper_class(self, argument_name: str, argument: object) -> object:
        if argument_name == "video_processor" and argument is None:
            return None
        return super().check_argument_for_proper_class(argument_name, argument)  # type: ignore[misc]


class _OnevisionImagesOnly(_NoVideoProcessor, LlavaOnevisionProcessor):
    pass


class _Qwen2VLImagesOnly(_NoVideoProcessor, Qwen2VLProcessor):
    pass


class _Qwen25VLImagesOnly(_NoVideoProcessor, Qwen2_5_VLProcessor):
    pass


def tiny_llava_onevision(seed: int = 0) -> Model:
    """llava-onevision-qwen2-0.5b-ov scaled: Qwen2 language model, SigLIP tower (384px, 729
    tokens a tile; 16 here) with every feature kept ("full"), any-resolution tiles (anyres_max_9)
    unpadded to the image's aspect, one newline token a row."""
    tokenizer = _tokenizer(image_token="<image>", video_token="<video>")
    pinpoints = [[32, 32], [32, 64], [64, 32]]
    image_processor = LlavaOnevisionImageProcessorPil(
        size=_IMAGE_SIZE, image_grid_pinpoints=pinpoints
    )
    processor = _OnevisionImagesOnly(
        image_processor=image_processor,
        tokenizer=tokenizer,
        num_image_tokens=16,
        vision_feature_select_strategy="full",
    )
    text = Qwen2Config(
        **{k: v for k, v in _TEXT.items() if k != "head_dim"},
        vocab_size=len(tokenizer),
        num_key_value_heads=2,
    )
    config = LlavaOnevisionConfig(
        text_config=text,
        vision_config=SiglipVisionConfig(**_SIGLIP),
        image_token_index=tokenizer.image_token_id,
        video_token_index=tokenizer.video_token_id,
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",
    )
    return _wrap(LlavaOnevisionForConditionalGeneration, config, processor, "tiny-onevision", seed)


def _tiny_qwen_vl(version: str, seed: int = 0) -> Model:
    """Qwen2.5-VL-3B (or Qwen2-VL-2B) scaled: 14px patches merged 2x2 (8px here), dynamic
    resolution (an image's tokens follow its size), multimodal rotary positions (time,
    height, width sections of each head's frequencies: 16, 24, 24 of 64; 1, 1, 2 of 4 here)
    that the model numbers itself. Qwen2.5-VL's tower attends in windows (112px; 16 here)
    with some full-attention blocks."""
    tokenizer = _tokenizer(
        image_token="<|image_pad|>",
        video_token="<|video_pad|>",
        vision_start_token="<|vision_start|>",
        vision_end_token="<|vision_end|>",
    )
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=8, merge_size=2, size={"shortest_edge": 16 * 16, "longest_edge": 64 * 64}
    )
    processor_class = _Qwen25VLImagesOnly if version == "2.5" else _Qwen2VLImagesOnly
    processor = processor_class(image_processor=image_processor, tokenizer=tokenizer)
    text = {
        **{k: v for k, v in _TEXT.items() if k != "head_dim"},
        "vocab_size": len(tokenizer),
        "num_key_value_heads": 2,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [1, 1, 2]},
    }
    vision = dict(
        depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=8,
        spatial_merge_size=2, temporal_patch_size=2,
    )  # fmt: skip
    if version == "2.5":
        vision.update(window_size=16, out_hidden_size=32, fullatt_block_indexes=[1])
        config_class, model_class = Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    else:
        vision.update(embed_dim=32, mlp_ratio=2)
        config_class, model_class = Qwen2VLConfig, Qwen2VLForConditionalGeneration
    config = config_class(
        text_config=text,
        vision_config=vision,
        image_token_id=tokenizer.image_token_id,
        video_token_id=tokenizer.video_token_id,
        vision_start_token_id=tokenizer.vision_start_token_id,
    )
    return _wrap(model_class, config, processor, f"tiny-qwen{version}-vl", seed)


def tiny_mllama(seed: int = 0) -> Model:
    """Llama-3.2-11B-Vision scaled: self-attention layers with a cross-attention layer to the
    image's states between them (layer 1 of 3 here). Text only: the hooks refuse it."""
    text = MllamaTextConfig(
        **{
            **_TEXT,
            "vocab_size": 262,
            "num_hidden_layers": 3,
            "num_key_value_heads": 2,
            "cross_attention_layers": [1],
        }
    )
    vision = MllamaVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_global_layers=1,
        attention_heads=2, image_size=32, patch_size=8, intermediate_layers_indices=[0],
        vision_output_dim=64,
    )  # fmt: skip
    config = MllamaConfig(text_config=text, vision_config=vision, image_token_index=261)
    torch.manual_seed(seed)
    return Model.from_hf(MllamaForConditionalGeneration(config), byte_tokenizer())


def _wrap(model_class: type, config: object, processor: object, spec: str, seed: int) -> Model:
    torch.manual_seed(seed)
    hf = model_class(config)
    hf.generation_config.eos_token_id = None  # as in zoo_models.build
    return Model.from_hf(hf, processor=processor, spec=spec)


# model_type -> (builder, the real checkpoint whose options it copies, the mask its
# language model's attention receives with an image)
VLM_ZOO: dict[str, tuple[Callable[[], Model], str, str]] = {
    "gemma3": (tiny_gemma3, "Gemma-3-4B", "causal; bidirectional among an image's tokens"),
    "paligemma": (tiny_paligemma, "PaliGemma-3B-224", "bidirectional prefix (image, prompt)"),
    "llava_onevision": (tiny_llava_onevision, "llava-onevision-qwen2-0.5b-ov", "causal"),
    "qwen2_5_vl": (lambda: _tiny_qwen_vl("2.5"), "Qwen2.5-VL-3B", "causal"),
    "qwen2_vl": (lambda: _tiny_qwen_vl("2"), "Qwen2-VL-2B", "causal"),
}
VLM_DOCS_START, VLM_DOCS_END = "<!-- vlm zoo table: start -->", "<!-- vlm zoo table: end -->"


def vlm_table() -> str:
    """docs/models.md's VLM table, from what tests/interp/test_zoo_vlm.py checks."""
    lines = [
        "| model_type (tiny model from) | mask with an image | patterns = eager, HeadScale(1)"
        " = plain forward | image attention share = eager | greedy generation = `hf.generate`"
        " | VHD = two unbatched forwards; generation under VHR and under VAR = `hf.generate`"
        " under the same edit"
        " | token-to-patch map: a planted visual sink on its patch |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (_, checkpoint, mask) in sorted(VLM_ZOO.items()):
        patches = "exact" if name in PATCH_MAPS else "refused in one line"
        lines.append(f"| `{name}` ({checkpoint}) | {mask} | yes | yes | yes | yes | {patches} |")
    refused = "refused in one line (cross-attention layers)"
    lines.append(
        f"| `mllama` (Llama-3.2-11B-Vision) | causal | {refused} | {refused} |"
        f" {refused} | {refused} | refused in one line |"
    )
    return "\n".join(lines)
