"""Tiny random-init models, a byte tokenizer and a tiny image task (seconds, no downloads).

For unit tests, notebooks and benchmarks: a GQA Llama and the vision-language models
LLaVA-1.5, LLaVA-NeXT and Idefics3, built from configs, with processors built offline from
the byte tokenizer plus the image tokens and PIL image processors with small image sizes.
Random weights: they exercise the plumbing (shapes, hooks, identities), not behaviour.
`write_image_task` writes a yes/no task about generated images in `interp.tasks`' format.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    CLIPVisionConfig,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3Processor,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextProcessor,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig
from transformers.models.idefics3.image_processing_pil_idefics3 import (
    Idefics3ImageProcessorPil,
)
from transformers.models.llava_next.image_processing_pil_llava_next import (
    LlavaNextImageProcessorPil,
)

from interp.models import Model

SPECIALS = ["<pad>", "<s>", "</s>"]


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """One token per byte (ids 3..258) plus <pad>, <s>, </s>; no BOS added."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    vocab.update({ch: len(SPECIALS) + i for i, ch in enumerate(sorted(alphabet))})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


def tiny_llama(
    n_layers: int = 3, n_heads: int = 4, n_kv_heads: int = 2, context: int = 512, seed: int = 0
) -> Model:
    """A random-init GQA Llama (d_model 64) wrapped as a Model."""
    torch.manual_seed(seed)
    tokenizer = byte_tokenizer()
    config = _llama_config(len(tokenizer), n_layers, n_heads, n_kv_heads, context)
    return Model.from_hf(LlamaForCausalLM(config), tokenizer, spec="tiny-llama")


def _llama_config(
    vocab_size: int, n_layers: int, n_heads: int, n_kv_heads: int, context: int
) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        max_position_embeddings=context,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


# Vision towers: 32x32 images in 8x8 patches, one layer of width 32.
_VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}


def tiny_llava(n_layers: int = 3, n_heads: int = 4, n_kv_heads: int = 2, seed: int = 0) -> Model:
    """A random-init LLaVA-1.5 (CLIP tower, GQA Llama) with its processor: 16 tokens an image.

    As llava-1.5: the processor resizes and crops to the tower's 32x32, the tower's 16
    patches plus CLS give 16 image features after the CLS is dropped ("default").
    """
    torch.manual_seed(seed)
    tokenizer = _image_tokenizer()
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size=_CROP)
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, **_LLAVA)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**_VISION, projection_dim=32),
        text_config=_llama_config(len(tokenizer), n_layers, n_heads, n_kv_heads, 512),
        image_token_id=processor.image_token_id,
        vision_feature_layer=-1,
    )
    hf = LlavaForConditionalGeneration(config)
    return Model.from_hf(hf, processor=processor, spec="tiny-llava")


def tiny_llava_next(
    n_layers: int = 3, n_heads: int = 4, n_kv_heads: int = 2, seed: int = 0
) -> Model:
    """A random-init LLaVA-NeXT: as `tiny_llava`, plus any-resolution tiles.

    An image is fitted to the best of 32x32, 32x64 and 64x32 and cut into 32x32 tiles; its
    token count (tiles, the base image and one `image_newline` a row) depends on its size.
    """
    torch.manual_seed(seed)
    tokenizer = _image_tokenizer()
    pinpoints = [[32, 32], [32, 64], [64, 32]]
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 32}, crop_size=_CROP, image_grid_pinpoints=pinpoints
    )
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, **_LLAVA)
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(**_VISION, projection_dim=32),
        text_config=_llama_config(len(tokenizer), n_layers, n_heads, n_kv_heads, 512),
        image_token_id=processor.image_token_id,
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-1,
    )
    hf = LlavaNextForConditionalGeneration(config)
    return Model.from_hf(hf, processor=processor, spec="tiny-llava-next")


_CROP = {"height": 32, "width": 32}
# The CLIP tower adds a CLS feature, which LLaVA's "default" strategy drops.
_LLAVA = {
    "patch_size": 8,
    "vision_feature_select_strategy": "default",
    "num_additional_image_tokens": 1,
}


def _image_tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = byte_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tokenizer


def tiny_idefics3(
    n_layers: int = 3, n_heads: int = 4, n_kv_heads: int = 2, seed: int = 0, split: bool = False
) -> Model:
    """A random-init Idefics3 (SigLIP-like tower, GQA Llama) with its processor.

    An image (or each tile, with `split`) is resized to 32x32 and gives 16 patches, merged
    2x2 by pixel shuffle into 4 image tokens between `<fake_token_around_image>` tags.
    """
    torch.manual_seed(seed)
    tokenizer = byte_tokenizer()
    tags = ["<global-img>"] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    tokenizer.add_special_tokens({"additional_special_tokens": tags})
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=split,
        size={"longest_edge": 64 if split else 32},
        max_image_size={"longest_edge": 32},
    )
    processor = Idefics3Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4
    )
    config = Idefics3Config(
        vision_config=Idefics3VisionConfig(**_VISION).to_dict(),
        text_config=_llama_config(len(tokenizer), n_layers, n_heads, n_kv_heads, 512).to_dict(),
        image_token_id=processor.image_token_id,
        scale_factor=2,
    )
    hf = Idefics3ForConditionalGeneration(config)
    return Model.from_hf(hf, processor=processor, spec="tiny-idefics3")


# The tiny image task: one coloured square on grey, and a yes/no question about its colour.
_COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (30, 60, 220)}


def write_image_task(folder: Path, n_items: int = 8, seed: int = 0) -> Path:
    """A POPE-like yes/no task about generated images, as a task folder (`interp.tasks`).

    Each item is a PNG (24 to 40 pixels a side, so batches mix image sizes) of one square of
    a random colour, and the question "Is there a {colour} square in the image?" about its
    colour (answer "yes") or another (answer "no"), alternately. `test.jsonl` and
    `calibration.jsonl` hold the same items, with image paths relative to the folder.

    Returns:
        The folder, for `load_task(folder)` or `interp effect vhr --task folder`.
    """
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = sorted(_COLOURS)
    lines = []
    for index in range(n_items):
        height, width = (int(v) for v in rng.integers(24, 41, 2))
        colour = names[int(rng.integers(len(names)))]
        pixels = np.full((height, width, 3), 128, dtype=np.uint8)
        top, left = int(rng.integers(0, height // 2)), int(rng.integers(0, width // 2))
        pixels[top : top + height // 2, left : left + width // 2] = _COLOURS[colour]
        image = f"images/{index:03d}.png"
        Image.fromarray(pixels).save(folder / image)
        present = index % 2 == 0
        asked = colour if present else names[(names.index(colour) + 1) % len(names)]
        question = f"Is there a {asked} square in the image? Answer yes or no."
        record = {"prompt": question, "choices": ["yes", "no"], "answer": 0 if present else 1}
        lines.append(json.dumps({**record, "image": image}))
    text = "\n".join(lines) + "\n"
    (folder / "test.jsonl").write_text(text)
    (folder / "calibration.jsonl").write_text(text)
    (folder / "task.json").write_text(json.dumps({"instruction": "", "shots": 0}))
    return folder
