"""ACT: the published check value, sink detection, padding, the decode rule, errors."""

from __future__ import annotations

import pytest
import torch

from interp import explicit_attention
from interp.errors import ConfigError, HookError
from interp.heads import HeadSet
from interp.hooks import attention_hooks
from interp.interventions.act import (
    ACT,
    ActConfig,
    act_candidates,
    act_layers,
    calibrate_rows,
    column_sums,
    hidden_sinks,
)
from interp.kv_cache import cache_kwargs, output_cache
from interp.models import Model
from tests.interp.helpers import Recorder, cached_greedy, left_padded, whole

TEXT = "The quick brown fox jumps over the lazy dog."
HEADS = HeadSet(["L1H0", "L1H3", "L2H1"])
# The tiny random model attends almost uniformly, so its sinks are weaker than tau = 0.1.
SENSITIVE = ActConfig(threshold=0.04)


def test_check_value_from_methods() -> None:
    probs = torch.tensor([0.515, 0.434, 0.051]).view(1, 1, 1, 3)
    sinks = torch.tensor([False, True, False]).view(1, 1, 3)
    out = calibrate_rows(probs, sinks, beta=0.4)[0, 0, 0]
    assert out[0].item() == pytest.approx(0.752, abs=5e-4)
    assert out[1].item() == pytest.approx(0.174, abs=5e-4)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_row_without_mass_outside_sinks_is_unchanged() -> None:
    probs = torch.tensor([0.0, 1.0, 0.0]).view(1, 1, 1, 3)
    sinks = torch.tensor([False, True, False]).view(1, 1, 3)
    assert torch.equal(calibrate_rows(probs, sinks, 0.4), probs)


def causal(n: int) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool).tril()[None]


def whole_prompt_sinks(
    probs: torch.Tensor, visible: torch.Tensor, config: ActConfig
) -> torch.Tensor:
    """S' from every row of a prompt at once: what ACT finds adding up blocks of rows."""
    return hidden_sinks(*column_sums(probs, visible), config)


def test_hidden_sinks_spare_the_first_sink() -> None:
    # Every row puts 0.5 on key 0 and 0.4 on key 2 once visible: both are sinks.
    probs = torch.zeros(1, 1, 5, 5)
    probs[0, 0, 0, 0] = 1.0
    probs[0, 0, 1, :2] = torch.tensor([0.9, 0.1])
    probs[0, 0, 2:, 0] = 0.5
    probs[0, 0, 2:, 2] = 0.4
    probs[0, 0, 2:, 1] = 0.1 - 0.05 * torch.arange(3)
    for row in range(2, 5):
        probs[0, 0, row, row] += 1 - probs[0, 0, row].sum()
    sinks = whole_prompt_sinks(probs, causal(5), ActConfig(min_queries=3))
    assert sinks[0, 0].tolist() == [False, False, True, False, False]
    # Move key 0's mass to key 1 (m_0 = 0.2 < 0.3): key 1 is the first sink and is spared.
    shifted = probs.clone()
    shifted[0, 0, 1:, 1] += shifted[0, 0, 1:, 0]
    shifted[0, 0, 1:, 0] = 0
    sinks = whole_prompt_sinks(shifted, causal(5), ActConfig(min_queries=3, threshold=0.3))
    assert sinks[0, 0].tolist() == [False, False, True, False, False]
    assert (
        whole_prompt_sinks(shifted, causal(5), ActConfig(min_queries=3, threshold=0.45)).sum() == 0
    )


def test_hidden_sinks_ignore_left_padding() -> None:
    generator = torch.Generator().manual_seed(0)
    n, pad = 6, 3
    visible = causal(n)
    probs = torch.softmax(torch.randn(1, 2, n, n, generator=generator), -1)
    probs = probs.masked_fill(~visible[:, None], 0)
    probs = probs / probs.sum(-1, keepdim=True)
    padded = torch.zeros(1, 2, n + pad, n + pad)
    padded[..., pad:, pad:] = probs
    padded_visible = torch.zeros(1, n + pad, n + pad, dtype=torch.bool)
    padded_visible[:, pad:, pad:] = visible
    config = ActConfig(threshold=0.15)
    plain = whole_prompt_sinks(probs, visible, config)
    assert plain.any()
    assert torch.equal(whole_prompt_sinks(padded, padded_visible, config)[..., pad:], plain)
    assert not whole_prompt_sinks(padded, padded_visible, config)[..., :pad].any()


def logits(model: Model, text: str = TEXT) -> torch.Tensor:
    with torch.no_grad():
        return model.hf(model.encode(text).input_ids).logits


def test_beta_one_is_identity_and_default_changes_logits(tiny: Model) -> None:
    base = logits(tiny)
    with ACT(HEADS, ActConfig(beta=1.0)).applied(tiny):
        assert (logits(tiny) - base).abs().max() < 1e-6
    with ACT(HEADS, SENSITIVE).applied(tiny):
        assert (logits(tiny) - base).abs().max() > 1e-4


def test_rows_sum_to_one_and_batch_rows_match_single_runs(tiny: Model) -> None:
    texts = [TEXT, "Hello there", "abc"]
    ids, mask = left_padded(tiny, texts)
    recorder = Recorder([1, 2])
    with ACT(HEADS, SENSITIVE).applied(tiny), attention_hooks(tiny.hf, recorder), torch.no_grad():
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        batched = tiny.hf(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        singles = [logits(tiny, text)[0, -1] for text in texts]
    for rows in recorder.seen[:2]:
        sums = rows.probs.sum(-1)
        valid = rows.visible.any(-1)[:, None].expand_as(sums)
        assert torch.all((sums[valid] - 1).abs() < 1e-5)
    for row, single in enumerate(singles):
        assert torch.allclose(batched[row, -1], single, atol=1e-4)


@pytest.mark.parametrize("block_rows", [None, 4], ids=["one_block", "blocks_of_4"])
def test_decode_rows_reuse_prefill_sinks(tiny: Model, monkeypatch, block_rows) -> None:
    ids, mask = left_padded(tiny, [TEXT, "Hi there"])
    if block_rows:
        monkeypatch.setattr(
            explicit_attention, "_BLOCK_BYTES", 4 * 2 * 4 * ids.shape[1] * block_rows
        )
    before, after = Recorder([1]), Recorder([1])
    config = SENSITIVE
    with (
        attention_hooks(tiny.hf, before),
        ACT(HEADS, config).applied(tiny),
        attention_hooks(tiny.hf, after),
    ):
        cached_greedy(tiny, ids, mask, steps=4)
    prefill = [rows for rows in before.seen if not rows.is_decode]
    assert len(prefill) == (1 if block_rows is None else -(-ids.shape[1] // block_rows))
    probs, visible = whole(prefill)
    index = torch.tensor(HEADS.heads_in(1))
    sinks = whole_prompt_sinks(probs[:, index], visible, config)
    assert sinks.any()
    decode = [(b, a) for b, a in zip(before.seen, after.seen, strict=True) if b.is_decode]
    assert len(decode) == 3
    for raw, edited in decode:
        grown = torch.nn.functional.pad(sinks, (0, raw.probs.shape[-1] - sinks.shape[-1]))
        expected = calibrate_rows(raw.probs[:, index], grown, config.beta)
        assert torch.allclose(edited.probs[:, index], expected, atol=1e-7)
        assert torch.all((edited.probs.sum(-1) - 1).abs() < 1e-5)
        assert not torch.allclose(edited.probs[:, index], raw.probs[:, index])


def test_cache_forward_without_prefill_raises(tiny: Model) -> None:
    ids = tiny.encode(TEXT).input_ids
    with torch.no_grad():
        cache = output_cache(tiny.hf(ids, use_cache=True))
        with pytest.raises(HookError, match="prefill"), ACT(HEADS).applied(tiny):
            tiny.hf(ids[:, -1:], **cache_kwargs(tiny.hf, cache))


@pytest.mark.parametrize("block_rows", [1, 3])
def test_prompts_longer_than_a_block_match_one_block(tiny: Model, monkeypatch, block_rows) -> None:
    ids, mask = left_padded(tiny, [TEXT, "Hello there", "abc"])
    positions = (mask.cumsum(-1) - 1).clamp_min(0)

    def run(n_blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
        recorder = Recorder([1])
        with ACT(HEADS, SENSITIVE).applied(tiny), attention_hooks(tiny.hf, recorder):
            with torch.no_grad():
                out = tiny.hf(input_ids=ids, attention_mask=mask, position_ids=positions).logits
            tokens = cached_greedy(tiny, ids, mask, steps=6)
        # Two prompt forwards (logits, then generate's prefill), n_blocks blocks each.
        assert sum(not rows.is_decode for rows in recorder.seen) == 2 * n_blocks
        return out, tokens

    one, one_tokens = run(1)
    monkeypatch.setattr(explicit_attention, "_BLOCK_BYTES", 4 * 3 * 4 * ids.shape[1] * block_rows)
    many, many_tokens = run(-(-ids.shape[1] // block_rows))
    with torch.no_grad():
        plain = tiny.hf(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    valid = mask.bool()
    assert (one - plain)[valid].abs().max() > 1e-4  # ACT does something here
    assert (many - one)[valid].abs().max() <= 1e-6
    assert torch.equal(many_tokens, one_tokens)


def test_config_validation_round_trip_and_candidates(tiny: Model) -> None:
    with pytest.raises(ConfigError):
        ActConfig(beta=1.5)
    with pytest.raises(ConfigError):
        ActConfig(threshold_mode="percent")  # type: ignore[arg-type]
    config = ActConfig(beta=0.3, threshold_mode="relative")
    assert ActConfig.from_dict(config.to_dict()) == config
    geometry = tiny.geometry  # 3 layers: layers 2..L-2 is empty
    assert act_layers(geometry) == []
    assert len(act_candidates(geometry)) == 0


@pytest.mark.integration
def test_act_end_to_end_on_the_default_model(default_model: Model) -> None:
    from interp.effects import EffectsConfig, measure
    from interp.interventions.act_search import SearchConfig, search_heads
    from interp.tasks import load_task

    # Real sinks: a mid-layer head of the pretrained model has hidden sinks on a task prompt.
    task = load_task("continents")
    recorder = Recorder([12])
    with torch.no_grad(), attention_hooks(default_model.hf, recorder):
        default_model.hf(default_model.encode(task.text(task.items[0])).input_ids)
    assert whole_prompt_sinks(recorder.seen[0].probs, recorder.seen[0].visible, ActConfig()).any()

    # Search one layer's heads: gains are taken against the identity arm (same kernel), so
    # ACT with beta = 1 gains exactly 0 on every head; real ACT moves the metric far more.
    calibration = [load_task("continents", "calibration").subsample(4)]
    candidates = HeadSet(f"L12H{h}" for h in range(4))
    config = SearchConfig(metric="log_prob")
    search = search_heads(default_model, calibration, ActConfig(), config, candidates)
    identity = search_heads(default_model, calibration, ActConfig(beta=1.0), config, candidates)
    assert (identity.scores.data["score"] == 0.0).all() and not identity.selected
    ran = search.scores.data[search.scores.data["skipped"] == ""]
    assert len(ran) > 0 and ran["score"].abs().max() > 1e-3
    heads = search.selected or search.scores.top(1)
    effects = measure(default_model, [task.subsample(16)], ACT(heads), EffectsConfig(n_boot=500))
    row = effects.table.data.iloc[0]
    assert row["n"] == 16 and row["baseline"] > 0.25  # above chance (4 choices)
    assert row["ci_low"] <= row["difference"] <= row["ci_high"]
    assert row["improved"] - row["worsened"] == round(row["difference"] * 16)
