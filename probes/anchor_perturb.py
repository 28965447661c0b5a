"""The paper's causal experiment for anchors: perturb a high- and a low-FAI token, roll out.

Li et al. (arXiv 2510.13554, §4.1, Table 1; examples in Appendix B.10 of v2) ask whether
perturbing a high-FAI token changes the rest of the reasoning more than perturbing a low-FAI
one. At a chosen position i* they take the model's distribution p(· | o_<i*), force each of
its top-k candidates v at i*, roll out greedily, and compare each counterfactual
continuation õ^v_>i* with the original o_>i* by the Jaccard similarity of their content-word
sets: |S(o) ∩ S(õ)| / |S(o) ∪ S(õ)|. Over 70 GSM8K problems: 0.534 at high-FAI positions vs
0.631 at low-FAI positions; the high-FAI similarity was lower in 87.14% of trials.

Per trace this module takes one high- and one low-FAI response token and, for each, forces
the `alternatives` highest-logit tokens other than the original (the paper's "other tokens
from the top-k candidates"), plus the original token itself as the reference row, and rolls
them out greedily through `interp.generation` (`rollout` new tokens): a position's k + 1 rows
always share one batch, with those of `positions_per_batch` positions of similar length
(left-padded). Each alternative's rollout is compared with two originals:

* `jaccard`: the original token's own greedy rollout (the paper's examples compare with
  "the original response by greedy decoding"; for a sampled trace this is the greedy
  original, so sampling noise does not count as perturbation);
* `jaccard_trace`: the trace's own next `rollout` tokens (the sampled original).

Choices the paper leaves open [I] (named, the toolkit's): k (`alternatives`, 5); the
rollout length (`rollout`, 32; the paper reports "across rollout horizons"); which high-
and low-FAI positions (the highest and the lowest FAI among response tokens followed by at
least `rollout` response tokens, so each position's FAI averages at least that many later
queries and the trace has an original continuation as long as the rollout; ties go to the
earlier token); and the content words (`content_words`: lowercased runs of letters or
digits, numbers kept, minus the function words in `STOPWORDS`).

Every position is a work item (`interp.work`), so a stopped run resumes. `summarize` pairs
each trace's mean Jaccard over its alternatives at the high- and the low-FAI position
through `interp.effects.compare` (baseline = low FAI, intervened = high FAI, BCa interval
over traces; `worsened` counts the traces whose high-FAI similarity is lower, the paper's
Pr(Top < Bottom)). Cost per trace: two prefix forwards and two positions' greedy rollouts
of `alternatives` + 1 rows each.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
import torch

from interp.config import Config, check_range
from interp.effects import EffectsConfig, compare
from interp.errors import InputError
from interp.generation import GenerationConfig, generate
from interp.models import Model
from interp.results import EffectTable, ItemTable, Provenance, TokenScores
from interp.runs import run_identity
from interp.work import Item, Row, Work, WorkFolder, open_log
from probes.anchor_causal import CausalResult
from probes.anchor_traces import Trace

Kind = Literal["high", "low"]

# Function words left out of the content-word sets [I] (the paper gives no list): articles,
# pronouns, prepositions, conjunctions, auxiliaries and common determiners and adverbs.
FUNCTION_WORDS = """
a an the this that these those some any each every all both either neither no none
i me my mine we us our ours you your yours he him his she her hers it its they them
their theirs who whom whose which what where when why how whoever whatever
am is are was were be been being do does did doing done have has had having
will would shall should can could may might must
and or but nor so yet if then else than because since while although though unless
until as of at by for from in into onto on off out over under up down to with within
without about above below after before between through during against among around
also just only very too quite rather really not there here now again still even
such same other another own more most less least much many few s t ll re ve d m
"""
STOPWORDS = frozenset(FUNCTION_WORDS.split())
WORD = re.compile(r"[a-z0-9]+")


def content_words(text: str) -> set[str]:
    """S(·): the text's lowercased runs of letters or digits, less `STOPWORDS`."""
    return {w for w in WORD.findall(text.lower()) if w not in STOPWORDS}


def jaccard(a: set[str], b: set[str]) -> float:
    """|a ∩ b| / |a ∪ b|; 1 when both are empty (nothing differs)."""
    return 1.0 if not a | b else len(a & b) / len(a | b)


@dataclass(frozen=True, kw_only=True)
class PerturbConfig(Config):
    """Attributes:
    alternatives: k, the highest-logit tokens other than the original forced at each
        position (the paper does not give k; 5 [I]).
    rollout: greedy tokens generated after the forced token and compared (32 [I]); a
        position needs that many response tokens after it.
    positions_per_batch: positions whose rollouts (alternatives + 1 rows each) run as one
        left-padded generation batch; the tables depend on it only at float rounding.
    """

    alternatives: int = 5
    rollout: int = 32
    positions_per_batch: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "alternatives", 1)
        check_range(self, "rollout", 1)
        check_range(self, "positions_per_batch", 1)


@dataclass(frozen=True)
class PerturbResult(CausalResult):
    FILES: ClassVar[dict[str, str]] = {"effects": "perturb_effects", "per_item": "perturb_items"}


@dataclass(frozen=True)
class Position:
    """One perturbed position: its trace, kind, index in prompt + response, and FAI."""

    trace: Trace
    kind: Kind
    position: int
    fai: float


def choose_positions(rows: pd.DataFrame, rollout: int) -> dict[Kind, pd.Series] | None:
    """One trace's highest- and lowest-FAI rows among those followed by >= `rollout`
    response tokens (ties: the earlier token); None when fewer than two such rows differ.

    Args:
        rows: the trace's rows of the token table, in response order.
    """
    n_response = len(rows)
    eligible = rows[np.isfinite(rows.fai) & (rows.response_position < n_response - rollout)]
    if len(eligible) < 2:
        return None
    fai = eligible.fai.to_numpy(float)
    high, low = eligible.iloc[int(np.argmax(fai))], eligible.iloc[int(np.argmin(fai))]
    return None if high.position == low.position else {"high": high, "low": low}


def alternatives(logits: torch.Tensor, original: int, k: int) -> list[int]:
    """The k highest-logit token ids other than `original` (ties: the lower id first)."""
    order = torch.argsort(logits, descending=True, stable=True)[: k + 1].tolist()
    return [t for t in order if t != original][:k]


def _forced(model: Model, item: Position, k: int) -> tuple[list[int], torch.Tensor]:
    """The original token and its k alternatives at the item's position, and the log-probs
    of the distribution they come from (one forward of the trace cut before the position)."""
    ids, at = item.trace.ids, item.position
    with torch.no_grad():
        prefix = torch.tensor([ids[:at]], device=model.device)
        logits = model.hf(prefix, use_cache=False).logits[0, -1].float()
    return [ids[at], *alternatives(logits, ids[at], k)], torch.log_softmax(logits, -1)


def _rollouts(model: Model, items: list[Position], config: PerturbConfig) -> list[list[Row]]:
    """Force the original and each alternative at every item's position, roll all of them
    out greedily as one batch, and compare each alternative's continuation with both
    originals (one list of rows per item)."""
    forced = [_forced(model, item, config.alternatives) for item in items]
    contexts = [
        [*item.trace.ids[: item.position], token]
        for item, (tokens, _) in zip(items, forced, strict=True)
        for token in tokens
    ]
    with torch.no_grad():
        out = generate(
            model,
            contexts,
            GenerationConfig(max_new_tokens=config.rollout),
            batch_size=len(contexts),
        )
    rows, width = [], config.alternatives + 1
    for n, (item, (tokens, logprobs)) in enumerate(zip(items, forced, strict=True)):
        mine = out[n * width : (n + 1) * width]
        after = item.trace.ids[item.position + 1 : item.position + 1 + config.rollout]
        greedy = content_words(mine[0].text)
        trace = content_words(model.tokenizer.decode(after, skip_special_tokens=True))
        rows.append(
            [
                {
                    "rank": rank,
                    "token_id": token,
                    "token": model.tokenizer.decode([token]),
                    "logprob": float(logprobs[token]),
                    "jaccard": jaccard(greedy, content_words(g.text)),
                    "jaccard_trace": jaccard(trace, content_words(g.text)),
                    "rollout_tokens": len(g.response_ids),
                    "continuation": g.text,
                }
                for rank, (token, g) in enumerate(zip(tokens[1:], mine[1:], strict=True), 1)
            ]
        )
    return rows


def run(
    model: Model,
    traces: Sequence[Trace],
    tokens: TokenScores,
    config: PerturbConfig | None = None,
    effects: EffectsConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    folder: WorkFolder | None = None,
) -> PerturbResult:
    """The perturbation experiment on every trace with two eligible positions.

    Args:
        tokens: the per-token table of the traces (`probes.anchors.run(...).tokens`); the
            result carries its provenance.
        progress: called as progress(done, total) over the positions.
        folder: record each finished position there (`interp.work`); run again with the
            same folder to resume a stopped run. A folder of another run is refused.

    Raises:
        InputError: no trace has two positions with a defined FAI and `rollout` response
            tokens after them.
    """
    config = config or PerturbConfig()
    effects = effects or EffectsConfig()
    identity = {**run_identity(tokens.provenance), "perturb": config.to_dict()}
    by_trace = dict(tuple(tokens.data.groupby("trace", sort=False)))
    items = []
    for trace in traces:
        chosen = choose_positions(by_trace[trace.name], config.rollout)
        for kind, row in (chosen or {}).items():
            position = Position(trace, kind, int(row.position), float(row.fai))
            items.append(Item(f"perturb {kind}/{trace.name}", position, position.position))
    if not items:
        raise InputError(
            f"No trace has two response tokens with a defined FAI and {config.rollout}"
            " response tokens after them: lower --rollout or use longer traces."
        )
    work = Work(items, open_log(folder, identity), config.positions_per_batch)
    rows = work.run(lambda batch: _rollouts(model, batch, config), progress)
    table = pd.DataFrame(
        [
            {
                "trace": item.value.trace.name,
                "kind": item.value.kind,
                "position": item.value.position,
                "response_position": item.value.position - item.value.trace.n_prompt,
                "fai": item.value.fai,
                "original_id": item.value.trace.ids[item.value.position],
                **row,
            }
            for item, item_rows in zip(items, rows, strict=True)
            for row in item_rows
        ]
    )
    return summarize(table, tokens.provenance, effects)


def summarize(
    rows: pd.DataFrame, provenance: Provenance, effects: EffectsConfig | None = None
) -> PerturbResult:
    """High- vs low-FAI similarity per trace (mean over its alternatives), paired over
    traces with intervals: one row per reference (`jaccard`, `jaccard_trace`)."""
    effects = effects or EffectsConfig()
    per_trace = rows.groupby(["trace", "kind"], sort=False)[["jaccard", "jaccard_trace"]].mean()
    high = per_trace.xs("high", level="kind")
    low = per_trace.xs("low", level="kind").loc[high.index]
    table = [
        {
            "comparison": "high vs low FAI",
            **compare(low[metric].to_numpy(), high[metric].to_numpy(), metric, effects),
        }
        for metric in ("jaccard", "jaccard_trace")
    ]
    return PerturbResult(
        EffectTable(pd.DataFrame(table), provenance),
        ItemTable(rows.reset_index(drop=True), provenance),
    )
