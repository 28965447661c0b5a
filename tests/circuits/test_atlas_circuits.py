"""The atlas's circuit columns are the circuit analysis's scores, one row per head."""

from __future__ import annotations

import numpy as np

from circuits import atlas_circuits
from circuits.atlas_circuits import circuits
from circuits.circuit_analysis import CircuitConfig
from circuits.tasks import ioi
from circuits.tiny_task import tiny_task
from interp.atlas_part import AtlasSettings
from tests.circuits.test_tasks import _word_model
from tests.circuits.word_model import circuit_corpus
from tests.tiny import tiny_llama

# Each discovery stage and the role it finds (circuits.discovery's docstring).
ROLES = {
    "logits": "name_movers",
    "name_mover_queries": "s_inhibition",
    "s_inhibition_values": "induction_duplicate",
    "induction_keys": "previous_token",
}


def _spy(monkeypatch):
    """Record each analyse_circuit call the atlas makes: (task, config, analysis)."""
    calls = []
    original = atlas_circuits.analyse_circuit

    def recorded(model, task, config, **kwargs):
        calls.append((task, config, original(model, task, config, **kwargs)))
        return calls[-1][2]

    monkeypatch.setattr(atlas_circuits, "analyse_circuit", recorded)
    return calls


def _check(part, model, analysis):
    """One row per head in order; each column read back from the analysis's own tables."""
    geometry = model.geometry
    shape = (geometry.n_layers, geometry.n_heads)
    expected, scores = {}, analysis.discovery.scores.data
    for stage, role in ROLES.items():
        expected[role] = np.full(shape, np.nan)
        for row in scores[scores["stage"] == stage].itertuples():
            expected[role][row.layer, row.head] = row.score
    expected["in_circuit"] = np.zeros(shape, bool)
    for head in analysis.discovery.heads:
        expected["in_circuit"][head.layer, head.head] = True
    expected["attribution"] = analysis.maps["attribution"].matrix(geometry)

    heads = part.heads
    assert heads[["layer", "head"]].values.tolist() == [
        [layer, head] for layer in range(shape[0]) for head in range(shape[1])
    ]
    assert heads.columns.tolist() == ["layer", "head", *(f"circuits_{c}" for c in expected)]
    for name, values in expected.items():
        np.testing.assert_array_equal(heads[f"circuits_{name}"].to_numpy(), values.ravel())
    assert heads["circuits_in_circuit"].dtype == bool
    assert set(part.tables) == set(analysis.tables())
    for name, table in analysis.tables().items():
        assert part.tables[name].equals(table.data), name


def test_ioi_columns_are_the_analysis_of_the_command_on_quick_prompts(monkeypatch):
    model = _word_model(circuit_corpus())
    calls = _spy(monkeypatch)
    part = circuits(model, AtlasSettings(quick=True, seed=1), None, None)
    [(task, config, analysis)] = calls
    same = ioi(model, atlas_circuits.QUICK_PROMPTS, seed=1)  # `interp circuit ioi --seed 1`
    assert (task.prompts, task.corrupted_prompts) == (same.prompts, same.corrupted_prompts)
    assert config == CircuitConfig(patching="attribution")
    _check(part, model, analysis)
    assert part.settings["n"] == atlas_circuits.QUICK_PROMPTS
    assert part.settings["summary"] == analysis.summary


def test_every_stage_lands_in_its_role_column(monkeypatch):
    # A three-layer model on the tiny task runs more stages than the two-layer word model,
    # whose chain ends after the first: each stage must fill its own column.
    model = tiny_llama()
    asked = []
    monkeypatch.setattr(
        atlas_circuits, "ioi", lambda model, n, **_kw: asked.append(n) or tiny_task(model, n=4)
    )
    calls = _spy(monkeypatch)
    part = circuits(model, AtlasSettings(), None, None)
    assert asked == [atlas_circuits.PROMPTS]
    analysis = calls[0][2]
    assert analysis.discovery.scores.data["stage"].nunique() == 3
    _check(part, model, analysis)
