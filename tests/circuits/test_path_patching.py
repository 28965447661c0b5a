"""Path patching against a brute-force reference: full forwards with hand-built hooks."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
import torch

from circuits.path_patching import PathPatchingConfig, ioi_stage, path_patching
from circuits.tasks import logit_difference
from circuits.tiny_task import tiny_task
from interp.errors import ConfigError, InputError
from interp.heads import HeadSet
from tests.tiny import tiny_llama


def _mlp_hook(fn, i):
    def hook(_module, _args, out):
        return fn(i, out)

    return hook


def _z_hook(fn, i, n_heads):
    def hook(_module, args):
        z = args[0].view(*args[0].shape[:2], n_heads, -1)
        return (fn(i, z).flatten(2),)

    return hook


def _proj_hook(fn, i, kind, d_head):
    def hook(_module, _args, out):
        return fn(i, kind, out.view(*out.shape[:2], -1, d_head)).flatten(2)

    return hook


def _reference(model, task, config: PathPatchingConfig) -> dict[str, float]:
    """Wang's two runs per sender, every position computed, hooks on the HF modules.

    Senders as in Merullo's code: every head of layers 0..lowest receiver layer but the
    receivers.
    """
    layers = model.hf.model.layers
    g = model.geometry
    rows = torch.arange(len(task))
    p = task.positions[config.position]
    receivers = config.receiver_heads

    def run(encoding, z_fn=None, proj_fn=None, mlp_fn=None):
        with ExitStack() as stack:
            for i, layer in enumerate(layers):
                attn = layer.self_attn
                if mlp_fn:
                    hook = _mlp_hook(mlp_fn, i)
                    stack.callback(layer.mlp.register_forward_hook(hook).remove)
                if z_fn:
                    hook = _z_hook(z_fn, i, g.n_heads)
                    stack.callback(attn.o_proj.register_forward_pre_hook(hook).remove)
                for kind in "qkv" if proj_fn else "":
                    hook = _proj_hook(proj_fn, i, kind, g.d_head)
                    stack.callback(getattr(attn, f"{kind}_proj").register_forward_hook(hook).remove)
            return logit_difference(model.hf(**encoding).logits[:, -1], task)

    def keep(store):
        def fn(i, z):
            store[i] = z.clone()
            return z

        return fn

    clean_z, corrupt_z, clean_mlp = {}, {}, {}
    with torch.no_grad():
        ld_clean = run(task.clean, keep(clean_z), mlp_fn=keep(clean_mlp)).mean()
        ld_corrupt = run(task.corrupted, keep(corrupt_z)).mean()
        scores = {}
        top = min(receivers.layers) if receivers else g.n_layers - 1
        for layer in range(top + 1):
            for head in range(g.n_heads):
                if f"L{layer}H{head}" in receivers.labels:
                    continue

                def frozen(i, z, layer=layer, head=head):
                    new = clean_z[i].clone()
                    if i == layer:
                        new[rows, p, head] = corrupt_z[i][rows, p, head]
                    return new

                seen = {}

                def record(i, kind, x, seen=seen):
                    if kind == config.receiver:
                        seen[i] = x[rows, p].clone()
                    return x

                mlps = (lambda i, out: clean_mlp[i]) if config.freeze_mlps else None
                ld = run(task.clean, frozen, record, mlps)
                if config.receiver != "logits":

                    def patch(i, kind, x, seen=seen):
                        if kind != config.receiver or i not in receivers.layers:
                            return x
                        x = x.clone()
                        for h in receivers.heads_in(i):
                            slot = h if kind == "q" else g.kv_head(h)
                            x[rows, p, slot] = seen[i][:, slot]
                        return x

                    def siblings(i, z):
                        mine = receivers.heads_in(i)
                        if config.receiver == "q" or config.gqa_siblings == "share" or not mine:
                            return z
                        z = z.clone()
                        for h in range(g.n_heads):
                            if h not in mine and g.kv_head(h) in {g.kv_head(m) for m in mine}:
                                z[:, :, h] = clean_z[i][:, :, h]
                        return z

                    ld = run(task.clean, siblings, patch)
                score = (ld.mean() - ld_clean) / (ld_corrupt - ld_clean)
                scores[f"L{layer}H{head}"] = float(score)
    return scores


def _sharp_tiny():
    """The tiny GQA Llama with q and k scaled up: peaked attention, so q/k paths matter."""
    model = tiny_llama(n_layers=3, n_heads=4, n_kv_heads=2)
    with torch.no_grad():
        for layer in model.hf.model.layers:
            layer.self_attn.q_proj.weight.mul_(4.0)
            layer.self_attn.k_proj.weight.mul_(4.0)
    return model


CASES = [
    PathPatchingConfig(),
    ioi_stage("name_mover_queries", HeadSet("L2H1 L2H2")),
    ioi_stage("s_inhibition_values", HeadSet("L2H0")),
    ioi_stage("s_inhibition_values", HeadSet("L2H0"), gqa_siblings="share"),
    ioi_stage("induction_keys", HeadSet("L1H3 L2H0")),
    ioi_stage("name_mover_queries", HeadSet("L1H0 L2H1")),
    PathPatchingConfig(stage="frozen_mlps", freeze_mlps=True),
    ioi_stage("name_mover_queries", HeadSet("L2H1"), freeze_mlps=True),
]


@pytest.mark.parametrize(
    "config", CASES, ids=lambda c: f"{c.stage}-{c.gqa_siblings}-{c.freeze_mlps}"
)
def test_equals_brute_force_reference(config: PathPatchingConfig) -> None:
    model = _sharp_tiny()
    task = tiny_task(model, n=5)
    chunked = PathPatchingConfig.from_dict({**config.to_dict(), "batch_size": 7})
    got = path_patching(model, task, chunked)  # 7 rows: one sender (5 prompts) per forward
    want = _reference(model, task, config)
    assert got.data["label"].tolist() == list(want)
    assert got.data["score"].tolist() == pytest.approx(list(want.values()), rel=1e-5, abs=1e-5)
    assert got.data["stage"].eq(config.stage).all()


def test_senders_in_the_lowest_receiver_layer_are_scored() -> None:
    """Receivers in layers 1 and 2: layer 1's other heads reach L2H1 and score (Merullo)."""
    model = _sharp_tiny()
    task = tiny_task(model, n=5)
    got = path_patching(model, task, ioi_stage("name_mover_queries", HeadSet("L1H0 L2H1")))
    layer1 = got.data[got.data["layer"] == 1]
    assert layer1["label"].tolist() == ["L1H1", "L1H2", "L1H3"]
    assert layer1["score"].abs().min() > 1e-4
    alone = path_patching(model, task, ioi_stage("name_mover_queries", HeadSet("L1H0")))
    same_layer = alone.data[alone.data["layer"] == 1]["score"]
    assert same_layer.abs().max() < 1e-5  # no path to a receiver of their own layer


def test_siblings_option_matters_under_gqa() -> None:
    """Freezing the group's other heads changes the score: the test above can tell them apart."""
    model = tiny_llama()
    task = tiny_task(model)
    receivers = HeadSet("L2H0")
    shared = path_patching(
        model, task, ioi_stage("s_inhibition_values", receivers, gqa_siblings="share")
    )
    frozen = path_patching(model, task, ioi_stage("s_inhibition_values", receivers))
    assert (shared.data["score"] - frozen.data["score"]).abs().max() > 1e-3


def test_freeze_mlps_changes_scores() -> None:
    """The reference cases with and without frozen MLPs differ, so both are checked."""
    model = tiny_llama()
    task = tiny_task(model)
    free = path_patching(model, task)
    frozen = path_patching(model, task, PathPatchingConfig(freeze_mlps=True))
    assert (free.data["score"] - frozen.data["score"]).abs().max() > 1e-3


def test_bad_configs_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="receiver heads"):
        PathPatchingConfig(receiver="q")
    with pytest.raises(ConfigError, match="no receiver heads"):
        PathPatchingConfig(receivers=("L1H0",))
    with pytest.raises(ConfigError, match="Unknown IOI stage"):
        ioi_stage("movers")
    model = tiny_llama()
    task = tiny_task(model)
    with pytest.raises(InputError, match="no position 'S3'"):
        path_patching(model, task, PathPatchingConfig(position="S3"))
    with pytest.raises(InputError, match="last position"):
        path_patching(model, task, PathPatchingConfig(position="S2"))
    with pytest.raises(InputError, match="No sender heads"):
        path_patching(model, task, ioi_stage("name_mover_queries", HeadSet("L0H1")))
