"""Tiny random-init models and a byte tokenizer for unit tests (milliseconds, no downloads)."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

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
    config = LlamaConfig(
        vocab_size=len(tokenizer),
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
    return Model.from_hf(LlamaForCausalLM(config), tokenizer, spec="tiny-llama")


def saved_tiny(folder: Path, **kwargs: int) -> Path:
    """A tiny Llama (see tiny_llama) saved with its tokenizer, as a `--model` folder."""
    model = tiny_llama(**kwargs)
    model.hf.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    return folder
