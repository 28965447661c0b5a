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
