"""`interp score anchors` in one call: preplan and anchor tokens in reasoning traces.

Li et al. 2025. Generates reasoning traces for the shipped problems (or reads the user's),
splits the band's heads into local and global by back-distance (`probes.anchors.run`),
scores every response token, reports the paper's peak statistics beside the toolkit's
earlier definition (`probes.anchor_stats`) and the causal checks with intervals, and draws
the figures. Two causal checks, chosen by `causal_checks`: "perturb", the paper's experiment
and the default (`probes.anchor_perturb.run`: force the top-k alternatives at a high- and a
low-FAI token, roll out greedily, content-word Jaccard), and "block", the toolkit's
attention-blocking check (`probes.anchor_causal.run`). Every stage records its finished work
in one work log whose identity covers them all (`interp.work`): generation as one item,
each pass and each causal check per trace or position, so a stopped run resumes with the
same folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from interp.config import Config
from interp.effects import EffectsConfig
from interp.errors import ConfigError, InputError
from interp.generation import GenerationConfig, Step
from interp.models import Model
from interp.prompts import data_path, read_jsonl, read_text
from interp.results import EffectTable, HeadScores, Provenance, TokenScores, hash_inputs
from interp.runs import WorkLog
from interp.work import Item, StageProgress, Work, WorkFolder, for_stage, open_log
from probes import anchor_causal, anchor_credit, anchor_figures, anchor_perturb, anchors
from probes.anchor_stats import EARLIER, PeakStatsConfig, peak_statistics, why_no_statistics
from probes.anchor_traces import Problem, Trace, generate_traces, load_problems, read_traces

CHECKS = ("perturb", "block")  # the causal checks, the paper's first


@dataclass(frozen=True, kw_only=True)
class AnchorRunConfig(Config):
    """The workflow's parameters: each stage's config and what it runs on.

    Attributes:
        anchors: the head split and token scores.
        credit: the per-token credit rule exported as credit.jsonl.
        perturb: the perturbation experiment's k and rollout length.
        causal: the blocking check's draws.
        run_causal: run the causal checks (`causal_checks`).
        causal_checks: which: "perturb" (the paper's experiment) and/or "block" (attention
            to the anchors blocked in the global heads).
        generation: how the shipped problems are answered (ignored with traces given).
        problems: how many shipped problems to answer.
        chat: wrap generated prompts in the chat template.
        n_boot: bootstrap resamples of the intervals.
        seed: seed of the statistics' and the intervals' resampling.
    """

    anchors: anchors.AnchorConfig = field(default_factory=anchors.AnchorConfig)
    credit: anchor_credit.CreditConfig = field(default_factory=anchor_credit.CreditConfig)
    perturb: anchor_perturb.PerturbConfig = field(default_factory=anchor_perturb.PerturbConfig)
    causal: anchor_causal.CausalConfig = field(default_factory=anchor_causal.CausalConfig)
    run_causal: bool = True
    causal_checks: tuple[str, ...] = ("perturb",)
    generation: GenerationConfig = field(
        default_factory=lambda: GenerationConfig(max_new_tokens=256)
    )
    problems: int = 44
    chat: bool = True
    n_boot: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.effects()  # its range checks, before any work
        unknown = sorted(set(self.causal_checks) - set(CHECKS))
        if unknown or not self.causal_checks:
            raise ConfigError(
                f"causal_checks takes one or more of {', '.join(CHECKS)}; got"
                f" {','.join(self.causal_checks) or 'none'}."
            )

    def effects(self) -> EffectsConfig:
        """The intervals' bootstrap settings."""
        return EffectsConfig(n_boot=self.n_boot, seed=self.seed)

    def identity(self) -> dict[str, Any]:
        """The run's parameters as one flat dict: the work log's and the tables' config."""
        return {
            **self.anchors.to_dict(),
            **self.credit.to_dict(),
            **self.perturb.to_dict(),
            **self.causal.to_dict(),
            "causal_checks": list(self.causal_checks),
            **self.generation.to_dict(),
            "chat": self.chat,
            "n_boot": self.n_boot,
        }


def check_inputs(config: AnchorRunConfig, traces: Path | None = None) -> None:
    """Refuse, before a model loads, a problem count or response budget that cannot work
    and a trace file that is not JSON lines.

    FAI reads queries at least `h_lo` tokens after a token, so a response needs more than
    `h_lo` tokens (and two for ΔWAAD) to have anchors and preplan tokens at all.
    """
    shipped = len(load_problems())
    if not 1 <= config.problems <= shipped:
        raise InputError(f"--problems must lie in 1..{shipped}, got {config.problems}.")
    h_lo, budget = config.anchors.h_lo, config.generation.max_new_tokens
    least = max(h_lo + 1, 2)
    if traces is None and budget < least:
        raise InputError(
            f"--max-new-tokens {budget}: a response needs at least {least} tokens to"
            f" have an anchor (FAI reads queries --h-lo={h_lo} tokens later); raise it"
            " or lower --h-lo."
        )
    read_text(traces or data_path("problems", "problems.jsonl"), "Trace")
    if traces is not None:
        read_jsonl(traces, "Trace")


@dataclass(frozen=True)
class AnchorRun:
    """What `find_anchors` returns.

    Attributes:
        traces: the traces scored (generated or read).
        heads: each head's back-distance and role (local, global).
        tokens: every response token's WAAD, FAI, preplan and anchor flags.
        statistics: the peak statistics, paper's and earlier definition; None when there
            are none (`statistics_empty` says why).
        causal: the blocking check's effects and per-item rows, or None.
        perturb: the perturbation experiment's effects and per-item rows, or None.
        figures: head distances, the first trace's token strip and local-head map.
    """

    traces: list[Trace]
    heads: HeadScores
    tokens: TokenScores
    statistics: EffectTable | None
    statistics_empty: str | None
    causal: anchor_causal.CausalResult | None
    perturb: anchor_perturb.PerturbResult | None
    figures: dict[str, Any]

    def tables(self) -> dict[str, HeadScores | TokenScores | EffectTable]:
        """The tables by file name (the causal checks' are in `bundles()`)."""
        tables: dict[str, HeadScores | TokenScores | EffectTable] = {
            "heads": self.heads,
            "tokens": self.tokens,
        }
        if self.statistics is not None:
            tables["statistics"] = self.statistics
        return tables

    def bundles(self) -> list[anchor_perturb.PerturbResult | anchor_causal.CausalResult]:
        """The causal checks' results that ran, each a bundle of tables."""
        return [b for b in (self.perturb, self.causal) if b is not None]

    def summary_lines(self) -> list[str]:
        """The counts, the peak statistics and the causal checks with their warnings."""
        lines = [f"{len(self.traces)} traces, {len(self.tokens)} response tokens"]
        columns = EffectTable.required
        if self.statistics is None:
            lines.append(f"no statistics or causal check: {self.statistics_empty}")
        else:
            lines += self.statistics.console_lines("{statistic}", ["statistic", *columns])
        for bundle in self.bundles():
            lines += bundle.effects.console_lines("{comparison}", ["comparison", *columns])
        return lines

    def save_files(self, folder: Path, credit: anchor_credit.CreditConfig) -> list[Path]:
        """Write the per-token credit (credit.jsonl) and the traces (traces.jsonl)."""
        traces = folder / "traces.jsonl"
        traces.write_text("".join(json.dumps(t.to_dict()) + "\n" for t in self.traces), "utf-8")
        return [anchor_credit.write_credit(folder / "credit.jsonl", self.tokens, credit), traces]

    def manifest_fields(self) -> dict[str, Any]:
        """The manifest's account of the run: counts, head roles, statistics, effects."""
        fields: dict[str, Any] = {
            "provenance": self.tokens.provenance.to_dict(),
            "traces": len(self.traces),
            "response_tokens": len(self.tokens),
            "local_heads": anchors.heads_with_role(self.heads, "local").labels,
            "global_heads": anchors.heads_with_role(self.heads, "global").labels,
            "statistics": [],
        }
        if self.statistics is None:
            fields["statistics_empty"] = self.statistics_empty
        else:
            fields["statistics"] = self.statistics.data.to_dict("records")
        if self.perturb is not None:
            fields["perturb"] = self.perturb.effects.data.to_dict("records")
        if self.causal is not None:
            fields["causal"] = self.causal.effects.data.to_dict("records")
        return fields


def find_anchors(
    model: Model,
    config: AnchorRunConfig | None = None,
    traces: Path | None = None,
    progress: StageProgress | None = None,
    folder: WorkFolder | None = None,
) -> AnchorRun:
    """Score the preplan and anchor tokens of `traces` (default: answer the shipped problems).

    Args:
        model: the model that reasons (and is read).
        config: every stage's parameters.
        traces: a JSONL of traces ('prompt'/'response' text or ids), used as they are.
        progress: called as progress(stage, done, total) for the stages "generation",
            "anchor passes", "perturbation" and "causal check" (blocking).
        folder: record each stage's finished work there; run again to resume.
    """
    config = config or AnchorRunConfig()
    check_inputs(config, traces)
    source = traces or data_path("problems", "problems.jsonl")
    chosen = [] if traces else load_problems()[: config.problems]
    identity = Provenance(
        **model.provenance_fields(),
        analyzer=anchors.ANALYZER,
        config=config.identity(),
        inputs_hash=hash_inputs([read_text(source, "Trace"), [p.id for p in chosen]]),
        n_inputs=len(chosen),
    )
    log = open_log(folder, identity)
    items = (
        read_traces(traces, model) if traces else _generate(model, chosen, config, log, progress)
    )
    scored = anchors.run(
        model, items, config.anchors, for_stage(progress, "anchor passes"), folder=log
    )
    heads, tokens = scored.heads, scored.tokens
    effects = config.effects()
    empty = why_no_statistics(tokens, config.anchors.h_lo)
    statistics: EffectTable | None = None
    causal: anchor_causal.CausalResult | None = None
    perturb: anchor_perturb.PerturbResult | None = None
    if empty is None:
        # the paper's statistic, and beside it the toolkit's earlier definition
        paper, earlier = (
            peak_statistics(tokens, PeakStatsConfig(seed=config.seed, **extra), effects)
            for extra in ({}, EARLIER)
        )
        both = pd.concat([paper.data, earlier.data], ignore_index=True)
        statistics = EffectTable(both, paper.provenance)
    if config.run_causal and empty is None and "perturb" in config.causal_checks:
        perturb = anchor_perturb.run(
            model,
            items,
            tokens,
            config.perturb,
            effects,
            for_stage(progress, "perturbation"),
            log,
        )
    if config.run_causal and empty is None and "block" in config.causal_checks:
        global_heads = anchors.heads_with_role(heads, "global")
        causal = anchor_causal.run(
            model,
            items,
            tokens,
            global_heads,
            config.causal,
            effects,
            for_stage(progress, "causal check"),
            log,
        )
    return AnchorRun(
        items, heads, tokens, statistics, empty, causal, perturb, _figures(model, items, scored)
    )


def _generate(
    model: Model,
    chosen: list[Problem],
    config: AnchorRunConfig,
    log: WorkLog | None,
    progress: StageProgress | None,
) -> list[Trace]:
    """Answer the problems as one work item (recorded in `log`, so a rerun reuses it)."""
    report = for_stage(progress, "generation")
    finished: set[int] = set()

    def on_step(step: Step) -> None:
        ended = step.kept.logical_not().tolist()
        finished.update(r for r, end in zip(step.rows, ended, strict=True) if end)
        if report is not None:
            report(len(finished), len(chosen))

    def answer(_: list[None]) -> list[list[dict[str, Any]]]:
        batch_size = config.anchors.batch_size
        made = generate_traces(
            model,
            chosen,
            config.generation,
            chat=config.chat,
            batch_size=batch_size,
            on_step=on_step,
        )
        if report is not None:
            report(len(chosen), len(chosen))
        return [[t.to_dict() for t in made]]

    (rows,) = Work([Item("traces", None)], log).run(answer)
    return [Trace.from_dict(row) for row in rows]


def _figures(model: Model, items: list[Trace], scored: anchors.AnchorResult) -> dict[str, Any]:
    """Head back-distances, and the first trace's token strip and most local head's map."""
    from interp.figures import head_heatmap

    first = items[0]
    local = anchor_figures.local_head_for_map(scored.heads.data)
    pattern = anchor_figures.head_pattern(model, first, local)
    title = f"Back-distance d(l,h) ({model.spec})"
    return {
        "head_distance": head_heatmap(scored.heads, "score", title),
        "token_strip": anchor_figures.token_strip(scored.tokens, first.name),
        "local_head_map": anchor_figures.attention_map(
            pattern, local, first.n_prompt, f"Most local head on {first.name}"
        ),
    }
