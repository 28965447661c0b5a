"""probes.anchors against a direct reference from full patterns, on the tiny model; resuming."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pandas.testing import assert_frame_equal

from interp.errors import ConfigError, InputError
from interp.explicit_attention import AttentionRows
from interp.hooks import attention_hooks
from interp.models import Model
from probes import anchors
from probes.anchor_traces import Trace
from tests.probes import anchor_reference as ref
from tests.stops import Stop, count_items, logged, stop_after

TOL = 1e-5


def _traces(lengths: list[tuple[int, int]], seed: int = 1) -> list[Trace]:
    rng = np.random.default_rng(seed)
    return [
        Trace(f"t{i}", tuple(int(x) for x in rng.integers(3, 259, n)), n_prompt=p)
        for i, (n, p) in enumerate(lengths)
    ]


def _check_against_reference(model: Model, traces: list[Trace], config) -> None:
    result = anchors.run(model, traces, config)
    band = config.band(model.geometry.n_layers)
    pats = {t.name: ref.patterns(model, t) for t in traces}
    total, count = 0.0, 0
    for t in traces:
        sums, n = ref.back_distance(pats[t.name], range(t.n_prompt, len(t.ids)))
        total, count = total + sums, count + n
    expected = (total / count)[band]
    heads = result.heads.data
    assert heads.layer.tolist() == sorted(band * model.geometry.n_heads)
    np.testing.assert_allclose(heads.score.to_numpy(), expected.ravel(), rtol=0, atol=TOL)
    local = heads[heads.role == "local"]
    glob = heads[heads.role == "global"]
    assert local.score.max() <= heads[heads.role != "local"].score.min()
    assert glob.score.min() >= heads[heads.role != "global"].score.max()
    tokens = result.tokens.data
    for t in traces:
        p = pats[t.name]
        mean_local = np.mean([p[r.layer, r.head] for r in local.itertuples()], axis=0)
        mean_global = np.mean([p[r.layer, r.head] for r in glob.itertuples()], axis=0)
        response = range(t.n_prompt, len(t.ids))
        rows = tokens[tokens.trace == t.name]
        assert rows.position.tolist() == list(response)
        waad = [ref.waad(mean_local, pos - config.shift, config.window) for pos in response]
        fai = [ref.fai(mean_global, s, response, config.h_lo, config.h_hi) for s in response]
        np.testing.assert_allclose(rows.waad.to_numpy(), waad, rtol=0, atol=TOL)
        np.testing.assert_allclose(rows.fai.to_numpy(), fai, rtol=0, atol=TOL)
        delta = np.abs(np.diff(waad))
        np.testing.assert_allclose(rows.delta_waad.to_numpy()[:-1], delta, rtol=0, atol=TOL)
        assert np.isnan(rows.delta_waad.iloc[-1])
        assert rows.is_preplan.sum() == anchors.top_count(len(delta), config.q)
        assert rows.is_anchor.sum() == anchors.top_count(int(np.isfinite(fai).sum()), config.q)
        with torch.no_grad():
            logp = torch.log_softmax(model.hf(torch.tensor([t.ids])).logits[0], -1).double()
        before = np.array(response) - 1  # token p was drawn from row p - 1
        entropy = -(logp.exp() * logp).sum(-1).numpy()[before]
        chosen_logp = logp[before, torch.tensor(t.ids)[response]].numpy()
        np.testing.assert_allclose(rows.entropy.to_numpy(), entropy, rtol=0, atol=TOL)
        np.testing.assert_allclose(rows.logprob.to_numpy(), chosen_logp, rtol=0, atol=TOL)
        chosen = rows.delta_waad[rows.is_preplan]
        assert chosen.min() >= rows.delta_waad[~rows.is_preplan].max()


@pytest.mark.parametrize("shift", [0, 1])
def test_metrics_equal_the_full_pattern_reference_in_left_padded_batches(tiny, shift) -> None:
    traces = _traces([(40, 9), (23, 5), (31, 12)])
    config = anchors.AnchorConfig(window=4, h_lo=3, h_hi=12, shift=shift, batch_size=3)
    _check_against_reference(tiny, traces, config)


def test_paper_defaults_and_fai_to_the_response_end(tiny) -> None:
    traces = _traces([(130, 20), (96, 30)], seed=2)
    _check_against_reference(tiny, traces, anchors.AnchorConfig(batch_size=2))  # analysis
    rl = anchors.AnchorConfig(batch_size=2, **anchors.RL_SETTINGS)  # type: ignore[arg-type]
    _check_against_reference(tiny, traces, rl)


class _BlockStarts:
    """Attention hook that reads nothing but where each block of layer 0's query rows starts."""

    def __init__(self) -> None:
        self.starts: list[int] = []

    def wants(self, layer: int, n_queries: int) -> bool:
        return layer == 0

    def __call__(self, rows: AttentionRows) -> None:
        self.starts.append(int(rows.query_positions[0]))


def test_blocks_of_rows_give_the_same_metrics(tiny, monkeypatch) -> None:
    traces = _traces([(60, 10), (45, 8)], seed=3)
    config = anchors.AnchorConfig(window=5, h_lo=4, h_hi=20, batch_size=2)
    one, several = _BlockStarts(), _BlockStarts()
    with attention_hooks(tiny.hf, one):
        whole = anchors.run(tiny, traces, config)
    monkeypatch.setattr("interp.explicit_attention._BLOCK_BYTES", 4 * 2 * 4 * 60 * 7)
    with attention_hooks(tiny.hf, several):
        blocked = anchors.run(tiny, traces, config)
    assert set(one.starts) == {0} and len(set(several.starts)) > 1  # one block, then several
    cols = ["waad", "fai", "delta_waad"]
    np.testing.assert_allclose(
        blocked.tokens.data[cols].to_numpy(), whole.tokens.data[cols].to_numpy(), atol=TOL
    )
    np.testing.assert_allclose(
        blocked.heads.data.score.to_numpy(), whole.heads.data.score.to_numpy(), atol=TOL
    )


def test_a_run_stopped_from_python_resumes_to_one_run(tiny, tmp_path, monkeypatch) -> None:
    traces = _traces([(30, 6), (44, 9), (25, 5), (38, 7)], seed=4)
    config = anchors.AnchorConfig(h_lo=2, h_hi=8, batch_size=2)
    once = anchors.run(tiny, traces, config)
    with pytest.raises(Stop):  # pass 1 stops after its first batch
        anchors.run(tiny, traces, config, stop_after(2), folder=tmp_path)
    assert logged(tmp_path) == 2
    pass1 = count_items(monkeypatch, anchors, "distance_sums")
    pass2 = count_items(monkeypatch, anchors, "token_rows")
    resumed = anchors.run(tiny, traces, config, folder=tmp_path)
    assert (pass1, pass2) == ([2], [2, 2]) and logged(tmp_path) == 8
    assert_frame_equal(resumed.heads.data, once.heads.data, check_exact=True)
    assert_frame_equal(resumed.tokens.data, once.tokens.data, check_exact=True)
    with pytest.raises(InputError, match="another config"):
        anchors.run(tiny, traces, anchors.AnchorConfig(h_lo=3, batch_size=2), folder=tmp_path)


def test_band_and_top_q_rules() -> None:
    assert anchors.AnchorConfig().band(30) == list(range(30))  # the paper's analysis
    middle = anchors.AnchorConfig(**anchors.RL_SETTINGS)  # type: ignore[arg-type]
    assert middle.band(30) == [10, 13, 15, 18, 20]
    assert middle.band(3) == [1, 2]
    assert (middle.h_lo, middle.h_hi) == (10, 100)
    assert anchors.AnchorConfig(layers=(4, 2)).band(6) == [2, 4]
    with pytest.raises(ConfigError, match="exceed"):
        anchors.AnchorConfig(layers=(7,)).band(6)
    with pytest.raises(ConfigError, match="below h_lo"):
        anchors.AnchorConfig(h_lo=20, h_hi=10)
    mask = anchors.top_q(np.array([0.1, np.nan, 0.5, 0.5, 0.2]), 0.4)
    assert mask.tolist() == [False, False, True, True, False]
    assert anchors.top_count(5, 0.3) == 2 and anchors.top_count(1, 0.3) == 1
