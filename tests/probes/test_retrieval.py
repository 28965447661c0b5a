"""Retrieval heads: hand-made hit rows, the NIAH builder, the fast path, the masking test."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import torch

from interp.effects import EffectsConfig, compare
from interp.errors import ConfigError, InputError
from interp.generation import GenerationConfig, generate
from interp.heads import HeadSet, RowHeads
from interp.hooks import attention_hooks
from interp.interventions import HeadScale, uniform_attention
from interp.interventions.base import applied_all
from interp.results import HeadScores, Provenance
from probes import niah, retrieval
from probes import retrieval_ablation as ablation

HAYSTACK = " ".join(f"Sentence number {i} is about a quiet harbour town." for i in range(80))
NEEDLE = niah.Needle(
    "The secret password is silver pelican.", "What is the secret password?", "silver pelican"
)


def _provenance() -> Provenance:
    return Provenance("m", "w", "retrieval", {}, "h", 1)


# ---------------------------------------------------------------------------------------
# Pure hit computation on hand-made rows


def test_a_hit_needs_the_span_and_the_generated_token() -> None:
    ids = torch.tensor([5, 6, 7, 8, 9, 7])  # span (1, 4): tokens 6 7 8
    argmaxes = torch.tensor([[[2, 5], [0, 3]]])  # one step generating 7: [step, layer, head]
    # L0H0 looks at position 2 (token 7, in span); L0H1 at 5 (token 7, outside the span);
    # L1H0 at 0 (outside); L1H1 at 3 (in span, but token 8 is not the generated 7).
    events = retrieval.needle_scores(argmaxes, [7], ids, (1, 4), "events")
    np.testing.assert_allclose(events, [[1 / 3, 0.0], [0.0, 0.0]])


def test_set_counts_distinct_tokens_events_count_every_hit() -> None:
    ids = torch.tensor([1, 10, 11, 10, 12, 2])  # span (1, 5): tokens 10 11 10 12
    # Three steps generate 10, 10, 11. Head 0 copies each time; head 1 looks at BOS.
    argmaxes = torch.tensor([[[1, 0]], [[3, 0]], [[2, 0]]])  # [step, layer=1, head=2]
    tokens = [10, 10, 11]
    sets = retrieval.needle_scores(argmaxes, tokens, ids, (1, 5), "set")
    events = retrieval.needle_scores(argmaxes, tokens, ids, (1, 5), "events")
    # distinct ids hit {10, 11} of the span's distinct {10, 11, 12}; events: 3 hits / 4 tokens
    np.testing.assert_allclose(sets, [[2 / 3, 0.0]])
    np.testing.assert_allclose(events, [[3 / 4, 0.0]])


def test_a_perfect_copy_of_a_span_repeating_a_token_scores_one() -> None:
    ids = torch.tensor([1, 10, 11, 10, 2])  # span (1, 4): tokens 10 11 10, a set of 2
    argmaxes = torch.tensor([[[1]], [[2]], [[3]]])  # generates 10 11 10 copying each
    sets = retrieval.needle_scores(argmaxes, [10, 11, 10], ids, (1, 4), "set")
    np.testing.assert_allclose(sets, [[1.0]])


def test_scores_ignore_wrong_token_and_empty_generation() -> None:
    ids = torch.tensor([1, 10, 11, 2])
    argmaxes = torch.tensor([[[1, 2]]])
    np.testing.assert_allclose(
        retrieval.needle_scores(argmaxes, [11], ids, (1, 3), "set"), [[0.0, 0.5]]
    )
    empty = torch.zeros(0, 2, 3, dtype=torch.long)  # nothing generated: every head scores 0
    for count in ("set", "events"):
        scores = retrieval.needle_scores(empty, [], ids, (1, 3), count)
        np.testing.assert_array_equal(scores, np.zeros((2, 3)))


def test_aggregate_filters_failed_tests() -> None:
    rows = pd.DataFrame(
        {
            "success": [True, False],
            "head_scores": [[0.4, 0.0], [1.0, 1.0]],
        }
    )
    config = retrieval.RetrievalConfig()
    kept = retrieval.aggregate(rows, 1, 2, config, _provenance()).scores.data
    assert kept.score.tolist() == [0.4, 0.0] and kept.n_tests.tolist() == [1, 1]
    assert kept.retrieval_head.tolist() == [True, False]
    zero = retrieval.RetrievalConfig(average="failed_as_zero")
    assert retrieval.aggregate(rows, 1, 2, zero, _provenance()).scores.data.score.tolist() == [
        0.2,
        0.0,
    ]


def test_rouge1_recall() -> None:
    assert niah.rouge1_recall("silver pelican", "It is Silver, pelican!") == 1.0
    assert niah.rouge1_recall("silver pelican", "a pelican") == 0.5
    assert niah.rouge1_recall("silver pelican", "") == 0.0
    # Wu et al.'s scorer (rouge_score, use_stemmer=True) stems: an inflected answer counts.
    assert niah.rouge1_recall("red ferries", "the red ferry") == 1.0
    assert niah.rouge1_recall("forty_seven", "forty seven") == 1.0  # ASCII words only


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="count"):
        retrieval.RetrievalConfig(count="tokens")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        retrieval.RetrievalConfig(threshold=2.0)
    config = retrieval.RetrievalConfig(lengths=(100, 200), span="needle")
    assert retrieval.RetrievalConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="masking"):
        ablation.AblationConfig(masking="mean")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# NIAH builder


def test_needle_at_sentence_boundary_and_spans(tiny) -> None:
    tests = niah.build_tests(tiny, [NEEDLE], HAYSTACK, [200, 300], 4, 8)
    assert len(tests) == 8
    for test in tests:
        assert abs(len(test.input_ids) - test.length) <= 3
        text = tiny.tokenizer.decode(test.input_ids)
        start, stop = test.needle_span
        assert tiny.tokenizer.decode(test.input_ids[start:stop]) == NEEDLE.needle
        a, b = test.answer_span
        assert start <= a < b <= stop
        assert tiny.tokenizer.decode(test.input_ids[a:b]) == "silver pelican"
        before = tiny.tokenizer.decode(test.input_ids[:start])
        assert before == "" or before.endswith(". ")
        assert text.endswith("Answer:")
    shallow, deep = tests[0].needle_span[0], tests[3].needle_span[0]
    assert shallow == 0 < deep


def test_reference_length_rule_leaves_200_tokens_for_the_question(tiny) -> None:
    """Wu et al.'s code: haystack + needle = length - 200 tokens, then the question.

    The byte tokenizer has one token per character: the context is the prompt minus the
    question part "\n\n" + QUESTION and the BOS token.
    """
    query = "\n\n" + niah.QUESTION.format(question=NEEDLE.question)
    tests = niah.build_tests(tiny, [NEEDLE], HAYSTACK, [300, 400], 2, 8, length_rule="reference")
    for test in tests:
        context = len(test.input_ids) - len(query) - 1
        assert abs(context - (test.length - 200)) <= 3
        start, stop = test.needle_span
        assert tiny.tokenizer.decode(test.input_ids[start:stop]) == NEEDLE.needle
    with pytest.raises(InputError, match="length_rule"):
        niah.build_tests(tiny, [NEEDLE], HAYSTACK, [300], 2, 8, length_rule="whole")  # type: ignore[arg-type]


def test_too_long_requests_are_refused(tiny) -> None:
    with pytest.raises(InputError, match="context"):
        niah.build_tests(tiny, [NEEDLE], HAYSTACK, [500], 2, 50)  # 500 + 50 > 512
    with pytest.raises(InputError, match=r"no room for a prompt.*max_new_tokens < 512"):
        niah.build_tests(tiny, [NEEDLE], HAYSTACK, [100], 2, 10**12)  # never a negative advice
    with pytest.raises(InputError, match="haystack"):
        niah.build_tests(tiny, [NEEDLE], "Short. Text.", [200], 2, 8)
    with pytest.raises(InputError, match="does not occur"):
        niah.Needle("A fact.", "Which?", "missing")


def test_user_files_and_shipped_sets(tmp_path) -> None:
    path = tmp_path / "needles.jsonl"
    path.write_text(json.dumps({"needle": "X is 3.", "question": "X?", "answer": "3"}) + "\n")
    assert niah.load_needles(path) == [niah.Needle("X is 3.", "X?", "3")]
    (tmp_path / "bad.jsonl").write_text('{"needle": "x"}\n')
    with pytest.raises(InputError, match=r"bad\.jsonl:1"):
        niah.load_needles(tmp_path / "bad.jsonl")
    assert len(niah.load_needles()) >= 5
    assert len(niah.load_haystack().split()) > 6000


# ---------------------------------------------------------------------------------------
# Fast path on the tiny model


def test_hook_argmax_matches_eager_attention_in_a_padded_batch(tiny) -> None:
    tests = niah.build_tests(tiny, [NEEDLE], HAYSTACK, [150, 190], 1, 6)
    assert len(tests[0].input_ids) != len(tests[1].input_ids)  # the batch is padded
    recorder = retrieval._Argmaxes(tiny.geometry.n_layers)
    config = GenerationConfig(max_new_tokens=6)
    with attention_hooks(tiny.hf, recorder.hook):
        out = generate(tiny, [t.input_ids for t in tests], config, on_step=recorder)
    tiny.hf.set_attn_implementation("eager")
    for index, generation in enumerate(out):  # each row alone, all attention at once
        full = generation.token_ids[:-1]
        with torch.no_grad():
            attentions = tiny.hf(full[None], output_attentions=True).attentions
        rows = torch.stack([a[0] for a in attentions])  # [layer, head, query, key]
        first = generation.boundary - 1
        eager = rows[:, :, first : first + len(generation.response_ids)].argmax(-1)
        assert torch.equal(recorder.of(index), eager.permute(2, 0, 1))
    tiny.hf.set_attn_implementation("sdpa")


def _copying_tests(tiny) -> list[niah.NeedleTest]:
    """Prompts that repeat the model's own continuation, so its heads hit the span."""
    generator = torch.Generator().manual_seed(5)
    tests = []
    for index, n in enumerate((60, 45, 52)):
        seed = torch.randint(3, 259, (n,), generator=generator)
        config = GenerationConfig(max_new_tokens=8)
        continuation = generate(tiny, seed, config)[0].response_ids.tolist()
        ids = torch.cat([seed, torch.tensor(continuation * 4)])
        tests.append(niah.NeedleTest(index, n, 0.5, ids, (0, len(ids)), (n, len(ids)), "x"))
    return tests


# Computed with the batch-1 decode loop that retrieval had before the generation driver.
_BEFORE_DRIVER = {
    "set": [{0: 1, 2: 1, 3: 1}, {3: 1, 4: 1, 5: 1, 10: 1}, {}],
    "events": [{0: 2, 2: 1, 3: 7}, {3: 1, 4: 1, 5: 1, 10: 1}, {}],
}


@pytest.mark.parametrize("count", ["set", "events"])
def test_batched_scores_equal_batch_one_and_the_decode_loop_before(tiny, count) -> None:
    tests = _copying_tests(tiny)  # 92, 77 and 84 tokens: padded batches
    config = retrieval.RetrievalConfig(max_new_tokens=10, average="all", count=count)
    alone = retrieval.run(tiny, tests, config, batch_size=1, share_prefix=False)
    for size in (2, 3):
        batched = retrieval.run(tiny, tests, config, batch_size=size)
        assert batched.scores.data.equals(alone.scores.data)
        assert batched.tests.data.equals(alone.tests.data)
    for test, scores, expected in zip(
        tests, alone.tests.data.head_scores, _BEFORE_DRIVER[count], strict=True
    ):
        start, stop = test.answer_span
        span = test.input_ids[start:stop].tolist()
        n_span = len(set(span)) if count == "set" else len(span)  # k as a set for "set"
        assert {i: v for i, v in enumerate(scores) if v} == {
            i: c / n_span for i, c in expected.items()
        }


def test_prefix_shared_scores_equal_unshared_batch_one(tiny) -> None:
    # Copying tests whose prompts share 40 tokens, then diverge (lengths 85 to 101).
    generator = torch.Generator().manual_seed(7)
    common = torch.randint(3, 259, (40,), generator=generator)
    tests = []
    for index, n in enumerate((5, 9, 13, 9)):
        seed = torch.cat([common, torch.randint(3, 259, (n,), generator=generator)])
        continuation = generate(tiny, seed, GenerationConfig(max_new_tokens=8))[0].response_ids
        ids = torch.cat([seed, continuation.repeat(4)])
        tests.append(niah.NeedleTest(index, n, 0.5, ids, (0, len(ids)), (len(seed), len(ids)), "x"))
    tiny.hf.generation_config.eos_token_id = int(tests[1].input_ids[-3])  # test 1 stops early
    tree = niah.shared_prefixes(tiny, tests)
    tree.prefill([t.input_ids for t in tests])
    assert tree.stats.prefilled_tokens <= tree.stats.prompt_tokens - 3 * 40  # shared once
    config = retrieval.RetrievalConfig(max_new_tokens=10, average="all")
    alone = retrieval.run(tiny, tests, config, batch_size=1, share_prefix=False)
    assert np.concatenate(alone.tests.data.head_scores.to_list()).any()  # heads hit
    assert alone.tests.data.response.str.len().nunique() > 1  # rows end at different steps
    for size in (1, 2, 4):
        shared = retrieval.run(tiny, tests, config, batch_size=size)
        assert shared.scores.data.equals(alone.scores.data)
        assert shared.tests.data.equals(alone.tests.data)


def test_run_is_deterministic(tiny) -> None:
    tests = niah.build_tests(tiny, [NEEDLE], HAYSTACK, [160, 200], 2, 5)
    config = retrieval.RetrievalConfig(max_new_tokens=5, average="all", span="needle")
    first = retrieval.run(tiny, tests, config)
    second = retrieval.run(tiny, tests, config)
    assert first.scores.data.equals(second.scores.data)
    assert first.tests.data.equals(second.tests.data)
    assert len(first.scores) == tiny.geometry.n_layers * tiny.geometry.n_heads


def test_ablation_conditions_and_shared_cache(tiny) -> None:
    tests = niah.build_tests(tiny, [NEEDLE], HAYSTACK, [150], 2, 5)
    scores = np.arange(12, dtype=float).reshape(3, 4) / 20  # L2H3 best; 2 heads > 0.45
    table = retrieval.HeadScores.from_matrix(scores, _provenance())
    config = ablation.AblationConfig(ks=(0, 2, 4), n_seeds=2, max_new_tokens=5, threshold=0.45)
    result = ablation.run_ablation(tiny, tests, table, config)
    rows = result.tests.data
    assert set(rows.condition) == {"none", "top", "random"}
    assert len(rows) == len(tests) * (1 + 2 * (1 + 2))
    top2 = rows[(rows.condition == "top") & (rows.k == 2)].heads.iloc[0]
    assert top2 == "L2H2,L2H3"
    randoms = rows[rows.condition == "random"].heads
    assert not any(h in labels for labels in randoms for h in ("L2H2", "L2H3"))
    # Every condition decodes a copy of the shared prompt cache: the unmasked response equals
    # fresh decoding.
    fresh = generate(tiny, tests[0].input_ids, niah.decoding(config.max_new_tokens))[0]
    assert rows.response.iloc[0] == fresh.text
    summary = result.summary.data
    assert set(summary.columns) >= {
        "k",
        "top_k",
        "top_k_ci_low",
        "top_k_ci_high",
        "random_mean",
        "random_mean_ci_low",
        "random_median",
        "random_min",
    }
    again = ablation.run_ablation(tiny, tests, table, config)
    for name in ("tests", "effects", "summary"):  # seeded draws and intervals
        assert getattr(again, name).data.equals(getattr(result, name).data), name


def test_masks_are_the_per_row_interventions_and_uniform_runs_every_layer_explicit(tiny) -> None:
    tests = niah.build_tests(tiny, [NEEDLE], HAYSTACK, [150], 1, 8) * 3
    batch = tiny.encode([tiny.tokenizer.decode(t.input_ids) for t in tests])
    heads = RowHeads(["L1H0,L2H3", HeadSet(), "L0H1"])
    everywhere = uniform_attention(tiny.geometry.all_heads()).identity()
    cases = {  # each row alone: its own heads (the K = 0 identity of "uniform" included)
        "zero": lambda h: HeadScale(h, alpha=0.0).applied(tiny),
        "uniform": lambda h: applied_all(tiny, everywhere, uniform_attention(h)),
    }
    with torch.no_grad():
        plain = tiny.hf(**batch).logits[:, -1]
        for masking, alone_under in cases.items():
            config = ablation.AblationConfig(masking=masking, positions="all")
            with ablation.masked(tiny, heads, config):
                edited = tiny.hf(**batch).logits[:, -1]
            assert (edited[0] - plain[0]).abs().max() > 1e-4
            for row, chosen in enumerate(heads):
                with alone_under(chosen):
                    alone = tiny.hf(**batch).logits[row, -1]
                assert torch.equal(edited[row], alone), (masking, row)
        with ablation.masked(tiny, RowHeads([HeadSet()] * 3), ablation.AblationConfig()):
            assert torch.equal(tiny.hf(**batch).logits[:, -1], plain)
        uniform = ablation.AblationConfig(masking="uniform")
        with ablation.masked(tiny, RowHeads([HeadSet()] * 3), uniform):
            baseline = tiny.hf(**batch).logits[:, -1]
        with everywhere.applied(tiny):  # K = 0 under "uniform": the explicit identity
            assert torch.equal(baseline, tiny.hf(**batch).logits[:, -1])
        assert not torch.equal(baseline, plain)  # not SDPA's rounding


# Responses of the batch-1 decode loop from before the generation driver (sha256 prefix).
_ABLATION_BEFORE_DRIVER = {
    ("zero", "decode", "per_test"): "db8f78233a034da4",
    ("uniform", "all", "per_test"): "2ca521bf88a3c6d4",
    ("zero", "all", "per_seed"): "5dc13e9c5bafb39c",
}


@pytest.mark.parametrize("options", list(_ABLATION_BEFORE_DRIVER))
def test_batched_ablation_equals_batch_one_and_the_decode_loop_before(tiny, options) -> None:
    tests = niah.build_tests(tiny, [NEEDLE], HAYSTACK, [150, 170], 2, 6)  # padded batches
    scores = retrieval.HeadScores.from_matrix(
        np.arange(12, dtype=float).reshape(3, 4) / 20, _provenance()
    )
    masking, positions, draw = options
    config = ablation.AblationConfig(
        ks=(0, 2, 4), n_seeds=2, max_new_tokens=6, threshold=0.45, masking=masking,
        positions=positions, random_draw=draw,
    )  # fmt: skip
    effects = EffectsConfig(n_boot=200)
    alone = ablation.run_ablation(
        tiny, tests, scores, config, effects=effects, batch_size=1, share_prefix=False
    )
    batched = ablation.run_ablation(tiny, tests, scores, config, effects=effects, batch_size=4)
    for name in ("tests", "curve", "effects", "summary"):
        assert getattr(batched, name).data.equals(getattr(alone, name).data), name
    digest = hashlib.sha256("\x00".join(alone.tests.data.response).encode()).hexdigest()
    assert digest[:16] == _ABLATION_BEFORE_DRIVER[options]


def test_cli_score_resume_and_ablate(tiny, tmp_path) -> None:
    from typer.testing import CliRunner

    from interp.cli import app

    folder = tmp_path / "tiny"
    tiny.hf.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    common = ["--model", str(folder), "--lengths", "250", "--depths", "2", "--no-static"]
    out = tmp_path / "score"
    args = ["score", "retrieval", *common, "--max-new-tokens", "4", "--out", str(out)]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert len((out / "work.jsonl").read_text().splitlines()) == 12  # 6 needles x 2 depths
    saved = retrieval.RetrievalResult.load(out)
    again = CliRunner().invoke(app, args)  # resumes: nothing left to run, same tables
    assert again.exit_code == 0 and "12 of 12 tests already done" in again.output
    assert len((out / "work.jsonl").read_text().splitlines()) == 12
    assert retrieval.RetrievalResult.load(out).tests.data.equals(saved.tests.data)
    small = [*args[:-1], str(tmp_path / "small"), "--batch-size", "5"]  # 3 batches
    assert CliRunner().invoke(app, small).exit_code == 0
    smaller = retrieval.RetrievalResult.load(tmp_path / "small")
    assert smaller.tests.data.equals(saved.tests.data)
    assert smaller.scores.data.equals(saved.scores.data)
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"scores.parquet", "scores.csv", "tests.parquet", "work.jsonl"} <= set(manifest["files"])
    ablate = [
        "ablate", "retrieval", *common, "--scores", str(out / "scores.parquet"),
        "--ks", "0,2", "--seeds", "2", "--max-new-tokens", "4", "--out", str(tmp_path / "abl"),
    ]  # fmt: skip
    result = CliRunner().invoke(app, ablate)
    assert result.exit_code == 0, result.output
    saved = ablation.AblationResult.load(tmp_path / "abl")
    assert set(saved.effects.data.k) == {2} and len(saved.summary) == 2
    assert saved.provenance.config["effects"]["method"] == "BCa"
    assert (tmp_path / "abl" / "summary.csv").is_file()
    assert (tmp_path / "abl" / "figures" / "ablation_curve.html").is_file()
    too_long = CliRunner().invoke(app, ["score", "retrieval", *common[:2], "--lengths", "600"])
    assert too_long.exit_code == 2 and "context" in too_long.output
    bad_rule = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "r"), "--length-rule", "x"])
    assert bad_rule.exit_code == 2 and "Invalid value for '--length-rule'" in bad_rule.output
    (out / "manifest.json").unlink()  # killed while writing its tables, before the manifest
    resumed = CliRunner().invoke(app, args)
    assert resumed.exit_code == 0 and "12 of 12 tests already done" in resumed.output
    for path in out.rglob("*"):  # as if killed before the end: only the work log is left
        if path.is_file() and path.name not in ("work.jsonl", "run.json", ".lock"):
            path.unlink()
    other = tmp_path / "other.jsonl"
    other.write_text(
        json.dumps({"needle": "The word is plum.", "question": "Word?", "answer": "plum"})
    )
    changed = CliRunner().invoke(app, [*args, "--needles", str(other)])
    assert changed.exit_code == 2 and "another inputs_hash" in changed.output
    uniform = CliRunner().invoke(app, [*args, "--count", "events"])
    assert uniform.exit_code == 2 and "another config" in uniform.output
    assert len((out / "work.jsonl").read_text().splitlines()) == 12  # nothing mixed in


def test_answer_match_gives_no_credit_to_function_words() -> None:
    answer = "in a yellow tent near Falcon Ridge"
    assert niah.answer_match(answer, "He was found in a Yellow tent near Falcon Ridge.") == 1.0
    assert niah.answer_match(answer, "He was found in the bakery.") == 0.0
    assert niah.rouge1_recall(answer, "He was found in the bakery.") > 0
    rows = pd.DataFrame(
        {"needle": [0, 0], "length": [9, 9], "depth": [0.0, 0.0], "answer": ["red cat"] * 2,
         "condition": ["none", "top"], "k": [0, 1], "seed": [0, 0],
         "response": ["A red cat.", "A cat."]}
    )  # fmt: skip
    by_match = _summarize(rows, "match").summary.data
    by_rouge = _summarize(rows, "rouge1").summary.data
    assert by_match.top_k.tolist() == [100.0, 0.0] and by_rouge.top_k.tolist() == [100.0, 50.0]


def _summarize(rows: pd.DataFrame, metric: str) -> ablation.AblationResult:
    config = ablation.AblationConfig(metric=metric, ks=(1,))  # type: ignore[arg-type]
    return ablation.summarize(rows, config, _provenance(), EffectsConfig(n_boot=200))


def _grid_rows() -> pd.DataFrame:
    """4 tests: the baseline answers all, top-1 masking breaks 3, random-1 (2 seeds) one."""
    rows = []
    for needle in range(4):
        key = {"needle": needle, "length": 100, "depth": 0.5, "answer": "red cat"}
        rows.append({**key, "condition": "none", "k": 0, "seed": 0, "response": "red cat"})
        top = "red cat" if needle == 0 else "a dog"
        rows.append({**key, "condition": "top", "k": 1, "seed": 0, "response": top})
        for seed in range(2):
            hit = "a dog" if (needle, seed) == (1, 0) else "red cat"
            rows.append({**key, "condition": "random", "k": 1, "seed": seed, "response": hit})
    return pd.DataFrame(rows)


def test_ablation_effects_pair_every_k_with_the_baseline(tmp_path) -> None:
    result = _summarize(_grid_rows(), "match")
    effects = result.effects.data.set_index("condition")
    config = EffectsConfig(n_boot=200)
    top = compare(np.ones(4), np.array([1.0, 0, 0, 0]), "answer_match_scores", config)
    random = compare(np.ones(4), np.array([1.0, 0.5, 1, 1]), "answer_match_scores", config)
    for condition, expected in (("top", top), ("random", random)):
        row = effects.loc[condition]
        for column in ("n", "baseline", "intervened", "difference", "ci_low", "ci_high"):
            assert row[column] == expected[column], (condition, column)
    summary = result.summary.data.set_index("k")
    assert summary.loc[1, "top_k_difference"] == -75.0
    assert summary.loc[1, "top_k_ci_low"] == 100 * top["ci_low"]
    assert summary.loc[1, "random_mean"] == 87.5
    assert summary.loc[1, "random_mean_ci_high"] == 100 * random["ci_high"]
    assert (summary.loc[1, "random_min"], summary.loc[1, "random_max"]) == (75.0, 100.0)
    few = "interval from 4 items (fewer than 10)"
    assert summary.loc[1, "warnings"] == f"random: {few}; top: {few}"
    one_seed = _summarize(_grid_rows().query("seed == 0"), "match").summary.data.set_index("k")
    assert one_seed.warnings.tolist() == [
        "",
        f"random: {few}; one seed: no spread over seeds; top: {few}",
    ]
    assert ablation.AblationResult.load(tmp_path) == result if result.save(tmp_path) else False
    with pytest.raises(InputError, match="K = 0"):
        _summarize(_grid_rows().query("condition != 'none'"), "match")


def test_retrieval_result_round_trips(tiny, tmp_path) -> None:
    tests = niah.build_tests(tiny, [NEEDLE], HAYSTACK, [160], 2, 3)
    result = retrieval.run(tiny, tests, retrieval.RetrievalConfig(max_new_tokens=3))
    assert isinstance(result.tests.data.head_scores.iloc[0], list)
    result.save(tmp_path)
    assert retrieval.RetrievalResult.load(tmp_path) == result


def test_one_haystack_path_is_one_file(tmp_path) -> None:
    path = tmp_path / "hay.txt"
    path.write_text("Some prose.")
    assert niah.load_haystack(str(path)) == niah.load_haystack(path) == "Some prose."


def test_run_niah_and_its_ablation_are_what_the_commands_write(tiny, tmp_path) -> None:
    from typer.testing import CliRunner

    from interp.cli import app
    from interp.models import load_model
    from tests.written import assert_tables_written

    folder = tmp_path / "tiny"
    tiny.hf.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    common = ["--model", str(folder), "--lengths", "250", "--depths", "2", "--no-static"]
    common += ["--max-new-tokens", "4"]
    score = CliRunner().invoke(app, ["score", "retrieval", *common, "--out", str(tmp_path / "s")])
    assert score.exit_code == 0, score.output
    ablate = [
        "ablate", "retrieval", *common, "--scores", str(tmp_path / "s" / "scores.parquet"),
        "--ks", "0,2", "--seeds", "1", "--n-boot", "50", "--out", str(tmp_path / "a"),
    ]  # fmt: skip
    masked = CliRunner().invoke(app, ablate)
    assert masked.exit_code == 0, masked.output
    model = load_model(str(folder))
    config = retrieval.RetrievalConfig(lengths=(250,), n_depths=2, max_new_tokens=4)
    scored = retrieval.run_niah(model, config)
    tables = {"scores": scored.scores, "tests": scored.tests}
    assert_tables_written(tables, tmp_path / "s", tmp_path / "py-s")
    assert (
        scored.retrieval_heads().label.tolist()
        == json.loads((tmp_path / "s" / "manifest.json").read_text())["retrieval_heads"]
    )
    result = ablation.run_niah_ablation(
        model,
        retrieval.load_scores(tmp_path / "s" / "scores.parquet"),
        (250,),
        2,
        ablation.AblationConfig(ks=(0, 2), n_seeds=1, max_new_tokens=4),
        effects=EffectsConfig(n_boot=50),
    )
    tables = {name: getattr(result, name) for name in ("tests", "curve", "effects", "summary")}
    assert_tables_written(tables, tmp_path / "a", tmp_path / "py-a")
    other = dataclasses.replace(scored.scores.provenance, analyzer="sinks")
    HeadScores(scored.scores.data, other).save(tmp_path / "sinks.parquet")
    with pytest.raises(InputError, match=r"--scores takes the scores\.parquet"):
        retrieval.load_scores(tmp_path / "sinks.parquet")
