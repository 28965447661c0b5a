"""Activations for SAEs: recorded through the hook points, batched, reduced, checked."""

import pytest
import torch

from interp.activations import collect_heads, collect_tokens
from interp.errors import InputError
from interp.heads import Head
from interp.hook_points import record
from tests.tiny import tiny_llama

HOOK = "blocks.1.hook_resid_post"
TEXTS = ["hello world", "a much longer text than the first", "hi", "the cat sat", "xyz"]


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


def test_collect_tokens_equals_record_on_the_same_batches(model):
    whole = collect_tokens(model, TEXTS, HOOK, batch_size=len(TEXTS))
    encoding = model.encode(TEXTS)
    direct = record(model, encoding, [HOOK])[HOOK][encoding.attention_mask.bool()]
    assert whole.values.shape == (sum(encoding.lengths), 64)
    assert torch.equal(whole.values, direct)
    one_by_one = collect_tokens(model, TEXTS, HOOK, batch_size=1)
    singles = [record(model, model.encode(text), [HOOK])[HOOK][0] for text in TEXTS]
    assert torch.equal(one_by_one.values, torch.cat(singles))
    assert (whole.hook, whole.layers, whole.reduction) == (HOOK, (1,), "tokens")
    assert whole.weights_hash == model.weights_hash and whole.n_texts == len(TEXTS)
    assert whole == collect_tokens(model, TEXTS, HOOK, batch_size=len(TEXTS))
    assert whole != collect_tokens(model, TEXTS[:4], HOOK)


def test_collect_heads_is_each_heads_output_averaged_over_real_positions(model):
    heads = collect_heads(model, TEXTS, layers=[0, 2], batch_size=2)
    assert heads.values.shape == (len(TEXTS), 2 * 4, 64)
    assert heads.heads[:5] == (Head(0, 0), Head(0, 1), Head(0, 2), Head(0, 3), Head(2, 0))
    for row, text in enumerate(TEXTS):  # alone, unpadded: a plain mean over positions
        names = ["blocks.0.attn.hook_result", "blocks.2.attn.hook_result", "blocks.2.hook_attn_out"]
        alone = record(model, model.encode(text), names)
        expected = torch.cat([alone[name][0].mean(0) for name in names[:2]])
        torch.testing.assert_close(heads.values[row], expected, rtol=1e-5, atol=1e-6)
        # the heads' outputs add up to the attention output (Llama's o_proj has no bias)
        attn_out = alone["blocks.2.hook_attn_out"][0].mean(0)
        torch.testing.assert_close(heads.values[row, 4:].sum(0), attn_out, rtol=1e-4, atol=1e-6)


def test_select_keeps_some_texts_of_head_outputs_and_records_which(model):
    heads = collect_heads(model, TEXTS)
    picked = heads.select([3, 1])
    assert torch.equal(picked.values, heads.values[[3, 1]]) and picked.n_texts == 2
    hashes = {heads.data_hash, picked.data_hash, heads.select([1, 3]).data_hash}
    assert len(hashes) == 3
    with pytest.raises(InputError):
        collect_tokens(model, TEXTS, HOOK).select([0])


def test_collection_reports_progress(model):
    calls = []
    collect_heads(model, TEXTS, batch_size=2, progress=lambda done, total: calls.append(done))
    assert calls == [2, 4, 5]


@pytest.mark.parametrize(
    "hook",
    ["blocks.1.hook_resid_mid", "blocks.1.attn.hook_z", "resid_post", "blocks.3.hook_mlp_out"],
)
def test_bad_token_hooks_are_one_line_input_errors(model, hook):
    with pytest.raises(InputError) as error:
        collect_tokens(model, TEXTS, hook)
    assert "\n" not in str(error.value)


def test_bad_layers_and_empty_datasets_are_input_errors(model):
    with pytest.raises(InputError, match="out of range"):
        collect_heads(model, TEXTS, layers=[0, 3])
    with pytest.raises(InputError, match="empty"):
        collect_tokens(model, [], HOOK)
    with pytest.raises(InputError, match="empty"):
        collect_heads(model, [])
    with pytest.raises(InputError):
        collect_tokens(model, ["fine", ""], HOOK)


def test_skip_first_leaves_out_each_texts_first_token(model):
    every = collect_tokens(model, TEXTS, HOOK, batch_size=2)
    later = collect_tokens(model, TEXTS, HOOK, batch_size=2, skip_first=True)
    lengths = model.encode(TEXTS).lengths
    starts = torch.tensor([0, *lengths[:-1]]).cumsum(0)
    keep = torch.ones(len(every.values), dtype=torch.bool)
    keep[starts] = False
    assert later.skip_first and not every.skip_first
    assert torch.equal(later.values, every.values[keep])
