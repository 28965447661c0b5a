"""SAE circuit identification: code sets, ROC AUC, and the planted circuit recovered."""

import numpy as np
import pandas as pd
import pytest
import torch

from circuits.sae_circuits import (
    SAECircuitConfig,
    edge_node_scores,
    edge_scores,
    node_scores,
    roc_auc,
    roc_points,
    sae_circuit,
    score_heads,
)
from interp.activations import collect_heads
from interp.errors import ConfigError, InputError
from interp.heads import Head, HeadSet
from interp.results import HeadScores, Provenance
from tests.circuits.planted import planted_model, planted_prompts
from tests.tiny import tiny_llama


def test_node_scores_count_codes_seen_on_positives_and_never_on_negatives():
    positive = torch.tensor([[1, 5, 7], [2, 5, 7], [1, 6, 7]])  # [text, head]
    negative = torch.tensor([[1, 5, 8], [3, 5, 9]])
    columns = node_scores(positive, negative)
    assert columns["score"].tolist() == [1.0, 1.0, 1.0]  # {2}, {6}, {7}
    assert columns["negative_only"].tolist() == [1, 0, 2]
    assert columns["distinct"].tolist() == [3, 2, 3]
    normalised = node_scores(positive, negative, normalise=True)["score"]
    np.testing.assert_array_equal(normalised, [1 / 3, 1 / 2, 1 / 3])
    with pytest.raises(InputError):
        node_scores(positive, negative[:, :2])


def test_edge_scores_count_code_pairs_seen_on_positives_and_never_on_negatives():
    positive = torch.tensor([[0, 1, 2], [0, 1, 3]])  # [text, head]
    negative = torch.tensor([[0, 1, 2]])
    expected = [[0, 0, 1], [0, 0, 1], [1, 1, 0]]  # only pairs with head 2's code 3 are new
    for block in (1, 2, 16):
        np.testing.assert_array_equal(edge_scores(positive, negative, block=block), expected)
    normalised = edge_scores(positive, negative, normalise=True)  # / (2 on pos + 1 on neg)
    np.testing.assert_array_equal(normalised, np.array(expected) / 3)
    assert edge_scores(positive, positive).sum() == 0


def test_edge_node_scores_flatten_the_top_pairs_into_heads():
    edges = np.array([[0, 0, 1], [0, 0, 1], [1, 1, 0]], dtype=float)
    # pairs by count, ties in (h1, h2) order: (0,2) (1,2) (2,0) (2,1) (0,1) (1,0)
    assert edge_node_scores(edges, 4).tolist() == [1, 1, 2]
    assert edge_node_scores(edges, 5).tolist() == [1, 1, 3]  # the fifth entry is h1 of (2,0)
    assert edge_node_scores(edges, 0).tolist() == [0, 0, 0]


def _scores(values: list[float]) -> HeadScores:
    provenance = Provenance("m", "w", "test", {}, "h", 0)
    return HeadScores.from_matrix(np.array([values]), provenance)


def test_roc_auc_is_the_chance_a_circuit_head_outscores_another():
    scores = _scores([3.0, 0.0, 2.0, 1.0])
    assert roc_auc(scores, HeadSet([Head(0, 0), Head(0, 2)])) == 1.0
    assert roc_auc(scores, HeadSet([Head(0, 1)])) == 0.0
    assert roc_auc(scores, HeadSet([Head(0, 3), Head(0, 0)])) == 0.75
    assert roc_auc(_scores([1.0, 1.0, 0.0]), HeadSet([Head(0, 0), Head(0, 2)])) == 0.25  # a tie
    with pytest.raises(InputError):
        roc_auc(scores, HeadSet([]))


def test_roc_points_trace_the_curve_whose_area_is_the_auc():
    scores = _scores([3.0, 1.0, 2.0, 1.0, 0.0])
    circuit = HeadSet([Head(0, 0), Head(0, 3)])
    points = roc_points(scores, circuit)
    # thresholds 3, 2, 1 (a tie of one circuit head and one other), 0
    assert points.fpr.tolist() == [0, 0, 1 / 3, 2 / 3, 1]
    assert points.tpr.tolist() == [0, 0.5, 0.5, 1, 1]
    area = np.trapezoid(points.tpr, points.fpr)
    assert area == pytest.approx(roc_auc(scores, circuit)) and area == pytest.approx(4.5 / 6)


def test_roc_curves_draw_one_line_per_run_and_the_chance_line():
    from interp.figures import roc_curves

    scores, circuit = _scores([3.0, 1.0, 2.0, 1.0, 0.0]), HeadSet([Head(0, 0), Head(0, 3)])
    curves = pd.concat(
        [roc_points(scores, circuit).assign(run=f"seed {s}", auc=0.75) for s in (0, 1)]
    )
    figure = roc_curves(curves, "ROC")
    names = [trace.name for trace in figure.data]
    assert names == ["chance", "seed 0 (AUC 0.75)", "seed 1 (AUC 0.75)"]
    assert list(figure.data[1].y) == [0, 0.5, 0.5, 1, 1]


def test_the_planted_model_hides_the_trigger_from_heads_outside_the_circuit():
    model, circuit = planted_model()
    positives, negatives = planted_prompts(4)
    # Each side in its own batch of the same shape: BLAS may round rows of one batch
    # differently by their place in it (with several threads), never the same place twice.
    plus = collect_heads(model, positives).values  # [text, head, d_model]
    minus = collect_heads(model, negatives).values
    same = (plus == minus).all(-1).all(0)  # per head, bit-equal on every pair
    assert same.tolist() == [Head(0, h) not in circuit for h in range(8)]


def test_planted_circuit_is_recovered_with_auc_one():
    model, circuit = planted_model()
    positives, negatives = planted_prompts(20)
    found = sae_circuit(model, positives, negatives)
    assert roc_auc(found.nodes, circuit) == 1.0
    outside = found.nodes.data[~found.nodes.data["label"].isin([h.label for h in circuit])]
    assert (outside["score"] == 0).all()
    # edges: no new code pair between two heads outside the circuit, some with any inside
    inside = np.array([Head(0, h) in circuit for h in range(8)])
    off_diagonal = ~np.eye(8, dtype=bool)
    assert (found.edges[~inside][:, ~inside] == 0).all()
    involved = (inside[:, None] | inside[None, :]) & off_diagonal
    assert (found.edges[involved] > 0).all()
    assert found.edge_nodes.data["score"].sum() == 8**2 // 2
    assert found.nodes.provenance.config == SAECircuitConfig().to_dict()
    assert found.sae.provenance.n_inputs == SAECircuitConfig().n_train


def test_scoring_collected_heads_of_some_layers_keeps_their_labels():
    model = tiny_llama(n_layers=3)
    positives, negatives = planted_prompts(6)
    acts = collect_heads(model, positives + negatives, layers=[1, 2])
    one = score_heads(acts, 6, SAECircuitConfig(epochs=50, seed=1))
    again = score_heads(acts, 6, SAECircuitConfig(epochs=50, seed=1))
    assert one.nodes.data.equals(again.nodes.data)
    # 8 heads in 2 layers: the reference keeps 8**2 // 2 = 32 of the 2 x 56 flattened
    # entries; the per-layer rule 4**2 // 2 = 8
    assert one.edge_nodes.data["score"].sum() == 32
    per_layer = score_heads(acts, 6, SAECircuitConfig(epochs=50, seed=1, edge_rule="per_layer"))
    assert per_layer.edge_nodes.data["score"].sum() == 8
    assert one.nodes.data["label"].tolist() == [
        f"L{layer}H{h}" for layer in (1, 2) for h in range(4)
    ]
    with pytest.raises(InputError, match="n_positive"):
        score_heads(acts, 12)


def test_bad_settings_and_inputs_are_errors():
    model, _ = planted_model()
    with pytest.raises(ConfigError):
        SAECircuitConfig(n_train=0)
    with pytest.raises(ConfigError, match="edge_rule"):
        SAECircuitConfig(edge_rule="layer")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="empty"):
        sae_circuit(model, ["ab#c"], [])
    with pytest.raises(InputError, match="n_train"):
        sae_circuit(model, ["ab#c"], ["ab$c"], SAECircuitConfig(n_train=3))


@pytest.mark.integration
def test_ioi_on_the_default_model_finds_codes_only_where_prompts_differ(default_model):
    from circuits.tasks import ioi

    task = ioi(default_model, 12, seed=0)
    acts = collect_heads(default_model, [*task.prompts, *task.corrupted_prompts])
    config = SAECircuitConfig(epochs=25, n_train=6, seed=0)
    found = score_heads(acts, 12, config).nodes.data
    assert found["distinct"].max() > 1  # the shared SAE did not collapse to one code
    assert (found["score"] > 0).sum() >= 50  # clean and ABC prompts get different codes
    same = acts.select([*range(12), *range(12)])  # the clean prompts on both sides
    control = score_heads(same, 12, config).nodes.data
    assert (control["score"] == 0).all() and (control["negative_only"] == 0).all()
