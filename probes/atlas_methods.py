"""The atlas methods of the analyzers in probes: sinks, retrieval, head kinds, anchors.

Each is an `interp.atlas.AtlasMethod`: it runs its analyzer's library workflow on the
atlas's settings (`QUICK` or `FULL` below, per method), handing its work folder to the
workflow that resumes, and returns the analyzer's per-head columns under the method's
name, its full tables and the settings it ran with. A column equals what the analyzer
gives on those settings; nothing is recomputed here.

The settings, and why: quick mode is a first look in a few minutes on two CPU cores
(4 sink prompts, 6 NIAH tests at 400 tokens, 4 repeated sequences, 2 short reasoning
traces); full mode is the shipped inputs at sizes that finish in about half an hour on the
default model (all 16 sink prompts, 36 NIAH tests at 1k-2k tokens plus the masking test
of the top-k heads on the held-out needles, 10 sequences, 8 traces of 256 tokens).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interp.atlas_part import AtlasPart, AtlasSettings
from interp.effects import EffectsConfig
from interp.generation import GenerationConfig
from interp.models import Model
from interp.prompts import data_path, load_prompts
from interp.results import HeadScores
from interp.work import StageProgress, for_stage
from probes import head_kinds as kinds
from probes import sinks as sink_analyzer
from probes.anchor_workflow import AnchorRunConfig, find_anchors
from probes.retrieval import RetrievalConfig, run_niah
from probes.retrieval_ablation import AblationConfig, run_niah_ablation

QUICK: dict[str, dict[str, Any]] = {
    "sinks": {"prompts": 4},
    "retrieval": {"lengths": (400,), "n_depths": 1, "max_new_tokens": 16},
    "head_kinds": {"n_sequences": 4, "length": 50},
    "anchors": {"problems": 2, "max_new_tokens": 64},
}
FULL: dict[str, dict[str, Any]] = {
    "sinks": {"prompts": 16},
    "retrieval": {"lengths": (1000, 2000), "n_depths": 3, "max_new_tokens": 30},
    "masking": {"lengths": (1000,), "n_depths": 3, "n_seeds": 1},
    "head_kinds": {"n_sequences": 10, "length": 50},
    "anchors": {"problems": 8, "max_new_tokens": 256},
}


def _chosen(settings: AtlasSettings, method: str) -> dict[str, Any]:
    return (QUICK if settings.quick else FULL)[method]


def per_head(table: pd.DataFrame, method: str, columns: dict[str, str]) -> pd.DataFrame:
    """layer, head and `columns` (analyzer column -> atlas name) prefixed with `method`."""
    chosen = table[["layer", "head", *columns]].rename(
        columns={old: f"{method}_{new}" for old, new in columns.items()}
    )
    return chosen.reset_index(drop=True)


def sinks(
    model: Model, settings: AtlasSettings, folder: Path | None, progress: StageProgress | None
) -> AtlasPart:
    """Sink share, first-token share, hidden-sink share and massive-token share per head,
    averaged over the shipped sink prompts (`probes.sinks.run`, paper thresholds)."""
    n_prompts = _chosen(settings, "sinks")["prompts"]
    prompts = load_prompts(data_path("prompts", "sinks.jsonl"))[:n_prompts]
    config = sink_analyzer.SinkConfig()
    result = sink_analyzer.run(model, prompts, config, for_stage(progress, "sinks"))
    summaries = result.summaries()
    columns = {
        "score": "sink_share",
        "first_token_share": "first_token_share",
        "hidden_sink_share": "hidden_sink_share",
        "massive_share": "massive_share",
    }
    return AtlasPart(
        heads=per_head(summaries["scores_per_head"].data, "sinks", columns),
        tables={
            "scores": result.heads.data,
            "sink_tokens": result.sink_tokens.data,
            "massive_dims": summaries["massive_dims"].data,
        },
        settings={"prompts": "sinks.jsonl", "n_prompts": len(prompts), **config.to_dict()},
    )


def retrieval(
    model: Model, settings: AtlasSettings, folder: Path | None, progress: StageProgress | None
) -> AtlasPart:
    """Retrieval score and activation frequency on the NIAH grid (`run_niah`); in full mode
    also the masking test of the top-k heads (`run_niah_ablation`, held-out needles): its
    accuracy effect with interval, on the masked heads' rows (NaN on the others)."""
    chosen = _chosen(settings, "retrieval")
    config = RetrievalConfig(**chosen)
    scored = run_niah(
        model,
        config,
        progress=for_stage(progress, "retrieval tests"),
        folder=None if folder is None else folder / "scoring",
    )
    columns = {"score": "score", "activation": "activation"}
    heads = per_head(scored.scores.data, "retrieval", columns)
    tables = {"scores": scored.scores.data, "tests": scored.tests.data}
    used: dict[str, Any] = {"scoring": config.to_dict()}
    if not settings.quick:
        masking = FULL["masking"]
        ablation = AblationConfig(
            ks=(settings.top_k,), n_seeds=masking["n_seeds"], max_new_tokens=config.max_new_tokens
        )
        effects = EffectsConfig(seed=settings.seed)
        masked = run_niah_ablation(
            model,
            scored.scores,
            masking["lengths"],
            masking["n_depths"],
            ablation,
            effects=effects,
            progress=for_stage(progress, "retrieval masking"),
            folder=None if folder is None else folder / "masking",
        )
        heads = heads.merge(masking_columns(masked.effects.data, scored.scores, settings.top_k))
        tables |= {"masking_tests": masked.tests.data, "masking_effects": masked.effects.data}
        used["masking"] = {**ablation.to_dict(), **masking, **effects.to_dict()}
    return AtlasPart(heads=heads, tables=tables, settings=used)


def masking_columns(effects: pd.DataFrame, scores: HeadScores, k: int) -> pd.DataFrame:
    """The top-k masking effect (accuracy difference and its interval) on the k masked
    heads' rows, NaN on every other head."""
    top = effects[(effects.condition == "top") & (effects.k == k)].iloc[0]
    masked = {(h.layer, h.head) for h in scores.top(k)}
    table = scores.data[["layer", "head"]].reset_index(drop=True)
    on = np.array([key in masked for key in zip(table.layer, table["head"], strict=True)])
    for suffix, column in (("", "difference"), ("_low", "ci_low"), ("_high", "ci_high")):
        table[f"retrieval_masking_effect{suffix}"] = np.where(on, float(top[column]), np.nan)
    return table


def head_kinds(
    model: Model, settings: AtlasSettings, folder: Path | None, progress: StageProgress | None
) -> AtlasPart:
    """Previous-token, duplicate-token and induction scores on repeated random tokens
    (`probes.head_kinds.run`, TransformerLens's head-detector definitions)."""
    config = kinds.HeadKindConfig(**_chosen(settings, "head_kinds"), seed=settings.seed)
    scores = kinds.run(model, config)
    columns = {kind: kind for kind in kinds.KINDS}
    return AtlasPart(
        heads=per_head(scores.data, "head_kinds", columns),
        tables={"scores": scores.data},
        settings=config.to_dict(),
    )


def anchors(
    model: Model, settings: AtlasSettings, folder: Path | None, progress: StageProgress | None
) -> AtlasPart:
    """Each head's average attention distance d(l, h) and its class (local, middle,
    global) on the shipped reasoning problems (`find_anchors`, no causal check), asked
    through the chat template where the tokenizer has one."""
    chosen = _chosen(settings, "anchors")
    config = AnchorRunConfig(
        problems=chosen["problems"],
        generation=GenerationConfig(max_new_tokens=chosen["max_new_tokens"]),
        run_causal=False,
        chat=model.tokenizer.chat_template is not None,
        seed=settings.seed,
    )
    run = find_anchors(model, config, progress=progress, folder=folder)
    columns = {"score": "distance", "role": "class"}
    return AtlasPart(
        heads=per_head(run.heads.data, "anchors", columns),
        tables={"heads": run.heads.data, "tokens": run.tokens.data},
        settings={"problems": config.problems, **config.identity()},
    )
