"""Tiny random-init models of each decoder architecture the zoo test covers.

Each config scales a real checkpoint's options down (width 32-64, 2-3 layers, 4 heads):
the options that change how attention is computed are the checkpoint's own, so the hooks
meet the same fused layouts, rotary fractions, biases and masks as on the real model.
"""

from __future__ import annotations

from typing import Any

import torch
import transformers
from transformers import PretrainedConfig, PreTrainedModel

from interp.models import Model
from interp.tiny_models import byte_tokenizer

VOCAB = 260  # byte tokenizer: 256 bytes + <pad>, <s>, </s>, rounded up
_LLAMA_LIKE = dict(
    vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=1,
    eos_token_id=2,
)  # fmt: skip
_FALCON = dict(
    vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, alibi=False,
    new_decoder_architecture=False, parallel_attn=True, pad_token_id=0,
)  # fmt: skip
_GPT_LIKE = dict(
    vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, pad_token_id=0, bos_token_id=1,
    eos_token_id=2,
)  # fmt: skip
_SLIDING_FULL = ["sliding_attention", "full_attention"]


def _config(name: str, **options: Any) -> PretrainedConfig:
    return getattr(transformers, name)(**options)


# model id -> (config class, model class, options). Comments name the real checkpoint whose
# attention options are copied.
ZOO: dict[str, tuple[str, str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", _LLAMA_LIKE),
    # Mistral-7B-v0.1: a sliding window on every layer (4096; 4 here, prompts are longer).
    "mistral": ("MistralConfig", "MistralForCausalLM", {**_LLAMA_LIKE, "sliding_window": 4}),
    # Pythia-160M: rotary on 25% of each head, parallel attention and MLP, fused QKV
    # interleaved per head.
    "gpt_neox": (
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        dict(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            rotary_pct=0.25,
            use_parallel_residual=True,
            pad_token_id=0,
        ),
    ),
    # GPT-J-6B: rotary on the first 64 of 256 dims per head (8 of 32 here), parallel block.
    "gptj": (
        "GPTJConfig",
        "GPTJForCausalLM",
        {**_GPT_LIKE, "n_embd": 64, "n_head": 2, "rotary_dim": 8},
    ),
    # Falcon-7B: multi-query (one KV head), parallel attention, rotary, no ALiBi.
    "falcon": (
        "FalconConfig",
        "FalconForCausalLM",
        {**_FALCON, "multi_query": True, "parallel_attn": True, "bias": False},
    ),
    # Falcon-40B: the new decoder architecture (KV groups in the fused QKV, two norms).
    "falcon_new": (
        "FalconConfig",
        "FalconForCausalLM",
        {**_FALCON, "num_kv_heads": 2, "new_decoder_architecture": True, "bias": False},
    ),
    # Falcon-RW-1B: ALiBi, full multi-head, sequential block, biases.
    "falcon_alibi": (
        "FalconConfig",
        "FalconForCausalLM",
        {**_FALCON, "multi_query": False, "parallel_attn": False, "alibi": True, "bias": True},
    ),
    # SantaCoder / StarCoder: multi-query attention, fused [q | k | v].
    "gpt_bigcode": (
        "GPTBigCodeConfig",
        "GPTBigCodeForCausalLM",
        {**_GPT_LIKE, "multi_query": True},
    ),
    # GPT-Neo (TinyStories, 125M): global and local (window 256; 4 here) layers alternating,
    # unscaled scores; attention computed inline (`_attn`), not through the interface.
    "gpt_neo": (
        "GPTNeoConfig",
        "GPTNeoForCausalLM",
        dict(
            vocab_size=VOCAB,
            hidden_size=32,
            num_layers=2,
            num_heads=4,
            window_size=4,
            attention_types=[[["global", "local"], 1]],
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        ),
    ),
    # BLOOM-560M: ALiBi, fused QKV per head; attention computed inline in its forward.
    "bloom": (
        "BloomConfig",
        "BloomForCausalLM",
        dict(vocab_size=VOCAB, hidden_size=32, n_layer=2, n_head=4, pad_token_id=0),
    ),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", _GPT_LIKE),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", _LLAMA_LIKE),
    # Qwen3: per-head q/k norms.
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", _LLAMA_LIKE),
    # Gemma-3: sliding (window 1024 at 4B; 4 here) and full layers, q/k norms.
    "gemma3_text": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        {**_LLAMA_LIKE, "sliding_window": 4, "layer_types": _SLIDING_FULL},
    ),
    # Gemma-2-2B: attention logits soft-capped at 50 (final logits at 30), query scale
    # 1/sqrt(query_pre_attn_scalar = head_dim), sliding (4096; 4 here) and full layers.
    "gemma2": (
        "Gemma2Config",
        "Gemma2ForCausalLM",
        {
            **_LLAMA_LIKE,
            "attn_logit_softcapping": 50.0,
            "final_logit_softcapping": 30.0,
            "query_pre_attn_scalar": 8,
            "sliding_window": 4,
            "layer_types": _SLIDING_FULL,
        },
    ),
    # gpt-oss-20b: learned per-head sinks, sliding (128; 4 here) and full layers, MoE.
    "gpt_oss": (
        "GptOssConfig",
        "GptOssForCausalLM",
        {
            **_LLAMA_LIKE,
            "head_dim": 16,
            "num_local_experts": 4,
            "num_experts_per_tok": 2,
            "sliding_window": 4,
            "layer_types": _SLIDING_FULL,
        },
    ),
    # DeepSeek-V3: multi-head latent attention, low-rank queries (q_proj is None), q/k
    # width nope + rope (128 + 64) and v width 128, scaled to 16 + 8 and 16 here.
    "deepseek_v3": (
        "DeepseekV3Config",
        "DeepseekV3ForCausalLM",
        {
            **_LLAMA_LIKE,
            "num_key_value_heads": 4,
            "q_lora_rank": 16,
            "kv_lora_rank": 16,
            "qk_nope_head_dim": 16,
            "qk_rope_head_dim": 8,
            "v_head_dim": 16,
            "n_routed_experts": 4,
            "num_experts_per_tok": 2,
            "n_group": 1,
            "topk_group": 1,
            "first_k_dense_replace": 1,
            "moe_intermediate_size": 16,
        },
    ),
    # Architectures that worked before the zoo, kept in it so discovery cannot regress them.
    "mixtral": (
        "MixtralConfig",
        "MixtralForCausalLM",
        {**_LLAMA_LIKE, "num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": 4},
    ),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", _LLAMA_LIKE),
    "qwen2_moe": (
        "Qwen2MoeConfig",
        "Qwen2MoeForCausalLM",
        {
            **_LLAMA_LIKE,
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 16,
            "shared_expert_intermediate_size": 16,
        },
    ),
    "qwen3_moe": (
        "Qwen3MoeConfig",
        "Qwen3MoeForCausalLM",
        {**_LLAMA_LIKE, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 16},
    ),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {**_LLAMA_LIKE, "head_dim": 8}),
    # Phi-2: rotary on 40% of each head (32 of 80; 4 of 10 here), parallel block, dense
    # output projection.
    "phi": (
        "PhiConfig",
        "PhiForCausalLM",
        {
            **_LLAMA_LIKE,
            "hidden_size": 40,
            "num_key_value_heads": 4,
            "partial_rotary_factor": 0.4,
        },
    ),
    "olmo": ("OlmoConfig", "OlmoForCausalLM", _LLAMA_LIKE),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", _LLAMA_LIKE),
    "olmoe": (
        "OlmoeConfig",
        "OlmoeForCausalLM",
        {**_LLAMA_LIKE, "num_experts": 4, "num_experts_per_tok": 2},
    ),
    "starcoder2": (
        "Starcoder2Config",
        "Starcoder2ForCausalLM",
        {**_LLAMA_LIKE, "sliding_window": 4},
    ),
    "granite": ("GraniteConfig", "GraniteForCausalLM", _LLAMA_LIKE),
    "cohere": ("CohereConfig", "CohereForCausalLM", _LLAMA_LIKE),
    "cohere2": (
        "Cohere2Config",
        "Cohere2ForCausalLM",
        {**_LLAMA_LIKE, "sliding_window": 4, "layer_types": _SLIDING_FULL},
    ),
    "stablelm": ("StableLmConfig", "StableLmForCausalLM", _LLAMA_LIKE),
    "opt": (
        "OPTConfig",
        "OPTForCausalLM",
        dict(
            vocab_size=VOCAB,
            hidden_size=32,
            ffn_dim=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            word_embed_proj_dim=32,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        ),
    ),
    "smollm3": ("SmolLM3Config", "SmolLM3ForCausalLM", _LLAMA_LIKE),
}


_LLAMA_O = "model.layers.{}.self_attn.o_proj"
# The output projection of layer {} in each architecture, as its modeling file names it:
# the tests' own reference, independent of the toolkit's discovery.
OUT_PROJ: dict[str, str] = {
    **dict.fromkeys(
        [
            *("llama", "mistral", "phi3", "qwen3", "gemma3_text", "gemma2", "gpt_oss"),
            *("deepseek_v3", "mixtral", "qwen2", "qwen2_moe", "qwen3_moe", "gemma", "olmo"),
            *("olmo2", "olmoe", "starcoder2", "granite", "cohere", "cohere2", "stablelm"),
            "smollm3",
        ],
        _LLAMA_O,
    ),
    "phi": "model.layers.{}.self_attn.dense",
    "opt": "model.decoder.layers.{}.self_attn.out_proj",
    "gpt_neox": "gpt_neox.layers.{}.attention.dense",
    "gptj": "transformer.h.{}.attn.out_proj",
    **dict.fromkeys(
        ["falcon", "falcon_new", "falcon_alibi"], "transformer.h.{}.self_attention.dense"
    ),
    "gpt_bigcode": "transformer.h.{}.attn.c_proj",
    "gpt_neo": "transformer.h.{}.attn.attention.out_proj",
    "bloom": "transformer.h.{}.self_attention.dense",
    "gpt2": "transformer.h.{}.attn.c_proj",
}


# The real checkpoint whose attention options each tiny config copies.
CHECKPOINTS: dict[str, str] = {
    "llama": "LlamaConfig defaults",
    "mistral": "Mistral-7B-v0.1",
    "gpt_neox": "Pythia-160M",
    "gptj": "GPT-J-6B",
    "falcon": "Falcon-7B",
    "falcon_new": "Falcon-40B",
    "falcon_alibi": "Falcon-RW-1B",
    "gpt_bigcode": "StarCoder / SantaCoder",
    "gpt_neo": "GPT-Neo-125M, TinyStories",
    "bloom": "BLOOM-560M",
    "gpt2": "GPT-2",
    "phi3": "Phi-3",
    "qwen3": "Qwen3",
    "gemma3_text": "Gemma-3-4B text",
    "gemma2": "Gemma-2-2B",
    "gpt_oss": "gpt-oss-20b",
    "deepseek_v3": "DeepSeek-V3",
    **{
        name: "config defaults"
        for name in (
            *("mixtral", "qwen2", "qwen2_moe", "qwen3_moe", "gemma", "olmo", "olmo2", "olmoe"),
            *("starcoder2", "granite", "cohere", "cohere2", "stablelm", "opt", "smollm3"),
        )
    },
    "phi": "Phi-2",
}
# Attention computed inline, adapted by interp.attention_backend.inline_attention.
INLINE = frozenset({"gpt_neo", "bloom"})
# q and k pass a norm (Qwen3, Gemma-3, OLMo-2, OLMoE), YaRN's attention factor on the
# rotary (gpt-oss; not 1 even at position 0) or a scale (OPT's q) between projection and
# attention: only v is compared.
QK_CHANGED = frozenset({"qwen3", "qwen3_moe", "gemma3_text", "olmo2", "olmoe", "gpt_oss", "opt"})
# The MLP adds the residual stream to its output: hook_mlp_out refuses.
MLP_ADDS_RESIDUAL = frozenset({"bloom", "opt"})  # OPT: no MLP module at all
# No q/k/v projections (latent attention): q/k/v hooks refuse.
LATENT = frozenset({"deepseek_v3"})
DOCS_START, DOCS_END = "<!-- zoo table: start -->", "<!-- zoo table: end -->"


def support_table() -> str:
    """docs/models.md's architecture table, from what tests/interp/test_zoo.py checks."""
    lines = [
        "| model_type (tiny config from) | attention hooks: patterns = eager, identities,"
        " edits in cached generation | head outputs, results, mean ablation, HeadScale,"
        " head patching | q/k/v hooks: split = what the attention receives"
        " | hook_attn_out, hook_mlp_out | retrieval scores, activation and attribution"
        " patching |",
        "|---|---|---|---|---|---|",
    ]
    for name in sorted(ZOO):
        attention = "yes (inline attention, adapted)" if name in INLINE else "yes"
        if name in LATENT:
            qkv = "refused (latent attention: no q/k/v projections)"
        elif name in INLINE:
            qkv = "yes (compared with the q, k, v its inline attention takes)"
        elif name in QK_CHANGED:
            qkv = "yes (v compared; q/k normed or scaled before attention)"
        else:
            qkv = "yes"
        model_type = getattr(transformers, ZOO[name][0]).model_type
        outputs = (
            "attn_out; mlp_out refused (no MLP apart from the residual)"
            if name in MLP_ADDS_RESIDUAL
            else "yes"
        )
        lines.append(
            f"| `{model_type}` ({CHECKPOINTS[name]}) | {attention} | yes | {qkv} | {outputs}"
            " | yes |"
        )
    return "\n".join(lines)


def build(name: str, seed: int = 0) -> Model:
    """The tiny model `name` of ZOO, seeded, wrapped with the byte tokenizer."""
    config_class, model_class, options = ZOO[name]
    torch.manual_seed(seed)
    hf: PreTrainedModel = getattr(transformers, model_class)(_config(config_class, **options))
    # No end-of-sequence token: `generate` with min_new_tokens would otherwise suppress it
    # where greedy re-forwards pick it, and the two could not be compared token for token.
    hf.generation_config.eos_token_id = None
    return Model.from_hf(hf, byte_tokenizer(), spec=f"tiny-{name}")


def _rewritten(text: str, start: str, end: str, table: str) -> str:
    head, rest = text.split(start)
    return f"{head}{start}\n{table}\n{end}{rest.split(end)[1]}"


if __name__ == "__main__":  # rewrite the tables in docs/models.md
    from pathlib import Path

    from tests.interp.zoo_vlms import VLM_DOCS_END, VLM_DOCS_START, vlm_table

    docs = Path(__file__).resolve().parents[2] / "docs" / "models.md"
    text = _rewritten(docs.read_text(), DOCS_START, DOCS_END, support_table())
    docs.write_text(_rewritten(text, VLM_DOCS_START, VLM_DOCS_END, vlm_table()))
