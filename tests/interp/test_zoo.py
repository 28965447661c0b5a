"""The model zoo: every check on a tiny random model of each decoder architecture.

Each cell compares the toolkit with plain transformers or plain torch on the same model:
recorded patterns against eager `output_attentions` on a left-padded batch, HeadScale(0)
against zeroing the head's slice of the output projection's input, identities against the
plain forward (bit-exact), cached greedy generation under edits against re-forwards, the
q/k/v split against what the model hands its attention function, retrieval scores against
the needle hits of eager argmaxes over plain greedy decoding, and activation (attribution)
patching against swapping a head's slice of the output projection's input (its difference
times the autograd gradient there).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor
from transformers import AttentionInterface, GPTNeoXJapaneseConfig, GPTNeoXJapaneseForCausalLM
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

from circuits.attribution import attribution_patching
from circuits.circuit_task import CircuitTask
from circuits.patching import activation_patching
from circuits.tiny_task import tiny_task
from interp.encoding import Encoding
from interp.errors import UnsupportedModelError
from interp.explicit_attention import AttentionRows
from interp.heads import Head, HeadSet, RowHeads
from interp.hook_points import HeadPatch, patched, record
from interp.hooks import attention_hooks, head_result_hooks, qkv_hooks
from interp.interventions import (
    ACT,
    ActConfig,
    AttentionEdit,
    HeadScale,
    mean_head_outputs,
    uniform_attention,
)
from interp.interventions.attention_edit import unchanged_rows
from interp.layouts import get_path
from interp.models import Model
from interp.tiny_models import byte_tokenizer
from probes import sinks
from probes.niah import NeedleTest
from probes.retrieval import RetrievalConfig, score_tests
from tests.interp.helpers import (
    Recorder,
    cached_greedy,
    eager_forward,
    full_greedy,
    left_padded,
    whole,
)
from tests.interp.zoo_models import (
    DOCS_END,
    DOCS_START,
    LATENT,
    MLP_ADDS_RESIDUAL,
    OUT_PROJ,
    QK_CHANGED,
    ZOO,
    build,
    support_table,
)

TEXTS = ["The cat sat on the mat.", "Hi there"]  # longer than the 4-key windows
HEADS = HeadSet(["L0H1", "L1H0"])
ARCHITECTURES = sorted(ZOO)
# Experts multiply the tokens routed to them as one matrix, so a row's floats depend on what
# the other rows route there (measured: 1e-8, HeadScale included): not exact per row.
BATCH_DEPENDENT = frozenset({"olmoe", "qwen3_moe"})


@cache
def model(name: str) -> Model:
    return build(name)


def batch(m: Model) -> dict[str, Tensor]:
    return dict(m.encode(TEXTS))


@torch.no_grad()
def logits(m: Model, **inputs: Any) -> Tensor:
    return m.hf(**(inputs or batch(m))).logits


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_patterns_equal_eager_on_a_left_padded_batch(name: str) -> None:
    m = model(name)
    recorder = Recorder(list(range(m.geometry.n_layers)))
    inputs = batch(m)
    with attention_hooks(m.hf, recorder):
        logits(m)
    own = m.hf.config._attn_implementation
    m.hf.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            eager = m.hf(**inputs, output_attentions=True).attentions
    finally:
        m.hf.set_attn_implementation(own)
    valid = inputs["attention_mask"].bool()  # padded query rows are left out
    for layer, expected in enumerate(eager):
        probs, _ = whole([r for r in recorder.seen if r.layer == layer])
        assert probs.shape == expected.shape
        rows = valid[:, None, :, None].expand_as(probs)
        assert torch.allclose(probs[rows], expected[rows].float(), atol=1e-5), layer


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_head_scale_zero_equals_zeroing_the_heads_slice(name: str) -> None:
    m = model(name)
    layer, head = 1, m.geometry.n_heads - 1
    proj = get_path(m.hf, OUT_PROJ[name].format(layer))

    def zero_slice(_module: Any, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        z = args[0].clone()
        width = z.shape[-1] // m.geometry.n_heads
        z[..., head * width : (head + 1) * width] = 0
        return (z, *args[1:])

    handle = proj.register_forward_pre_hook(zero_slice)
    try:
        expected = logits(m)
    finally:
        handle.remove()
    with HeadScale([(layer, head)], alpha=0.0).applied(m):
        got = logits(m)
    assert torch.equal(got, expected)
    assert not torch.equal(got, logits(m))


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_identities_equal_the_plain_forward(name: str) -> None:
    m = model(name)
    plain = logits(m)
    with HeadScale(HEADS, alpha=1.0).applied(m):
        assert torch.equal(logits(m), plain)
    # Decode-only edit on a prefill: no layer wanted, each runs the model's own kernel.
    with AttentionEdit(HEADS, unchanged_rows, phase="decode").applied(m):
        assert torch.equal(logits(m), plain)
    with AttentionEdit(HEADS, unchanged_rows, renormalize=False).applied(m):
        unchanged = logits(m)
    with ACT(HEADS, ActConfig(beta=1.0)).applied(m):
        calibrated = logits(m)
    assert torch.equal(calibrated, unchanged)  # ACT's kernel and rows, edited by nothing
    # Explicit kernel vs the model's, at real tokens: a padded query row sees no key, which
    # the explicit kernel outputs as 0 and an eager kernel as a uniform row.
    valid = batch(m)["attention_mask"].bool()
    assert torch.allclose(calibrated[valid], plain[valid], atol=1e-5)


def _halve_first_key(rows: AttentionRows, index: Tensor) -> Tensor:
    """An edit that reads key positions: half the attention on position 0 (renormalised)."""
    probs = rows.probs[:, index].clone()
    probs[..., 0] *= 0.5
    return probs


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_cached_generation_under_edits_equals_reforwards(name: str) -> None:
    """Past a sliding window the cache drops its first keys: an edit of key position 0
    must still find position 0 there (which the window hides), not the window's first key."""
    m = model(name)
    ids, mask = left_padded(m, TEXTS)
    by_position = AttentionEdit(HEADS, _halve_first_key)
    for edit in (HeadScale(HEADS, alpha=0.0), uniform_attention(HEADS), by_position):
        with edit.applied(m):
            cached = cached_greedy(m, ids, mask, steps=5)
            full = full_greedy(m, ids, mask, steps=5)
        assert torch.equal(cached, full), edit.to_dict()
    # ACT keeps the sinks it found at the prompt's positions through decoding, past a window.
    with AttentionEdit(HEADS, unchanged_rows, renormalize=False).applied(m):
        unchanged = cached_greedy(m, ids, mask, steps=5)
    with ACT(HEADS, ActConfig(beta=1.0)).applied(m):
        assert torch.equal(cached_greedy(m, ids, mask, steps=5), unchanged)


def _capture(store: dict[int, tuple[Tensor, ...]]) -> Any:
    def attention(module: Any, query: Tensor, key: Tensor, value: Tensor, *args: Any, **kw: Any):
        store[module.layer_idx] = (query, key, value)
        eager = sys.modules[type(module).__module__].eager_attention_forward
        return eager(module, query, key, value, *args, **kw)

    return attention


# Where inline attention (adapted by interp.attention_backend.inline_attention) takes its
# per-head q, k, v: GPT-Neo's `_attn(q, k, v, mask)` receives them, BLOOM's
# `_reshape(fused)` returns them ([batch, head, pos, d_head]).
_INLINE_SPLIT = {"gpt_neo": ("attn.attention", "_attn"), "bloom": ("self_attention", "_reshape")}


def _capture_inline(
    m: Model, name: str, store: dict[int, tuple[Tensor, ...]], inputs: dict[str, Tensor]
) -> None:
    path, method = _INLINE_SPLIT[name]
    attentions = [get_path(layer, path) for layer in m.hf.transformer.h]

    def wrap(layer: int, own: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            out = own(*args, **kwargs)
            store[layer] = tuple(args[:3]) if method == "_attn" else out
            return out

        return wrapped

    for layer, attention in enumerate(attentions):
        setattr(attention, method, wrap(layer, getattr(attention, method)))
    try:
        logits(m, **inputs)
    finally:
        for attention in attentions:
            delattr(attention, method)  # the class's method again


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_qkv_split_matches_what_the_model_hands_its_attention(name: str) -> None:
    m = model(name)
    one_token = {"input_ids": torch.tensor([[7]])}  # position 0: rotary is the identity
    read: dict[tuple[int, str], Tensor] = {}

    def keep(layer: int, kind: str, x: Tensor) -> None:
        read[layer, kind] = x[0, 0]  # [head, d_head]

    if name in LATENT:
        refused = pytest.raises(UnsupportedModelError, match="projection")
        with refused, qkv_hooks(m.hf, keep):
            logits(m, **one_token)
        return
    with qkv_hooks(m.hf, keep):
        logits(m, **one_token)
    handed: dict[int, tuple[Tensor, ...]] = {}
    if name in _INLINE_SPLIT:
        _capture_inline(m, name, handed, one_token)
    else:
        AttentionInterface.register("zoo_capture", _capture(handed))
        ALL_MASK_ATTENTION_FUNCTIONS.register("zoo_capture", eager_mask)
        own = m.hf.config._attn_implementation
        m.hf.set_attn_implementation("zoo_capture")
        try:
            logits(m, **one_token)
        finally:
            m.hf.set_attn_implementation(own)
    kinds = ["v"] if name in QK_CHANGED else ["q", "k", "v"]
    for layer in range(m.geometry.n_layers):
        for index, kind in enumerate(["q", "k", "v"]):
            if kind in kinds:
                expected = handed[layer][index][0, :, 0]  # [batch, head, pos, d] -> [head, d]
                assert torch.equal(read[layer, kind], expected), (layer, kind)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_mean_ablation_equals_replacing_the_heads_slice(name: str) -> None:
    m = model(name)
    reference = mean_head_outputs(m, TEXTS)
    layer, head = 1, 0
    assert reference.shape == (m.geometry.n_layers, m.geometry.n_heads, m.geometry.d_head)
    proj = get_path(m.hf, OUT_PROJ[name].format(layer))
    assert m.geometry.n_heads * m.geometry.d_head == _in_features(proj)

    def put_mean(_module: Any, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        z = args[0].clone()
        width = m.geometry.d_head
        z[..., head * width : (head + 1) * width] = reference[layer, head]
        return (z, *args[1:])

    handle = proj.register_forward_pre_hook(put_mean)
    try:
        expected = logits(m)
    finally:
        handle.remove()
    with HeadScale([(layer, head)], mode="mean", reference=reference).applied(m):
        assert torch.equal(logits(m), expected)


def _in_features(proj: Any) -> int:
    """Input width of a projection: nn.Linear's [out, in] weight or GPT-2's Conv1D [in, out]."""
    return proj.in_features if hasattr(proj, "in_features") else proj.weight.shape[0]


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_head_results_sum_to_the_attention_output(name: str) -> None:
    m = model(name)
    results: list[Tensor] = []
    outputs: list[Tensor] = []
    proj = get_path(m.hf, OUT_PROJ[name].format(0))
    handle = proj.register_forward_hook(lambda _m, _a, out: outputs.append(out))
    try:
        with head_result_hooks(m.hf, lambda _layer, r: results.append(r), layers=[0]):
            logits(m)
    finally:
        handle.remove()
    (result,), (output,) = results, outputs
    assert result.shape[-2:] == (m.geometry.n_heads, m.geometry.d_model)
    bias = getattr(proj, "bias", None)
    total = result.sum(-2) + (0 if bias is None else bias)
    assert torch.allclose(total, output, atol=1e-6)


def test_latent_attention_geometry_reads_the_value_and_query_key_widths() -> None:
    config = model("deepseek_v3").hf.config
    geometry = model("deepseek_v3").geometry
    assert (geometry.d_head, geometry.d_query_key) == (config.v_head_dim, config.qk_head_dim)
    assert config.head_dim != config.v_head_dim  # head_dim is the rotary part only
    assert model("llama").geometry.d_query_key == model("llama").geometry.d_head


def _recorded(m: Model) -> list[Tensor]:
    recorder = Recorder(list(range(m.geometry.n_layers)))
    with attention_hooks(m.hf, recorder):
        logits(m)
    return [whole([r for r in recorder.seen if r.layer == layer])[0] for layer in recorder.layers]


def test_gemma2_softcap_shapes_the_recorded_patterns() -> None:
    """At Gemma-2's cap of 50 a tiny model's scores are barely capped; at 0.02 they are."""
    capped = build("gemma2")
    for layer in capped.hf.model.layers:
        layer.self_attn.attn_logit_softcapping = 0.02
    assert capped.hf.config._attn_implementation == "eager"  # transformers' default for Gemma-2
    with torch.no_grad():
        eager = capped.hf(**batch(capped), output_attentions=True).attentions
    valid = batch(capped)["attention_mask"].bool()[:, None, :, None]
    for got, expected, loose in zip(
        _recorded(capped), eager, _recorded(model("gemma2")), strict=True
    ):
        rows = valid.expand_as(got)
        assert torch.allclose(got[rows], expected[rows], atol=1e-5)
        assert not torch.allclose(got[rows], loose[rows], atol=1e-3)


def test_an_attention_argument_the_kernel_lacks_is_refused_in_one_line() -> None:
    m = model("llama")
    packed = {"cu_seq_lens_q": torch.tensor([0, 4])}
    with attention_hooks(m.hf, Recorder([0])), pytest.raises(UnsupportedModelError) as refused:
        logits(m, **batch(m), **packed)
    message = str(refused.value)
    assert "'cu_seq_lens_q'" in message and "llama" in message and "\n" not in message


def test_the_docs_table_is_the_zoos() -> None:
    """docs/models.md lists what this file checks (`python -m tests.interp.zoo_models`)."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "models.md").read_text()
    assert f"{DOCS_START}\n{support_table()}\n{DOCS_END}" in docs


CORRUPT = ["The dog sat on the rug.", "Yo there"]  # same lengths as TEXTS


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_head_patching_equals_swapping_the_heads_slice(name: str) -> None:
    m = model(name)
    layer, head = 1, m.geometry.n_heads - 1
    point = f"blocks.{layer}.attn.hook_z"
    source = record(m, m.encode(CORRUPT), [point])[point]  # [batch, pos, head, d_head]
    proj = get_path(m.hf, OUT_PROJ[name].format(layer))

    def swap(_module: Any, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        z = args[0].clone()
        width = m.geometry.d_head
        z[0, :, head * width : (head + 1) * width] = source[0, :, head]
        return (z, *args[1:])

    handle = proj.register_forward_pre_hook(swap)
    try:
        expected = logits(m)
    finally:
        handle.remove()
    with patched(m.hf, {point: source}, [HeadPatch(row=0, layer=layer, head=head)]):
        got = logits(m)
    assert torch.equal(got, expected)
    assert not torch.equal(got, logits(m))


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_every_hook_point_records_with_the_geometrys_shapes(name: str) -> None:
    m = model(name)
    g = m.geometry
    inputs = m.encode(TEXTS)
    b, p = inputs.input_ids.shape
    shapes = {
        "hook_resid_pre": (b, p, g.d_model),
        "hook_resid_post": (b, p, g.d_model),
        "hook_attn_out": (b, p, g.d_model),
        "hook_mlp_out": (b, p, g.d_model),
        "attn.hook_z": (b, p, g.n_heads, g.d_head),
        "attn.hook_result": (b, p, g.n_heads, g.d_model),
        "attn.hook_pattern": (b, g.n_heads, p, p),
        "attn.hook_q": (b, p, g.n_heads, g.d_query_key),
        "attn.hook_k": (b, p, g.n_kv_heads, g.d_query_key),
        "attn.hook_v": (b, p, g.n_kv_heads, g.d_head),
    }
    refused = {
        "hook_mlp_out": name in MLP_ADDS_RESIDUAL,
        **dict.fromkeys(["attn.hook_q", "attn.hook_k", "attn.hook_v"], name in LATENT),
    }
    for point, shape in shapes.items():
        full = f"blocks.1.{point}"
        if refused.get(point):
            with pytest.raises(UnsupportedModelError):
                record(m, inputs, [full])
            continue
        assert tuple(record(m, inputs, [full])[full].shape) == shape, point
    # hook_attn_out is the output projection's output: BLOOM adds the residual after it.
    out: list[Tensor] = []
    proj = get_path(m.hf, OUT_PROJ[name].format(1))
    handle = proj.register_forward_hook(lambda _m, _a, o: out.append(o))
    try:
        attn_out = record(m, inputs, ["blocks.1.hook_attn_out"])["blocks.1.hook_attn_out"]
    finally:
        handle.remove()
    assert torch.equal(attn_out, out[0])


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_sink_shares_equal_those_of_eager_patterns(name: str) -> None:
    m = model(name)
    text = TEXTS[0]
    table = sinks.run(m, text).heads.data
    own = m.hf.config._attn_implementation
    m.hf.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            eager = m.hf(**m.encode(text), output_attentions=True).attentions
    finally:
        m.hf.set_attn_implementation(own)
    column_sums = torch.stack([a[0].float().sum(1) for a in eager])  # [layer, head, key]
    seen_by = torch.stack([(a[0, 0] > 0).sum(0).float() for a in eager])  # [layer, key]
    first_row = torch.stack([a[0, :, 0, 0].float() for a in eager])  # [layer, head]: A_00
    expected = sinks.sink_statistics(column_sums, sinks.SinkConfig(), seen_by, first_row)
    for column in ("score", "first_token_share", "hidden_sink_share"):
        got = torch.tensor(table[column].to_numpy(), dtype=torch.float32)
        want = torch.tensor(expected[column].ravel(), dtype=torch.float32)
        assert torch.allclose(got, want, atol=1e-5), column


def test_attention_outside_the_interface_is_refused_in_one_line() -> None:
    """GPT-NeoX-Japanese computes attention inline and has no adapter: no silent no-op."""
    torch.manual_seed(0)
    config = GPTNeoXJapaneseConfig(
        vocab_size=260, hidden_size=32, num_hidden_layers=2, num_attention_heads=4
    )
    m = Model.from_hf(GPTNeoXJapaneseForCausalLM(config), byte_tokenizer())
    with pytest.raises(UnsupportedModelError) as refused, attention_hooks(m.hf, Recorder([0])):
        logits(m)
    message = str(refused.value)
    assert "attention interface" in message and "\n" not in message


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_per_row_attention_edits_equal_each_rows_own_set(name: str) -> None:
    """Row 1 edits no head of layer 0: it gets the model's own kernel there, as alone."""
    m = model(name)
    rows = RowHeads([HEADS, HeadSet("L1H0")])
    if name == "bloom":  # its attention updates the cache inside the kernel: refused
        edit = uniform_attention(rows)
        with pytest.raises(UnsupportedModelError, match="BLOOM"), edit.applied(m):
            logits(m)
        return
    with uniform_attention(rows).applied(m):
        per_row = logits(m)
    for row, heads in enumerate(rows):
        with uniform_attention(heads).applied(m):
            alone = logits(m)[row]
        if name in BATCH_DEPENDENT:
            assert torch.allclose(per_row[row], alone, atol=1e-6), row
        else:
            assert torch.equal(per_row[row], alone), row


# Retrieval scoring: a prompt of random bytes then the model's own greedy continuation, so a
# model that falls into a loop generates tokens its prompt holds. The needle span is the
# continuation's second half: the first half holds the same tokens outside the span.
SEED_BYTES, CONTINUATION, DECODED = 4, 24, 6


def _response(m: Model, prompt: Tensor) -> Tensor:
    """Plain greedy tokens after `prompt` by re-forwards, cut by Wu et al.'s stop rule:
    before an end-of-sequence token, after a newline."""
    tokens = full_greedy(m, prompt[None], torch.ones_like(prompt)[None], DECODED)[0].tolist()
    for step, token in enumerate(tokens):
        if token == m.tokenizer.eos_token_id:
            return torch.tensor(tokens[:step])
        if token in m.tokenizer.encode("\n"):
            return torch.tensor(tokens[: step + 1])
    return torch.tensor(tokens)


def _eager_hits(m: Model, prompt: Tensor, response: Tensor, span: tuple[int, int]) -> Tensor:
    """[step, layer, head] whether the head hits: its eager argmax key, in the row of the
    query that chose the step's token, lies in the span and holds that token."""
    sequence = torch.cat([prompt, response])
    attentions = eager_forward(m, {"input_ids": sequence[None, :-1]}).attentions
    first = len(prompt) - 1  # the query row that chose response[0]
    argmax = torch.stack([a[0, :, first:].argmax(-1) for a in attentions]).permute(2, 0, 1)
    start, stop = span
    in_span = (argmax >= start) & (argmax < stop)
    return in_span & (sequence[argmax] == response[:, None, None])


def _needle_test(m: Model, seed: int) -> tuple[NeedleTest, Tensor, Tensor]:
    """(test, plain greedy response, eager hits) of the copying prompt drawn with `seed`."""
    start = torch.randint(3, 259, (1, SEED_BYTES), generator=torch.Generator().manual_seed(seed))
    continuation = cached_greedy(m, start, torch.ones_like(start), CONTINUATION)
    prompt = torch.cat([start, continuation], 1)[0]
    span = (SEED_BYTES + CONTINUATION // 2, len(prompt))
    response = _response(m, prompt)
    test = NeedleTest(0, len(prompt), 1.0, prompt, span, span, "")
    return test, response, _eager_hits(m, prompt, response, span)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_retrieval_scores_equal_eager_argmax_hits(name: str) -> None:
    m = model(name)
    for seed in range(8):  # a random model copies by chance: the first prompt where it does
        test, response, hits = _needle_test(m, seed)
        if hits.any():
            break
    assert hits.any(), "no head hits: the comparison would cover only zero scores"
    start, stop = test.answer_span
    span_ids = test.input_ids[start:stop].tolist()
    n_layers, n_heads = hits.shape[1:]
    distinct = [
        [len(set(response[hits[:, i, j]].tolist())) for j in range(n_heads)]
        for i in range(n_layers)
    ]
    expected = {
        "events": hits.sum(0).double().numpy() / len(span_ids),
        "set": np.array(distinct, dtype=np.float64) / len(set(span_ids)),
    }
    for count, want in expected.items():
        config = RetrievalConfig(max_new_tokens=DECODED, count=count)
        ((scores, text),) = score_tests(m, [test], config)
        assert text == m.tokenizer.decode(response, skip_special_tokens=True)
        np.testing.assert_allclose(scores, want, rtol=0, atol=1e-12, err_msg=count)


# Activation and attribution patching on a small clean/corrupted task, logit difference.
def _patched_heads(m: Model) -> list[Head]:
    return [Head(0, 0), Head(1, m.geometry.n_heads - 1)]


@contextmanager
def _projection_pre_hook(m: Model, name: str, layer: int, hook: Any) -> Iterator[None]:
    handle = get_path(m.hf, OUT_PROJ[name].format(layer)).register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _slice(m: Model, head: Head) -> slice:
    """The head's columns of its output projection's input."""
    return slice(head.head * m.geometry.d_head, (head.head + 1) * m.geometry.d_head)


def _mean_logit_difference(m: Model, task: CircuitTask, inputs: Encoding) -> Tensor:
    last = m.hf(**inputs).logits[:, -1]
    rows = torch.arange(len(task))
    return (last[rows, task.answer_ids] - last[rows, task.wrong_ids]).mean()


def _head_input(m: Model, name: str, head: Head, inputs: Encoding) -> Tensor:
    """The head's slice of its output projection's input, [batch, pos, d_head]."""
    seen: list[Tensor] = []
    with _projection_pre_hook(m, name, head.layer, lambda _m, a: seen.append(a[0].clone())):
        logits(m, **inputs)
    return seen[0][..., _slice(m, head)]


@torch.no_grad()
def _swapped(m: Model, name: str, task: CircuitTask, head: Head, source: Tensor) -> float:
    """Mean clean logit difference with the head's slice replaced by `source` everywhere."""

    def swap(_module: Any, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        z = args[0].clone()
        z[..., _slice(m, head)] = source
        return (z, *args[1:])

    with _projection_pre_hook(m, name, head.layer, swap):
        return float(_mean_logit_difference(m, task, task.clean))


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_activation_patching_equals_swapping_the_heads_slice(name: str) -> None:
    m = model(name)
    task = tiny_task(m, n=3)
    heads = _patched_heads(m)
    table = activation_patching(m, task, heads=heads).data
    with torch.no_grad():
        clean = float(_mean_logit_difference(m, task, task.clean))
        corrupt = float(_mean_logit_difference(m, task, task.corrupted))
    effects = []
    for row, head in zip(table.itertuples(), heads, strict=True):
        patched_ld = _swapped(m, name, task, head, _head_input(m, name, head, task.corrupted))
        assert (row.layer, row.head) == (head.layer, head.head)
        assert row.logit_difference == pytest.approx(patched_ld, abs=1e-5)
        assert row.score == pytest.approx((patched_ld - clean) / (corrupt - clean), abs=1e-4)
        effects.append(abs(patched_ld - clean))
    assert max(effects) > 1e-4  # a patching that changed nothing would fail


def _input_and_gradient(
    m: Model, name: str, task: CircuitTask, layer: int
) -> tuple[Tensor, Tensor]:
    """The clean output projection input of `layer` and d(mean LD)/d(it), by autograd."""
    leaves: list[Tensor] = []

    def leaf(_module: Any, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        leaves.append(args[0].detach().requires_grad_(True))
        return (leaves[-1], *args[1:])

    with _projection_pre_hook(m, name, layer, leaf):
        (grad,) = torch.autograd.grad(_mean_logit_difference(m, task, task.clean), leaves)
    return leaves[0].detach(), grad


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_attribution_patching_equals_the_gradient_times_the_difference(name: str) -> None:
    m = model(name)
    task = tiny_task(m, n=3)
    table = attribution_patching(m, task).positions.data.set_index(["layer", "head"])
    largest = 0.0
    for head in _patched_heads(m):
        clean, grad = _input_and_gradient(m, name, task, head.layer)
        part = _slice(m, head)
        difference = _head_input(m, name, head, task.corrupted) - clean[..., part]
        # The gradient of the mean over prompts: the mean of each prompt's estimate, [pos].
        want = (difference * grad[..., part]).sum(-1).sum(0).double().numpy()
        got = table.loc[(head.layer, head.head)].sort_values("position")["delta"].to_numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
        largest = max(largest, float(abs(want).max()))
    assert largest > 1e-6  # a zero estimate would fail
