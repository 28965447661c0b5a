import numpy as np
import pytest
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, MistralConfig, MistralForCausalLM

from interp.errors import ConfigError, InputError
from interp.models import Model
from interp.tiny_models import byte_tokenizer
from probes import sinks

# One head, four tokens: rows are queries, columns keys; each row sums to 1.
PATTERN = torch.tensor(
    [
        [1.0, 0.0, 0.0, 0.0],
        [0.5, 0.5, 0.0, 0.0],
        [0.5, 0.4, 0.1, 0.0],
        [0.4, 0.4, 0.1, 0.1],
    ]
)
COLUMN_SUMS = PATTERN.sum(0)[None, None]  # [layer=1, head=1, key=4]


def test_sink_statistics_on_a_hand_made_pattern():
    stats = sinks.sink_statistics(COLUMN_SUMS, sinks.SinkConfig())
    # m_j = [2.4/4, 1.3/3, 0.2/2, 0.1/1] = [0.6, 0.433, 0.1, 0.1]; tau = 0.1 is strict.
    assert stats["sinks"][0, 0].tolist() == [True, True, False, False]
    assert stats["score"][0, 0] == pytest.approx((1.4 + 1.3) / 3)
    assert stats["first_token_share"][0, 0] == pytest.approx(1.4 / 3)
    assert stats["hidden_sink_share"][0, 0] == pytest.approx(1.3 / 3)
    assert stats["n_sinks"][0, 0] == 2 and stats["first_token_dominant"][0, 0]


def test_relative_threshold_and_min_queries():
    relative = sinks.SinkConfig(threshold_mode="relative", relative_alpha=1.0)  # 1/N = 0.25
    assert sinks.sink_statistics(COLUMN_SUMS, relative)["sinks"][0, 0].tolist() == [
        True,
        True,
        False,
        False,
    ]
    loose = sinks.SinkConfig(threshold=0.05)
    assert sinks.sink_statistics(COLUMN_SUMS, loose)["sinks"][0, 0].tolist() == [True] * 4
    guarded = sinks.SinkConfig(threshold=0.05, min_queries=2)
    assert sinks.sink_statistics(COLUMN_SUMS, guarded)["sinks"][0, 0].tolist() == [
        True,
        True,
        True,
        False,
    ]


def test_config_validation_and_round_trip():
    with pytest.raises(ConfigError):
        sinks.SinkConfig(threshold_mode="percent")
    with pytest.raises(ConfigError):
        sinks.SinkConfig(threshold=0.0)
    config = sinks.SinkConfig(threshold=0.2, min_queries=4)
    assert sinks.SinkConfig.from_dict(config.to_dict()) == config


def test_massive_activations_find_the_outlier_dimension():
    x = torch.randn(5, 1024) * 0.1  # phi can reach sqrt(1024) = 32 only in wide models
    x[0, 7] = 100.0
    positions, dims, phi = sinks.massive_activations(x, threshold=20.0)
    assert positions.tolist() == [0] and dims.tolist() == [7]
    assert phi[0] == pytest.approx(100.0 / np.sqrt((x[0] ** 2).mean().item() + 1e-6), rel=1e-5)


def test_run_on_tiny_model_matches_explicit_patterns(tiny):
    prompts = ["The cat sat on the mat.", "A dog ran."]
    result = sinks.run(tiny, prompts)
    table = result.heads.data
    assert len(table) == 2 * 3 * 4 and set(table.example) == {0, 1}
    # Reference: full patterns from an eager forward of the same model.
    ids = tiny.encode(prompts[1]).input_ids
    tiny.hf.set_attn_implementation("eager")
    with torch.no_grad():
        attentions = tiny.hf(ids, output_attentions=True).attentions
    tiny.hf.set_attn_implementation("sdpa")
    column_sums = torch.stack([a[0].sum(1) for a in attentions])
    expected = sinks.sink_statistics(column_sums, sinks.SinkConfig())["score"].ravel()
    got = table[table.example == 1].score.to_numpy()
    assert np.allclose(got, expected, atol=1e-5)
    assert result.heads.provenance.n_inputs == 2


def test_run_rejects_empty_and_overlong_input(tiny):
    with pytest.raises(InputError):
        sinks.run(tiny, [])
    with pytest.raises(InputError, match="context"):
        sinks.run(tiny, ["x" * 600])  # tiny context is 512 tokens


def test_one_string_is_one_prompt_not_its_characters(tiny):
    text = "The cat sat."
    result = sinks.run(tiny, text)
    assert result.heads.provenance.n_inputs == 1
    assert set(result.heads.data.example) == {0}
    assert set(result.heads.data.n_tokens) == {len(text)}  # byte tokenizer: one per char
    assert result.heads.data.equals(sinks.run(tiny, [text]).heads.data)
    with pytest.raises(InputError, match="not token ids"):
        sinks.run(tiny, [[3, 4, 5]])  # type: ignore[list-item]
    with pytest.raises(InputError, match="pass the text itself"):
        sinks.run(tiny, tiny.encode(text))  # type: ignore[arg-type]  # would give key names


def test_massive_dimensions_summary_ranks_dims():
    frame = sinks.TokenScores(
        sinks.pd.DataFrame(
            {
                "example": [0, 0, 1],
                "position": [0, 0, 0],
                "token": ["a"] * 3,
                "layer": [1, 2, 1],
                "dim": [7, 7, 3],
                "phi": [30.0, 40.0, 25.0],
            }
        ),
        sinks.Provenance(
            model="m", weights_hash="w", analyzer="sinks", config={}, inputs_hash="i", n_inputs=2
        ),
    )
    summary = sinks.massive_dimensions(frame)
    assert summary.dim.tolist() == [7, 3]
    assert summary.hits.tolist() == [2, 1] and summary.max_phi.tolist() == [40.0, 25.0]


@pytest.mark.integration
def test_default_model_has_first_token_sinks(default_model):
    from interp.prompts import data_path, load_prompts

    result = sinks.run(default_model, load_prompts(data_path("prompts", "sinks.jsonl")))
    per_head = result.heads.per_head()
    assert len(per_head) == 270
    late = per_head[per_head.layer >= 3]
    assert (late.first_token_dominant > 0.5).mean() > 0.5  # "most heads"
    assert late.first_token_share.mean() > 0.3
    # The massive-activation dimension fires on the first token across many layers.
    top = sinks.massive_dimensions(result.massive).iloc[0]
    assert top.layers >= 10 and 0 in top.positions


def _windowed(kind: str) -> Model:
    """A tiny model whose layers see 4-key windows (Mistral: all; Gemma-3: layer 0 only)."""
    common = dict(
        vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=4,
    )  # fmt: skip
    torch.manual_seed(0)
    if kind == "mistral":
        hf = MistralForCausalLM(MistralConfig(**common))
    else:
        config = Gemma3TextConfig(**common, layer_types=["sliding_attention", "full_attention"])
        hf = Gemma3ForCausalLM(config)
    return Model.from_hf(hf, byte_tokenizer())


@pytest.mark.parametrize("kind", ["mistral", "gemma3_text"])
def test_sliding_window_keys_are_averaged_over_the_queries_in_their_window(kind):
    model = _windowed(kind)
    text = "The cat sat on the mat."  # 23 tokens, longer than the 4-key window
    n_keys, window = len(text), 4
    # Every key with m_j > 1e-9 is a "sink", so sink_tokens lists m_j of every key.
    result = sinks.run(model, text, sinks.SinkConfig(threshold=1e-9))
    model.hf.set_attn_implementation("eager")
    with torch.no_grad():
        attentions = model.hf(**model.encode(text), output_attentions=True).attentions
    model.hf.set_attn_implementation("sdpa")
    layer_types = getattr(model.hf.config, "layer_types", None) or ["sliding_attention"] * 2
    keys = torch.arange(n_keys)
    expected = []
    for layer, pattern in enumerate(attentions):
        sliding = layer_types[layer] == "sliding_attention"
        # Query i sees key j iff j <= i < j + window (HF's sliding-window mask).
        seen_by = (n_keys - keys).clamp(max=window) if sliding else n_keys - keys
        assert torch.equal((pattern[0] > 0).sum(dim=(0, 1)), seen_by * pattern.shape[1])
        expected.append(pattern[0].sum(1) / seen_by)  # [head, key]
    m = torch.stack(expected)  # [layer, head, key]
    table = result.sink_tokens.data.sort_values(["layer", "head", "position"])
    assert len(table) == m.numel()
    got = torch.tensor(table.mean_received.to_numpy()).reshape(m.shape)
    assert torch.allclose(got, m, atol=1e-5)
    # Dividing by every later query (N - j) would give other values on the windowed layer.
    causal_count = attentions[0][0].sum(1) / (n_keys - keys)
    assert not torch.allclose(got[0], causal_count, atol=1e-3)
