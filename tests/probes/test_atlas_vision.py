"""The atlas's vision columns: the vision workflow's per-head scores, VHR's and VAR's choices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from interp.atlas_part import AtlasSettings, NotApplicable
from interp.errors import InputError
from probes import atlas_vision
from probes.atlas_vision import pope_prompts, vision, vision_columns
from probes.vision import image_attention, vision_head_divergence
from probes.visual_sinks import visual_sinks
from tests.tiny import tiny_llama, tiny_llava


def test_columns_are_the_vision_analyzers_on_the_shapes_scenes(monkeypatch):
    monkeypatch.setattr(atlas_vision, "QUICK_SCENES", 2)  # figures cost: keep it short
    model = tiny_llava()
    part = vision(model, AtlasSettings(quick=True), None, None)
    texts, images = pope_prompts(atlas_vision.QUICK_SCENES)
    assert len(set(texts)) > 1  # a question per scene
    direct = {
        "image_attention": image_attention(model, texts, images).data,
        "vhd": vision_head_divergence(model, texts, images).data,
        "visual_sinks": visual_sinks(model, texts, images).data,
    }
    heads = part.heads
    assert len(heads) == 12 and heads[["layer", "head"]].duplicated().sum() == 0
    shares = direct["image_attention"].groupby(["layer", "head"])
    np.testing.assert_allclose(heads["vision_image_share"], shares["score"].mean(), rtol=1e-12)
    np.testing.assert_allclose(heads["vision_nonsink_share"], shares["nonsink_share"].mean())
    vhd = direct["vhd"].groupby(["layer", "head"])["score"].mean()
    np.testing.assert_allclose(heads["vision_vhd"], vhd, rtol=1e-12)
    for name, table in direct.items():
        assert_frame_equal(part.tables[name], table)
    flags = vision_columns({**part.tables, **direct}, model.geometry.n_layers)
    assert heads["vision_vhr_chosen"].tolist() == flags["vhr_chosen"].tolist()
    assert 0 < heads["vision_vhr_chosen"].sum() < len(heads)
    assert part.settings["scenes"] == atlas_vision.QUICK_SCENES


def test_a_text_model_is_not_applicable():
    with pytest.raises(NotApplicable, match="text-only") as raised:
        vision(tiny_llama(), AtlasSettings(quick=True), None, None)
    assert isinstance(raised.value, InputError)


def _table(rows, columns):
    return pd.DataFrame(rows, columns=columns)


def test_vhr_and_var_choose_a_head_on_half_the_prompts_in_their_layers():
    # 16 layers: VHR reinforces layer 1 and layers 2-15 (not 0); VAR edits layers 2-14.
    heads = [(0, 0), (2, 0), (2, 1), (3, 0), (15, 0)]
    vhd = _table(
        [  # example, layer, head, score, chosen
            (0, 0, 0, 1.0, True), (1, 0, 0, 1.0, True),  # chosen, but outside VHR's layers
            (0, 2, 0, 1.0, True), (1, 2, 0, 1.0, False),  # half the prompts: chosen
            (0, 2, 1, 1.0, False), (1, 2, 1, 1.0, False),
            (0, 3, 0, 1.0, False), (1, 3, 0, 1.0, False),
            (0, 15, 0, 1.0, False), (1, 15, 0, 1.0, True),
        ],
        ["example", "layer", "head", "score", "chosen"],
    )  # fmt: skip
    shares = _table(
        [  # example, layer, head, image share, non-sink share
            (0, 0, 0, 0.9, 0.9), (1, 0, 0, 0.9, 0.9),  # outside VAR's layers
            (0, 2, 0, 0.3, 0.6), (1, 2, 0, 0.3, 0.6),  # a visual sink in layer 2 on prompt 1 only
            (0, 2, 1, 0.1, 0.9), (1, 2, 1, 0.19, 0.9),  # too little on the image
            (0, 3, 0, 0.9, 0.9), (1, 3, 0, 0.9, 0.9),  # no visual sink in layer 3
            (0, 15, 0, 0.9, 0.9), (1, 15, 0, 0.9, 0.9),  # outside VAR's layers
        ],
        ["example", "layer", "head", "score", "nonsink_share"],
    )  # fmt: skip
    sinks = _table(
        [(0, 2, False), (0, 2, False), (1, 2, False), (1, 2, True), (0, 0, True), (1, 3, False)],
        ["example", "layer", "visual_sink"],
    )
    per_head = _table([(*h, 0.5, 0.4) for h in heads], ["layer", "head", "score", "nonsink_share"])
    tables = {
        "image_attention": shares,
        "vhd": vhd,
        "visual_sinks": sinks,
        "image_attention_per_head": per_head,
        "vhd_per_head": per_head[["layer", "head", "score"]].assign(score=2.0),
    }
    columns = vision_columns(tables, 16)
    assert columns[["layer", "head"]].values.tolist() == [list(h) for h in heads]
    assert columns["vhr_chosen"].tolist() == [False, True, False, False, True]
    assert columns["var_image_centric"].tolist() == [False, True, False, False, False]
    assert columns["image_share"].tolist() == [0.5] * 5 and columns["vhd"].tolist() == [2.0] * 5
    shares.loc[shares.layer == 2, "nonsink_share"] = 0.4  # below rho: no longer image-centric
    assert not vision_columns(tables, 16)["var_image_centric"].any()
