"""Retrieval heads on the default model: a sparse set exists, and masking it breaks NIAH."""

from __future__ import annotations

import pytest

from interp.prompts import data_path
from probes import niah, retrieval
from probes import retrieval_ablation as ablation

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def scored(default_model) -> retrieval.RetrievalResult:
    needles = niah.load_needles(data_path("needles", "scoring.jsonl"))[:4]
    config = retrieval.RetrievalConfig(lengths=(600,), n_depths=2, max_new_tokens=32)
    tests = niah.build_tests(default_model, needles, niah.load_haystack(), (600,), 2, 32)
    return retrieval.run(default_model, tests, config)


def test_sparse_retrieval_heads(scored) -> None:
    table = scored.scores.data
    assert scored.tests.data.success.mean() >= 0.5  # the model solves the short NIAH tests
    n_found = int((table.score >= 0.1).sum())
    assert 5 <= n_found <= 0.1 * len(table)
    assert (table.score == 0).mean() > 0.5  # most heads never copy a needle token


def test_masking_retrieval_heads_breaks_retrieval(default_model, scored) -> None:
    needles = niah.load_needles(data_path("needles", "heldout.jsonl"))  # not used for scoring
    # Depths 0 and 100%: at 50% this 135M model often misses the needle even unmasked.
    tests = niah.build_tests(default_model, needles, niah.load_haystack(), (1000,), 2, 32)
    config = ablation.AblationConfig(ks=(0, 20), n_seeds=2, max_new_tokens=32)
    summary = ablation.run_ablation(default_model, tests, scored.scores, config).summary.data
    baseline = summary.loc[summary.k == 0, "top_k"].item()
    top20 = summary.loc[summary.k == 20, "top_k"].item()
    random20 = summary.loc[summary.k == 20, "random_median"].item()
    assert baseline >= 50
    assert top20 <= 0.5 * baseline
    assert random20 >= top20 + 20


# Computed with the batch-1 decode loop that retrieval had before the generation driver:
# each test's response and, per head, the needle (answer) tokens it hit.
_BEFORE_DRIVER = [
    (
        "The secret password for the garden gate is silver pelican forty seven.",
        {"L6H0": 1, "L14H1": 2, "L17H3": 5, "L17H4": 5, "L17H5": 3, "L18H6": 5, "L18H7": 3,
         "L20H3": 2, "L20H6": 3, "L21H1": 2, "L21H2": 1, "L21H5": 1, "L21H8": 3, "L22H7": 2,
         "L23H0": 2, "L23H1": 2, "L23H2": 4, "L23H7": 4, "L24H4": 2, "L26H1": 1, "L29H7": 1},
    ),
    ("The book is a recipe for a recipe.", {}),
]  # fmt: skip


def test_batched_scores_equal_batch_one_and_the_decode_loop_before(default_model) -> None:
    needles = niah.load_needles(data_path("needles", "scoring.jsonl"))[1:3]
    tests = niah.build_tests(default_model, needles, niah.load_haystack(), (300,), 2, 16)[1:3]
    assert len({len(t.input_ids) for t in tests}) == 2  # 301 and 302 tokens: a padded batch
    config = retrieval.RetrievalConfig(lengths=(300,), n_depths=2, max_new_tokens=16)
    alone = retrieval.run(default_model, tests, config, batch_size=1)
    batched = retrieval.run(default_model, tests, config, batch_size=2)
    assert batched.tests.data.equals(alone.tests.data)
    assert batched.scores.data.equals(alone.scores.data)
    labels = alone.scores.data.label.tolist()
    rows = alone.tests.data
    for test, response, scores, (expected_response, hits) in zip(
        tests, rows.response, rows.head_scores, _BEFORE_DRIVER, strict=True
    ):
        n_span = test.answer_span[1] - test.answer_span[0]
        assert response == expected_response
        assert {labels[i]: v for i, v in enumerate(scores) if v} == {
            label: n / n_span for label, n in hits.items()
        }
