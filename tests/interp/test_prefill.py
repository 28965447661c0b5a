"""Prefix sharing: the tree's caches equal plain prefills, generation equals token for token."""

from __future__ import annotations

import pytest
import torch

from interp.errors import InputError
from interp.generation import GenerationConfig, generate
from interp.hooks import attention_hooks
from interp.prefill import PrefixTree, prefill


def _prompts() -> list[torch.Tensor]:
    """Prompts sharing prefixes at several depths, one a prefix of others, one duplicated;
    e + f and e + g branch after 25 tokens, a + b and a + c after 30 (one forward, ragged
    prefixes)."""
    generator = torch.Generator().manual_seed(2)
    sizes = (30, 12, 7, 20, 25, 10, 10)
    a, b, c, d, e, f, g = (torch.randint(3, 200, (n,), generator=generator) for n in sizes)
    abc = torch.cat([a, b, c])
    return [
        abc, torch.cat([a, b]), torch.cat([a, c]), a[:1], abc, torch.cat([a, b, c[:3]]), d,
        torch.cat([e, f]), torch.cat([e, g]),
    ]  # fmt: skip


def _distinct_prefix_tokens(prompts: list[torch.Tensor]) -> int:
    """Tokens a prefix tree computes: the distinct non-empty prefixes of the cached parts."""
    return len({tuple(p[: n + 1].tolist()) for p in prompts for n in range(len(p) - 1)})


def test_tree_cache_equals_plain_prefill_and_frees_what_is_served(tiny) -> None:
    prompts = _prompts()
    tree = PrefixTree(tiny, prompts)
    planned = tree.coverage()
    for rows in ([0, 1, 2, 3, 7, 8], [4, 5, 6]):  # the second batch reuses the first's prefixes
        batch = [prompts[i] for i in rows]
        shared, plain = tree.prefill(batch, rows), prefill(tiny, batch, rows)
        assert torch.equal(shared.batch.input_ids, plain.batch.input_ids)
        assert torch.equal(shared.batch.attention_mask, plain.batch.attention_mask)
        assert shared.rows == plain.rows == tuple(rows)
        real = plain.batch.attention_mask[:, :-1].bool()  # [row, pos] cached real tokens
        assert len(shared.cache.layers) == len(plain.cache.layers)
        for got, want in zip(shared.cache.layers, plain.cache.layers, strict=True):
            for name in ("keys", "values"):
                a, b = getattr(got, name), getattr(want, name)  # [row, kv_head, pos, d_head]
                assert a.shape == b.shape
                torch.testing.assert_close(
                    a.transpose(1, 2)[real], b.transpose(1, 2)[real], rtol=0, atol=1e-5
                )
                assert not a.transpose(1, 2)[~real].any()  # padding columns are zero
    stats = tree.stats
    assert stats.prompt_tokens == sum(len(p) - 1 for p in prompts)
    assert stats.prefilled_tokens == _distinct_prefix_tokens(prompts) < stats.prompt_tokens
    assert planned == (stats.prefilled_tokens, stats.prompt_tokens)
    nodes, stack = [], [tree.root]
    while stack:
        nodes.append(stack.pop())
        stack.extend(nodes[-1].children.values())
    assert all(node.kv is None for node in nodes if node is not tree.root)  # all freed
    again = tree.prefill(prompts[:1])  # served before: recomputed
    assert tree.stats.prefilled_tokens == stats.prefilled_tokens + len(prompts[0]) - 1
    assert again.cache.get_seq_length() == len(prompts[0]) - 1
    with pytest.raises(InputError, match="not in the tree"):
        tree.prefill([torch.arange(3, 12)])


class _DecodeRows:
    """Records every attention call with one query row (decode steps), as retrieval's hook."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, tuple[int, ...], list[float]]] = []

    def wants(self, layer: int, n_queries: int) -> bool:
        return n_queries == 1

    def __call__(self, rows) -> None:
        self.calls.append((rows.layer, tuple(rows.probs.shape), rows.probs.sum(-1).tolist()))


@pytest.mark.parametrize("batch_size", [1, 3, 9])
def test_shared_generation_equals_unshared_token_for_token(tiny, batch_size) -> None:
    prompts = _prompts()
    config = GenerationConfig(max_new_tokens=6)
    runs = {}
    for share in (False, True):
        hook, steps = _DecodeRows(), []
        with attention_hooks(tiny.hf, hook):
            out = generate(
                tiny,
                prompts,
                config,
                batch_size=batch_size,
                on_step=steps.append,
                share_prefix=share,
            )
        runs[share] = (out, hook.calls, steps)
    (plain, plain_calls, plain_steps), (shared, shared_calls, shared_steps) = runs[0], runs[1]
    for a, b in zip(plain, shared, strict=True):
        assert a.response_ids.tolist() == b.response_ids.tolist()
        assert a.finish_reason == b.finish_reason and torch.equal(a.prompt_ids, b.prompt_ids)
    # The hooks see exactly the same decode steps: layers, shapes (padding included).
    assert [c[:2] for c in shared_calls] == [c[:2] for c in plain_calls]
    assert [(s.rows, s.tokens.tolist(), s.padding.tolist()) for s in shared_steps] == [
        (s.rows, s.tokens.tolist(), s.padding.tolist()) for s in plain_steps
    ]
    for a, b in zip(plain_steps, shared_steps, strict=True):
        torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=1e-5)
