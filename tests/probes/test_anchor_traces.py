"""Trace files, shipped problems, generated traces and the causal check on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pandas.testing import assert_frame_equal

from interp.effects import EffectsConfig
from interp.errors import InputError
from interp.generation import GenerationConfig
from interp.hooks import attention_hooks
from probes import anchor_causal as causal
from probes import anchors
from probes.anchor_traces import Trace, generate_traces, load_problems, read_traces
from tests.stops import Stop, count_items, logged, stop_after


def _write(path, lines) -> str:
    path.write_text("\n".join(json.dumps(x) if not isinstance(x, str) else x for x in lines))
    return str(path)


def test_reads_text_and_id_traces(tiny, tmp_path) -> None:
    path = _write(
        tmp_path / "t.jsonl",
        [
            {"id": "one", "prompt": "2+2?", "response": "It is 4."},
            {"prompt_ids": [5, 6, 7], "response_ids": [8, 9]},
        ],
    )
    first, second = read_traces(path, tiny)
    assert first.name == "one" and first.n_prompt == 4 and first.n_response == 8
    assert second == Trace("line-2", (5, 6, 7, 8, 9), 3)


def test_a_runs_own_traces_read_back_as_they_were(tiny, tmp_path) -> None:
    traces = [Trace("math-00", (5, 6, 7, 8, 9), 3), Trace("logic-1", (4, 5, 6), 1)]
    path = _write(tmp_path / "traces.jsonl", [t.to_dict() for t in traces])
    assert read_traces(path, tiny) == traces


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"prompt": "q"}, "t.jsonl:2: missing field 'response'"),
        ({"response": "a"}, "t.jsonl:2: missing field 'prompt'"),
        ({"prompt": "q", "response": ""}, "t.jsonl:2: empty response"),
        ({"prompt_ids": [4], "response_ids": []}, "t.jsonl:2: empty response"),
        ({"prompt_ids": [4]}, "t.jsonl:2: missing field 'response_ids'"),
        ({"prompt_ids": [4], "response_ids": [9999]}, "t.jsonl:2: 'response_ids' must be"),
        ({"ids": [4, 5], "n_prompt": "1"}, "t.jsonl:2: 'n_prompt' must be a non-negative"),
        ({"ids": [4, 5], "n_prompt": -1}, "t.jsonl:2: 'n_prompt' must be a non-negative"),
        ({"ids": [4, 5], "n_prompt": 2}, "t.jsonl:2: empty response"),
        ({"ids": [4, 5], "n_prompt": 0}, "t.jsonl:2: empty prompt"),
        ("[1, 2]", "t.jsonl:2: expected a JSON object"),
        ("{not json", "t.jsonl:2: not valid JSON"),
    ],
)
def test_bad_trace_lines_name_the_line(tiny, tmp_path, line, message) -> None:
    path = _write(tmp_path / "t.jsonl", [{"prompt": "ok", "response": "fine"}, line])
    with pytest.raises(InputError, match=message) as caught:
        read_traces(path, tiny)
    assert "\n" not in str(caught.value)


def test_shipped_problems_and_generated_traces(tiny) -> None:
    problems = load_problems()
    assert len(problems) >= 40 and len({p.id for p in problems}) == len(problems)
    config = GenerationConfig(max_new_tokens=6, temperature=0.7, seed=3, stop_at_eos=False)
    traces = generate_traces(tiny, problems[:3], config, chat=False, batch_size=2)
    again = generate_traces(tiny, problems[:3], config, chat=False, batch_size=3)
    assert traces == again  # seeded, independent of batching
    assert [t.n_response for t in traces] == [6, 6, 6]
    question = tiny.tokenizer(problems[0].question)["input_ids"]
    assert list(traces[0].ids[: traces[0].n_prompt])[-len(question) :] == question


def test_block_keys_zeroes_later_attention_and_keeps_rows_distributions(tiny) -> None:
    ids = torch.arange(3, 23)[None].repeat(2, 1)
    edit = causal.block_keys(anchors.HeadSet(["L1H0", "L1H3"]), [[4, 9], []])
    seen = []

    class Spy:
        def wants(self, layer, n_queries):
            return layer == 1

        def __call__(self, rows):
            seen.append(rows.probs.clone())

    with edit.applied(tiny), attention_hooks(tiny.hf, Spy()), torch.no_grad():
        tiny.hf(ids)
    probs, free = torch.cat(seen, dim=2)  # [head, query, key] of each row
    assert probs[[0, 3]][:, 5:, 4].abs().max() == 0 and probs[[0, 3]][:, 10:, 9].abs().max() == 0
    assert probs[1, 5:, 4].min() > 0 and free[[0, 3]][:, 5:, 4].min() > 0  # others untouched
    torch.testing.assert_close(probs.sum(-1), torch.ones(4, 20), atol=1e-5, rtol=0)
    with edit.identity().applied(tiny), attention_hooks(tiny.hf, Spy()), torch.no_grad():
        seen.clear()
        tiny.hf(ids)
    assert torch.equal(torch.cat(seen, dim=2)[1], free)  # a row with nothing blocked


def _later_logprob(model, ids: tuple[int, ...], first_blocked: int) -> float:
    """Mean log-prob of the tokens after `first_blocked`, from one plain forward."""
    with torch.no_grad():
        logits = model.hf(torch.tensor([ids])).logits[0, :-1].float()
    logprob = logits.log_softmax(-1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
    return float(logprob[torch.arange(1, len(ids)) > first_blocked].mean())


def test_causal_check_rows_hold_their_values(tiny) -> None:
    rng = np.random.default_rng(0)
    traces = [Trace(f"t{i}", tuple(int(x) for x in rng.integers(3, 259, 40)), 8) for i in range(3)]
    config = anchors.AnchorConfig(h_lo=3, h_hi=15)
    result = anchors.run(tiny, traces, config)
    glob = anchors.heads_with_role(result.heads, "global")
    checked = causal.run(
        tiny, traces, result.tokens, glob, causal.CausalConfig(n_seeds=2, continuation=4)
    )
    rows = checked.per_item.data
    assert len(rows) == 3 * 3
    assert_frame_equal(
        checked.effects.data, causal.summarize(rows, result.tokens.provenance).effects.data
    )
    summary = checked.effects.data
    assert (summary.warnings.str.startswith("interval from 3 items")).all()
    first_draws = rows.drop_duplicates(["trace", "arm"])  # one random draw each
    one_seed = causal.summarize(first_draws, result.tokens.provenance).effects.data
    assert one_seed.warnings.str.contains("one seed").tolist() == [False, False, *[True] * 4]
    assert not summary.warnings.str.contains("one seed").any()
    assert summary.metric.tolist() == [
        "later_logprob",
        "jaccard",
        "later_logprob",
        "jaccard",
        "logprob_change",
        "jaccard",
    ]
    assert np.isfinite(summary.difference).all()
    table = rows
    assert (table.logprob_change != 0).all()
    np.testing.assert_allclose(
        table.logprob_change, table.blocked_logprob - table.baseline_logprob, atol=1e-6
    )
    assert table.jaccard.between(0, 1).all()
    for trace in traces:
        mine = table[table.trace == trace.name]
        anchors_here = result.tokens.data.query("trace == @trace.name and is_anchor").position
        assert (mine.n_blocked == len(anchors_here)).all()  # random arms block as many keys
        # The unedited row (nothing blocked, the edit's kernel) is the plain forward's.
        first = int(anchors_here.min())
        assert mine.baseline_logprob.iloc[0] == pytest.approx(
            _later_logprob(tiny, trace.ids, first), abs=1e-4
        )
    by_comparison = summary.set_index(["comparison", "metric"]).difference
    anchor_rows = table[table.arm == "anchors"]
    assert by_comparison["anchors blocked vs none", "later_logprob"] == pytest.approx(
        anchor_rows.logprob_change.mean(), abs=1e-6
    )


def test_causal_check_stopped_from_python_resumes_to_one_run(tiny, tmp_path, monkeypatch) -> None:
    rng = np.random.default_rng(1)
    traces = [Trace(f"t{i}", tuple(int(x) for x in rng.integers(3, 259, 30)), 6) for i in range(3)]
    scored = anchors.run(tiny, traces, anchors.AnchorConfig(h_lo=3, h_hi=12))
    glob = anchors.heads_with_role(scored.heads, "global")
    config, effects = causal.CausalConfig(n_seeds=2, continuation=3), EffectsConfig(n_boot=50)

    def run(**kwargs):
        return causal.run(tiny, traces, scored.tokens, glob, config, effects, **kwargs)

    once = run()
    with pytest.raises(Stop):
        run(progress=stop_after(1), folder=tmp_path)
    assert logged(tmp_path) == 1
    forwards = count_items(monkeypatch, causal, "_logprobs")
    continued = count_items(monkeypatch, causal, "_continuations")
    resumed = run(folder=tmp_path)
    # 2 traces' log-probs and 3 continuations were left, each one batch of its 4 arms' rows
    # (no block, anchors, 2 seeds)
    assert forwards == [4] * 2 and continued == [4] * 3 and logged(tmp_path) == 6
    assert_frame_equal(resumed.per_item.data, once.per_item.data, check_exact=True)
    assert_frame_equal(resumed.effects.data, once.effects.data, check_exact=True)
    with pytest.raises(InputError, match="another causal"):
        causal.run(
            tiny, traces, scored.tokens, glob, causal.CausalConfig(n_seeds=1), folder=tmp_path
        )
