"""Circuit choice, mean ablation and faithfulness identities; discovery on the default model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from circuits.discovery import (
    DiscoveryConfig,
    FaithfulnessConfig,
    choose_circuit,
    discover_ioi,
    faithfulness,
    mean_z,
    refine,
)
from circuits.tasks import ioi, logit_difference
from circuits.tiny_task import tiny_task
from interp.errors import ConfigError, InputError
from interp.heads import HeadSet
from interp.results import HeadScores, Provenance
from tests.tiny import tiny_llama


def _by_condition(table) -> dict[str, float]:
    return dict(zip(table.data["condition"], table.data["logit_difference"], strict=True))


def test_full_circuit_keeps_everything_and_empty_circuit_is_all_ablated() -> None:
    model = tiny_llama()
    task = tiny_task(model)
    everything = model.geometry.all_heads()
    full = faithfulness(model, task, everything)
    ld = _by_condition(full)
    with torch.no_grad():
        # The same call as the ablated runs (last position's logits only): the LM head on
        # one row and on all rows may round differently, so only like with like is bit-exact.
        plain = logit_difference(
            model.hf(**task.clean, logits_to_keep=1).logits[:, -1], task
        ).mean()
    assert ld["full"] == ld["circuit"] == float(plain)  # bit-exact: no z touched
    assert full.data.set_index("condition").loc["circuit", "share"] == 1.0
    assert ld["complement"] == ld["empty"]
    empty = _by_condition(faithfulness(model, task, HeadSet()))
    assert empty["circuit"] == empty["empty"] == ld["empty"]
    assert empty["complement"] == ld["full"]
    assert ld["empty"] == pytest.approx(_all_ablated_by_hand(model, task), abs=1e-5)
    assert abs(ld["empty"] - ld["full"]) > 1e-3


def _all_ablated_by_hand(model, task) -> float:
    """Every head's z = its mean over the corrupted prompts' real tokens at that position."""
    n_heads = model.geometry.n_heads
    mask = task.corrupted.attention_mask.float()
    means = {}

    def grab(i):
        def hook(_module, args):
            z = args[0].view(*args[0].shape[:2], n_heads, -1)
            total = (z * mask[:, :, None, None]).sum(0)
            means[i] = total / mask.sum(0)[:, None, None]

        return hook

    def write(i):
        def hook(_module, args):
            z = args[0].view(*args[0].shape[:2], n_heads, -1)
            return (means[i][None].expand_as(z).flatten(2),)

        return hook

    projections = [layer.self_attn.o_proj for layer in model.hf.model.layers]
    with torch.no_grad():
        handles = [p.register_forward_pre_hook(grab(i)) for i, p in enumerate(projections)]
        model.hf(**task.corrupted)
        for handle in handles:
            handle.remove()
        handles = [p.register_forward_pre_hook(write(i)) for i, p in enumerate(projections)]
        logits = model.hf(**task.clean).logits[:, -1]
        for handle in handles:
            handle.remove()
    return float(logit_difference(logits, task).mean())


def test_means_per_template_and_over_all_positions() -> None:
    model = tiny_llama()
    task = tiny_task(model)  # rows alternate templates t0, t1
    per_position = mean_z(model, task.corrupted, FaithfulnessConfig())
    per_template = mean_z(
        model, task.corrupted, FaithfulnessConfig(means="template"), task.templates
    )
    overall = mean_z(model, task.corrupted, FaithfulnessConfig(means="all_positions"))
    z = {}
    o_proj = model.hf.model.layers[1].self_attn.o_proj
    handle = o_proj.register_forward_pre_hook(
        lambda _m, args: z.__setitem__(1, args[0].view(*args[0].shape[:2], 4, -1).clone())
    )
    with torch.no_grad():
        model.hf(**task.corrupted)
    handle.remove()
    mask = task.corrupted.attention_mask.bool()
    last = z[1][:, -1]  # every row is real at the last position
    assert torch.allclose(per_position[1][0, -1], last.mean(0), atol=1e-6)
    assert torch.allclose(per_template[1][1, -1], last[1::2].mean(0), atol=1e-6)
    assert torch.allclose(per_template[1][0, -1], last[0::2].mean(0), atol=1e-6)
    assert torch.allclose(overall[1][0, 0], z[1][mask].mean(0), atol=1e-6)
    first = mask[:, 0]  # the left-most column is real in the longest rows only
    assert torch.allclose(per_position[1][0, 0], z[1][first, 0].mean(0), atol=1e-6)
    with pytest.raises(InputError, match="template per reference row"):
        mean_z(model, task.corrupted, FaithfulnessConfig(means="template"), ())


def test_refine_drops_to_the_cap_and_its_shares_match_faithfulness() -> None:
    model = tiny_llama()
    task = tiny_task(model)
    start = HeadSet("L0H0 L0H3 L1H0 L1H2 L2H1 L2H3")
    circuit, shares = refine(model, task, start, 3, batch_size=13)
    assert len(circuit) == 3 and set(circuit) <= set(start) and len(shares) == 3
    table = faithfulness(model, task, circuit).data.set_index("condition")
    assert shares[-1] == pytest.approx(table.loc["circuit", "share"], abs=1e-5)


def _stage_table(stage: str, scores: dict[str, float]) -> pd.DataFrame:
    heads = HeadSet(list(scores))
    return pd.DataFrame(
        {
            "layer": [h.layer for h in heads],
            "head": [h.head for h in heads],
            "label": heads.labels,
            "score": [scores[h.label] for h in heads],
            "stage": stage,
        }
    )


def test_choose_circuit_rules() -> None:
    stages = pd.concat(
        [
            _stage_table("logits", {"L9H1": 0.8, "L9H2": 0.4, "L8H0": -0.9, "L7H1": 0.1}),
            _stage_table("name_mover_queries", {"L5H0": 0.02, "L5H1": 0.01, "L4H4": 0.005}),
        ]
    )
    scores = HeadScores(stages, Provenance("m", "w", "a", {}, "h", 1))
    top2 = choose_circuit(scores, DiscoveryConfig(per_stage=2, rank_by="score"), 270)
    assert top2 == HeadSet("L9H1 L9H2 L5H0 L5H1")  # stage-normalised: 0.02 ranks like 0.8
    capped = DiscoveryConfig(per_stage=2, max_heads=2, rank_by="score")
    assert choose_circuit(scores, capped, 270) == HeadSet("L9H1 L5H0")
    by_abs = choose_circuit(scores, DiscoveryConfig(per_stage=1), 270)  # |score|, the default
    assert by_abs == HeadSet("L8H0 L5H0")
    above = DiscoveryConfig(selection="threshold", threshold=0.45, rank_by="score")
    assert choose_circuit(scores, above, 270) == HeadSet("L9H1 L5H0 L5H1")
    fraction = DiscoveryConfig(selection="top_fraction", fraction=3 / 7, rank_by="score")
    assert choose_circuit(scores, fraction, 270) == HeadSet("L9H1 L5H0 L5H1")
    assert DiscoveryConfig().heads_per_stage(270) == 5  # Merullo's 2%
    with pytest.raises(ConfigError, match="start with 'logits'"):
        DiscoveryConfig(stages=("name_mover_queries",))


def test_discovery_chains_stages_on_the_tiny_model() -> None:
    model = tiny_llama(n_layers=3)
    task = tiny_task(model)
    calls = []
    found = discover_ioi(
        model, task, DiscoveryConfig(per_stage=2, max_heads=5), progress=lambda *a: calls.append(a)
    )
    stages = found.scores.data["stage"].unique().tolist()
    assert stages[0] == "logits" and len(stages) >= 2
    first = found.scores.data[found.scores.data["stage"] == "logits"]
    movers = HeadSet(first.nlargest(2, "score")[["layer", "head"]].itertuples(index=False))
    second = found.scores.data[found.scores.data["stage"] == stages[1]]
    # Merullo's senders: layers up to the lowest receiver layer, receivers excepted
    assert second["layer"].max() == min(movers.layers)
    assert not set(second["label"]) & set(movers.labels)
    assert 1 <= len(found.heads) <= 5 and {c[0] for c in calls} == set(stages)


@pytest.mark.integration
def test_ioi_discovery_on_the_default_model(default_model) -> None:
    """Two stages on 8 prompts: the main name mover (L23H3 on 48 prompts) is found again."""
    task = ioi(default_model, 8, seed=1)
    config = DiscoveryConfig(stages=("logits", "name_mover_queries"), per_stage=4, max_heads=8)
    found = discover_ioi(default_model, task, config)
    scores = found.scores.data
    sizes = scores.groupby("stage").size().to_dict()
    logits = scores[scores["stage"] == "logits"]
    receivers = logits.loc[logits["score"].abs().nlargest(4).index]  # ranked by |score|
    low = int(receivers["layer"].min())
    n_senders = 9 * (low + 1) - int((receivers["layer"] == low).sum())
    assert sizes == {"logits": 270, "name_mover_queries": n_senders}
    assert "L23H3" in found.heads.labels
    table = faithfulness(default_model, task, found.heads).data.set_index("condition")
    assert table.loc["circuit", "share"] > table.loc["complement", "share"]
    assert np.isclose(table.loc["full", "share"], 1.0)
