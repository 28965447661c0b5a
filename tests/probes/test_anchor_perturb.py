"""The paper's perturbation experiment: content-word Jaccard, positions, forced tokens, resume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from pandas.testing import assert_frame_equal

from interp.effects import EffectsConfig
from interp.errors import InputError
from interp.generation import generate
from probes import anchor_perturb as perturb
from probes import anchors
from probes.anchor_traces import Trace
from tests.stops import Stop, count_items, logged, stop_after


def test_content_word_jaccard_by_hand() -> None:
    # S("The cat sat on the mat, then 2 cats ran.") = {cat, sat, mat, 2, cats, ran}
    # ("the", "on", "then" are function words); S("A cat sat on a hat and 2 dogs ran") =
    # {cat, sat, hat, 2, dogs, ran}. Shared: {cat, sat, 2, ran} = 4; union: 6 + 6 - 4 = 8;
    # Jaccard = 4 / 8 = 0.5.
    first = perturb.content_words("The cat sat on the mat, then 2 cats ran.")
    second = perturb.content_words("A cat sat on a hat and 2 dogs ran")
    assert first == {"cat", "sat", "mat", "2", "cats", "ran"}
    assert perturb.jaccard(first, second) == 0.5
    assert perturb.jaccard(set(), perturb.content_words("the of and")) == 1.0  # nothing differs
    assert perturb.jaccard({"cat"}, set()) == 0.0


def test_positions_are_the_highest_and_lowest_fai_with_a_full_rollout_after() -> None:
    # 8 response tokens at positions 10..17; rollout 2 leaves response positions 0..5
    # (each followed by at least 2 tokens). FAI: the 9.0 at response position 6 and the
    # NaN at 7 are out; among 0..5 the highest is 0.7 (position 3, the first of the two
    # 0.7s) and the lowest 0.05 (position 1).
    fai = [0.2, 0.05, 0.3, 0.7, 0.7, 0.1, 9.0, np.nan]
    rows = pd.DataFrame({"position": range(10, 18), "response_position": range(8), "fai": fai})
    chosen = perturb.choose_positions(rows, rollout=2)
    assert chosen is not None
    assert chosen["high"].position == 13 and chosen["low"].position == 11
    assert perturb.choose_positions(rows, rollout=7) is None  # one eligible token only
    flat = rows.assign(fai=0.5)
    assert perturb.choose_positions(flat, rollout=2) is None  # high and low coincide


def test_alternatives_are_the_top_k_other_than_the_original() -> None:
    # Logits by id: 0: 0.1, 1: 3.0, 2: 2.0, 3: 3.0, 4: -1.0. Descending, ties by the lower id:
    # 1, 3, 2, 0, 4. Without the original (1) the top 3 are 3, 2, 0; an original outside
    # the top (4) leaves the top 3 as they are: 1, 3, 2.
    logits = torch.tensor([0.1, 3.0, 2.0, 3.0, -1.0])
    assert perturb.alternatives(logits, original=1, k=3) == [3, 2, 0]
    assert perturb.alternatives(logits, original=4, k=3) == [1, 3, 2]


def _scored(tiny, seed: int, n: int = 3) -> tuple[list[Trace], anchors.AnchorResult]:
    rng = np.random.default_rng(seed)
    traces = [Trace(f"t{i}", tuple(int(x) for x in rng.integers(3, 259, 40)), 8) for i in range(n)]
    return traces, anchors.run(tiny, traces, anchors.AnchorConfig(h_lo=3, h_hi=15))


def _greedy(model, ids: list[int], steps: int) -> list[int]:
    """Greedy continuation by full forwards (no cache, no generation driver)."""
    ids = list(ids)
    for _ in range(steps):
        with torch.no_grad():
            ids.append(int(model.hf(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[-steps:]


def test_forced_token_is_the_kth_alternative_and_the_rollout_starts_from_it(
    tiny, monkeypatch
) -> None:
    traces, scored = _scored(tiny, 0, n=2)
    prompts = []

    def spy(model, contexts, config, **kwargs):
        prompts.append([list(c) for c in contexts])
        return generate(model, contexts, config, **kwargs)

    monkeypatch.setattr(perturb, "generate", spy)
    config = perturb.PerturbConfig(alternatives=3, rollout=3)
    result = perturb.run(tiny, traces, scored.tokens, config, EffectsConfig(n_boot=50))
    rows = result.per_item.data
    assert len(rows) == 2 * 2 * 3  # traces x (high, low) x alternatives
    (contexts,) = prompts  # the 4 positions' rollouts: one left-padded batch of 16 rows
    assert len(contexts) == 4 * 4
    for (name, _), mine in rows.groupby(["trace", "kind"]):
        trace = next(t for t in traces if t.name == name)
        at = int(mine.position.iloc[0])
        with torch.no_grad():
            logits = tiny.hf(torch.tensor([trace.ids[:at]])).logits[0, -1].numpy()
        ranked = [t for t in np.argsort(-logits, kind="stable") if t != trace.ids[at]]
        assert mine["rank"].tolist() == [1, 2, 3]
        assert mine.token_id.tolist() == [int(t) for t in ranked[:3]]
        # the original token, then the k alternatives, each forced at the position
        first = contexts.index([*trace.ids[:at], trace.ids[at]])
        forced = [trace.ids[at], *mine.token_id]
        assert contexts[first : first + 4] == [[*trace.ids[:at], t] for t in forced]
        for row in mine.itertuples():
            expected = _greedy(tiny, [*trace.ids[:at], row.token_id], 3)
            assert row.continuation == tiny.tokenizer.decode(expected, skip_special_tokens=True)
    eligible = scored.tokens.data.query("response_position < 32 - 3").groupby("trace").fai
    high = rows[rows.kind == "high"].groupby("trace").fai.first()
    low = rows[rows.kind == "low"].groupby("trace").fai.first()
    assert high.tolist() == eligible.max().loc[high.index].tolist()
    assert low.tolist() == eligible.min().loc[low.index].tolist()


def test_summary_pairs_traces_high_against_low(tiny) -> None:
    traces, scored = _scored(tiny, 2, n=3)
    config = perturb.PerturbConfig(alternatives=2, rollout=3)
    result = perturb.run(tiny, traces, scored.tokens, config, EffectsConfig(n_boot=50))
    rows, summary = result.per_item.data, result.effects.data
    assert summary.metric.tolist() == ["jaccard", "jaccard_trace"]
    means = rows.groupby(["trace", "kind"]).jaccard.mean().unstack()
    first = summary.iloc[0]
    assert first.baseline == pytest.approx(means["low"].mean())
    assert first.intervened == pytest.approx(means["high"].mean())
    assert first.worsened == int((means["high"] < means["low"]).sum())
    assert rows.jaccard.between(0, 1).all() and rows.jaccard_trace.between(0, 1).all()


def test_stopped_run_resumes_to_the_uninterrupted_one(tiny, tmp_path, monkeypatch) -> None:
    traces, scored = _scored(tiny, 1, n=3)
    config = perturb.PerturbConfig(alternatives=2, rollout=3, positions_per_batch=2)
    effects = EffectsConfig(n_boot=50)

    def run(**kwargs):
        return perturb.run(tiny, traces, scored.tokens, config, effects, **kwargs)

    once = run()
    with pytest.raises(Stop):
        run(progress=stop_after(2), folder=tmp_path)
    assert logged(tmp_path) == 2
    redone = count_items(monkeypatch, perturb, "_rollouts")
    resumed = run(folder=tmp_path)
    assert redone == [2, 2] and logged(tmp_path) == 6  # the 4 positions left, 2 batches
    assert_frame_equal(resumed.per_item.data, once.per_item.data, check_exact=True)
    assert_frame_equal(resumed.effects.data, once.effects.data, check_exact=True)
    with pytest.raises(InputError, match="another"):
        perturb.run(tiny, traces, scored.tokens, perturb.PerturbConfig(rollout=2), folder=tmp_path)


def test_traces_too_short_for_the_rollout_are_refused(tiny) -> None:
    traces, scored = _scored(tiny, 0, n=1)
    with pytest.raises(InputError, match="lower --rollout"):
        perturb.run(tiny, traces, scored.tokens, perturb.PerturbConfig(rollout=40))
