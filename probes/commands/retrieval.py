"""`interp score retrieval` and `interp ablate retrieval`: retrieval heads and the causal test.

Both commands call one library workflow (`probes.retrieval.run_niah`,
`probes.retrieval_ablation.run_niah_ablation`) with the output folder: the tests run in
batches of similar length (`--batch-size`, default suited to the device), the prompt prefix
they share is prefilled once, and each finished test is recorded in the folder's work log
as its batch ends (`interp.work`: `work.jsonl`, one line per test). Run again with the same
`--out` and the tests already there are skipped, so a stopped long run loses at most one
batch and resumes; the tables are built from all rows, in the tests' order, and do not
depend on the batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from interp.cli.common import parse_ints, work_progress
from interp.cli.options import Fields, Run, command
from interp.effects import EffectsConfig
from probes.niah import LengthRule, NiahInputs
from probes.retrieval import RetrievalConfig
from probes.retrieval_ablation import AblationConfig

if TYPE_CHECKING:
    from interp.models import Model

Needles = Annotated[
    Path | None, typer.Option(help="JSONL with 'needle', 'question', 'answer' per line.")
]
Haystack = Annotated[
    list[Path] | None,
    typer.Option(help="Haystack .txt file(s), joined in order. Default: data/haystacks/*.txt."),
]
Rule = Annotated[
    LengthRule,
    typer.Option(
        help="'prompt': the whole prompt has --lengths tokens (toolkit); 'reference': haystack"
        " + needle have length - 200 and the question follows (Wu et al.'s code)."
    ),
]
ABLATION = {"ks": (0, 5, 10, 20, 30, 50)}  # the command's default: fewer, smaller K than the paper
Batch = Annotated[
    int | None, typer.Option(help="Tests per forward (default: what suits the device).")
]


@command("score retrieval", resumable=True)
def score_retrieval(
    run: Run,
    config: Annotated[RetrievalConfig, Fields(rename={"n_depths": "depths"})],
    needles: Needles = None,
    haystack: Haystack = None,
    length_rule: Rule = "prompt",
    batch_size: Batch = None,
) -> None:
    """Score every head's retrieval score on a needle-in-a-haystack grid (Wu et al. 2024)."""
    from probes.retrieval import run_niah

    inputs = _inputs(needles, haystack, length_rule, batch_size)
    with _logged(run, inputs, "scoring.jsonl") as (model, update):
        result = run_niah(model, config, inputs, progress=update, folder=run.folder())
    tests = result.tests.data
    run.write(
        bundles=[result],
        figures=result.figures(),
        provenance=result.scores.provenance.to_dict(),
        geometry=vars(model.geometry),
        tests=len(tests),
        successful_tests=int(tests.success.sum()),
        retrieval_heads=result.retrieval_heads().label.tolist(),
    )
    run.report(result.summary_lines())


@command("ablate retrieval", folder="ablation", resumable=True)
def ablate_retrieval(
    run: Run,
    config: Annotated[AblationConfig, Fields(rename={"n_seeds": "seeds"}, defaults=ABLATION)],
    effects: Annotated[EffectsConfig, Fields(rename={"method": "interval"}, skip=("batch_size",))],
    scores: Annotated[
        Path, typer.Option(help="scores.parquet written by `interp score retrieval`.")
    ],
    lengths: Annotated[str, typer.Option(help="Comma-separated prompt lengths.")] = "1000,2000",
    depths: Annotated[int, typer.Option(help="Needle depths: linspace(0, 100%, N).")] = 3,
    needles: Needles = None,
    haystack: Haystack = None,
    length_rule: Rule = "prompt",
    batch_size: Batch = None,
) -> None:
    """NIAH accuracy with top-K retrieval heads vs K random heads masked (held-out needles)."""
    from probes.retrieval import load_scores
    from probes.retrieval_ablation import run_niah_ablation

    head_scores = load_scores(scores)
    run.record.inputs([scores])
    inputs = _inputs(needles, haystack, length_rule, batch_size)
    grid = parse_ints(lengths, 1, "--lengths") or ()
    with _logged(run, inputs, "heldout.jsonl") as (model, update):
        result = run_niah_ablation(
            model,
            head_scores,
            grid,
            depths,
            config,
            inputs,
            effects,
            progress=update,
            folder=run.folder(),
        )
    run.write(
        bundles=[result],
        figures=result.figures(),
        provenance=result.tests.provenance.to_dict(),
        scores=str(scores),
        scores_provenance=head_scores.provenance.to_dict(),
        tests=int(result.tests.data.condition.eq("none").sum()),
        ablation_summary=result.summary.data.to_dict("records"),
    )
    run.report(result.summary_lines())


def _inputs(
    needles: Path | None, haystack: list[Path] | None, rule: LengthRule, batch: int | None
) -> NiahInputs:
    """The NIAH inputs of both commands, checked before the model loads."""
    return NiahInputs(
        needles=needles, haystack=tuple(haystack or ()), length_rule=rule, batch_size=batch
    )


@contextmanager
def _logged(
    run: Run, inputs: NiahInputs, shipped: str
) -> Iterator[tuple[Model, Callable[[int, int], None]]]:
    """Claim the folder and load the model; the work inside goes through the folder's work
    log (recorded in the run), with a bar that says when a run resumes."""
    from interp.runs import log_files

    folder = run.folder()
    model = run.load_model()
    run.record.inputs(inputs.files(shipped))
    update, bar = work_progress(run.name)
    with bar:
        yield model, update
    run.record.wrote(log_files(folder))
