"""HeadScale and AttentionEdit: identities, row sums, KV cache, padding, GQA, nesting, cleanup."""

from __future__ import annotations

import json

import pytest
import torch

from interp.errors import ConfigError, InputError
from interp.heads import HeadSet
from interp.hooks import _ACTIVE, attention_hooks, decoder_layers, head_output_hooks
from interp.interventions import (
    ACT,
    ActConfig,
    AttentionEdit,
    HeadScale,
    applied_all,
    mean_head_outputs,
    uniform_attention,
)
from interp.interventions.base import tensor_digest
from interp.models import Model
from tests.interp.helpers import Recorder, cached_greedy, full_greedy, left_padded

TEXT = "The quick brown fox jumps over the lazy dog."
HEADS = HeadSet(["L0H1", "L1H0", "L2H3"])


def identity(rows, index):
    return rows.probs[:, index]


def recency(rows, index):
    """Attention proportional to 1 + key position: far from the model's own rows."""
    keys = torch.arange(rows.probs.shape[-1], dtype=torch.float32) + 1.0
    return keys.expand(rows.probs.shape[0], len(index), rows.probs.shape[2], -1).clone()


def logits(model: Model, text: str = TEXT) -> torch.Tensor:
    with torch.no_grad():
        return model.hf(model.encode(text).input_ids).logits


def test_head_scale_alpha_one_is_bit_identical(tiny: Model) -> None:
    base = logits(tiny)
    with HeadScale(HEADS, alpha=1.0).applied(tiny):
        assert torch.equal(logits(tiny), base)


def test_head_scale_zero_changes_logits_and_restores(tiny: Model) -> None:
    base = logits(tiny)
    with HeadScale(HEADS, alpha=0.0).applied(tiny):
        assert (logits(tiny) - base).abs().max() > 1e-4
    assert torch.equal(logits(tiny), base)


def test_head_scale_zeroes_exactly_the_chosen_heads(tiny: Model) -> None:
    seen = {}

    def keep(layer, z):
        seen[layer] = z.clone()

    with HeadScale(HEADS, alpha=0.0).applied(tiny), head_output_hooks(tiny.hf, keep):
        logits(tiny)
    # The reader was installed after the scaling hook, so it sees the scaled z.
    assert torch.all(seen[1][..., 0, :] == 0)
    assert torch.all(seen[1][..., 1, :] != 0)


def test_mean_ablation_uses_the_reference(tiny: Model) -> None:
    reference = mean_head_outputs(tiny, ["abc", "hello there"])
    seen = {}
    with (
        HeadScale(HEADS, mode="mean", reference=reference).applied(tiny),
        head_output_hooks(tiny.hf, lambda layer, z: seen.setdefault(layer, z.clone())),
    ):
        logits(tiny)
    assert torch.allclose(seen[2][0, :, 3], reference[2, 3].expand(seen[2].shape[1], -1))
    with pytest.raises(ConfigError):
        HeadScale(HEADS, mode="mean")


def test_identity_edit_matches_sdpa(tiny: Model) -> None:
    base = logits(tiny)
    with AttentionEdit(HEADS, identity).applied(tiny):
        assert (logits(tiny) - base).abs().max() < 1e-6


@pytest.mark.parametrize("fn", [recency, None], ids=["recency", "uniform"])
def test_edited_rows_sum_to_one(tiny: Model, fn) -> None:
    edit = AttentionEdit(HEADS, fn) if fn else uniform_attention(HEADS)
    ids, mask = left_padded(tiny, [TEXT, "short"])
    recorder = Recorder([0, 1, 2])
    with edit.applied(tiny), attention_hooks(tiny.hf, recorder), torch.no_grad():
        tiny.hf(input_ids=ids, attention_mask=mask)
    for rows in recorder.seen:
        valid = rows.visible.any(-1)  # padded query rows see nothing and stay zero
        sums = rows.probs.sum(-1)
        assert torch.all((sums[valid[:, None].expand_as(sums)] - 1).abs() < 1e-5)
        assert torch.all(rows.probs.masked_select(~rows.visible[:, None]) == 0)
        for head in HEADS.heads_in(rows.layer):
            assert not torch.allclose(rows.probs[1, head], torch.zeros(()))


def test_uniform_rows_are_uniform(tiny: Model) -> None:
    recorder = Recorder([1])
    with uniform_attention(HEADS).applied(tiny), attention_hooks(tiny.hf, recorder):
        logits(tiny, "abcdef")
    row = recorder.seen[0].probs[0, 0, 3]
    assert torch.allclose(row[:4], torch.full((4,), 0.25)) and torch.all(row[4:] == 0)


def test_gqa_edit_touches_only_the_chosen_query_head(tiny: Model) -> None:
    # Heads 0 and 1 share KV head 0 (group of 2): editing head 0 must leave head 1's z.
    def record(store):
        return lambda layer, z: store.setdefault(layer, z.clone())

    plain, edited = {}, {}
    with head_output_hooks(tiny.hf, record(plain), layers=[0]):
        logits(tiny)
    with (
        uniform_attention(HeadSet(["L0H0"])).applied(tiny),
        head_output_hooks(tiny.hf, record(edited), layers=[0]),
    ):
        logits(tiny)
    assert torch.allclose(plain[0][..., 1, :], edited[0][..., 1, :], atol=1e-6)
    assert not torch.allclose(plain[0][..., 0, :], edited[0][..., 0, :], atol=1e-3)


@pytest.mark.parametrize(
    "intervention",
    [
        HeadScale(HEADS, alpha=0.0),
        HeadScale(HEADS, alpha=2.0),
        AttentionEdit(HEADS, recency),
        uniform_attention(HEADS),
    ],
    ids=["mask", "reinforce", "recency", "uniform"],
)
@pytest.mark.parametrize("texts", [[TEXT], [TEXT, "Hi", "a b c d"]], ids=["single", "padded"])
def test_cached_generation_equals_full_reforwards(tiny: Model, intervention, texts) -> None:
    ids, mask = left_padded(tiny, texts)
    with intervention.applied(tiny):
        cached = cached_greedy(tiny, ids, mask, steps=8)
        full = full_greedy(tiny, ids, mask, steps=8)
        edited = logits(tiny)
    assert torch.equal(cached, full)
    assert (edited - logits(tiny)).abs().max() > 1e-4  # the intervention does something


def test_hooks_removed_after_exception(tiny: Model) -> None:
    base = logits(tiny)
    implementation = tiny.hf.config._attn_implementation
    with (
        pytest.raises(RuntimeError, match="boom"),
        applied_all(tiny, HeadScale(HEADS, alpha=0.0), uniform_attention(HEADS)),
    ):
        raise RuntimeError("boom")
    assert not _ACTIVE
    assert tiny.hf.config._attn_implementation == implementation
    for layer in decoder_layers(tiny.hf):
        assert not layer.self_attn.o_proj._forward_pre_hooks
    assert torch.equal(logits(tiny), base)


def test_contexts_nest_and_compose(tiny: Model) -> None:
    with HeadScale(HEADS, alpha=0.25).applied(tiny):
        once = logits(tiny)
    with HeadScale(HEADS, alpha=0.5).applied(tiny):
        with HeadScale(HEADS, alpha=0.5).applied(tiny):
            twice = logits(tiny)
        inner_gone = logits(tiny)
    assert torch.allclose(once, twice, atol=1e-6)
    with HeadScale(HEADS, alpha=0.5).applied(tiny):
        assert torch.equal(inner_gone, logits(tiny))
    with applied_all(tiny, uniform_attention(HEADS), HeadScale(HEADS, alpha=0.0)):
        both = logits(tiny)
    with HeadScale(HEADS, alpha=0.0).applied(tiny):
        assert torch.allclose(both, logits(tiny), atol=1e-5)  # z = 0 hides the edit


def test_bad_phase_and_heads_raise(tiny: Model) -> None:
    with pytest.raises(ConfigError):
        AttentionEdit(HEADS, identity, phase="later")  # type: ignore[arg-type]
    with (
        pytest.raises(ValueError, match="does not exist"),
        HeadScale(HeadSet(["L9H0"])).applied(tiny),
    ):
        pass


def test_contexts_closed_out_of_order_leave_no_stale_hook(tiny: Model) -> None:
    base = logits(tiny)
    implementation = tiny.hf.config._attn_implementation
    with AttentionEdit(HEADS, recency).applied(tiny):
        second_alone = logits(tiny)
    first = uniform_attention(HEADS).applied(tiny)
    second = AttentionEdit(HEADS, recency).applied(tiny)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the outer context closes before the inner one
    assert torch.equal(logits(tiny), second_alone)  # the inner edit alone is still live
    second.__exit__(None, None, None)
    assert not _ACTIVE
    assert tiny.hf.config._attn_implementation == implementation
    assert torch.equal(logits(tiny), base)


def test_interventions_are_values_with_reproducible_records(tiny: Model) -> None:
    reference = mean_head_outputs(tiny, ["abc"])
    mean = HeadScale(HEADS, mode="mean", reference=reference)
    same = HeadScale(HEADS, mode="mean", reference=reference.clone())
    assert mean == same and hash(mean) == hash(same)  # raised on == before: tensor compare
    assert mean != HeadScale(HEADS, mode="mean", reference=reference + 1)
    assert HeadScale(HEADS, alpha=0) == HeadScale(HEADS, alpha=0.0)
    assert hash(HeadScale(HEADS, alpha=0)) == hash(HeadScale(HEADS, alpha=0.0))
    assert uniform_attention(HEADS) == uniform_attention(HEADS)  # a named edit, not a closure
    assert len({ACT(HEADS), ACT(HEADS.labels), ACT(HEADS, ActConfig(beta=0.5))}) == 2
    records = [
        mean.to_dict(),
        uniform_attention(HEADS, phase="decode").to_dict(),
        AttentionEdit(HEADS, recency).to_dict(),
        ACT(HEADS).to_dict(),
    ]
    text = json.dumps(records)  # plain JSON: no tensors, no memory addresses
    assert " at 0x" not in text and "uniform_rows" in text and "test_interventions:recency" in text
    assert records[0]["reference"] == tensor_digest(reference)


def test_plain_head_inputs_are_accepted() -> None:
    one = HeadSet(["L1H0"])
    assert HeadScale("L1H0").heads == one and HeadScale(["L1H0"]).heads == one
    assert HeadScale([(1, 0)]).heads == one and HeadScale((1, 0)).heads == one
    assert HeadSet("L1H0, L2H3") == HeadSet(["L1H0", "L2H3"])
    assert uniform_attention(["L1H0"]).heads == one and ACT("L1H0").heads == one
    with pytest.raises(InputError, match="Cannot read"):
        HeadSet([(1, 0, 2)])


def test_wrong_reference_shape_is_refused(tiny: Model) -> None:
    with pytest.raises(ConfigError, match="shape"):
        HeadScale("L2H3", mode="mean", reference=torch.zeros(2, 4, 16))  # no layer 2
    with pytest.raises(ConfigError, match="shape"):
        HeadScale("L0H0", mode="mean", reference=torch.zeros(3, 4))
    with pytest.raises(ConfigError, match="mode='mean'"):
        HeadScale("L0H0", reference=torch.zeros(3, 4, 16))
    wrong_width = HeadScale("L0H0", mode="mean", reference=torch.zeros(3, 4, 8))
    with pytest.raises(ConfigError, match=r"expected \(3, 4, 16\)"), wrong_width.applied(tiny):
        pass


def test_mean_head_outputs_takes_one_string_as_one_prompt(tiny: Model) -> None:
    assert torch.equal(
        mean_head_outputs(tiny, "hello there"), mean_head_outputs(tiny, ["hello there"])
    )
