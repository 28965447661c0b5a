"""`interp score retrieval` and `interp ablate retrieval`: retrieval heads and the causal test.

Both commands append one JSON line per finished test to `tests.jsonl` in the output folder
as they go. Run again with the same `--out` and the tests already there are skipped, so a
stopped long run loses nothing and resumes; the tables are then built from all rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from interp.cli.common import (
    DeviceOption,
    ModelOption,
    StaticOption,
    export_figures,
    load_model_or_fail,
    progress_bar,
    result_folder,
    user_errors,
    write_manifest,
)

NeedlesOption = typer.Option(
    "--needles", help="JSONL with 'needle', 'question', 'answer' per line."
)
HaystackOption = typer.Option(
    "--haystack", help="Haystack .txt file(s), joined in order. Default: data/haystacks/*.txt."
)
LengthsOption = typer.Option(
    "--lengths", help="Comma-separated prompt lengths in tokens (e.g. 1000,2000,4000)."
)
DepthsOption = typer.Option("--depths", help="Needle depths: linspace(0, 100%, N).")
OutOption = typer.Option("--out", "-o", help="Output folder (reused to resume a run).")
ThresholdOption = typer.Option(help="A retrieval head has mean score > this (paper: 0.1).")
MaxNewOption = typer.Option(help="Greedy decoding budget (paper: 50; stops at a newline).")


def _ints(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    from interp.errors import InputError

    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise InputError(f"Expected comma-separated integers, got {text!r}.") from exc


def _tests(
    loaded: Any,
    needles: Path | None,
    default: str,
    haystack: list[Path] | None,
    lengths: tuple[int, ...],
    depths: int,
    max_new: int,
) -> list[Any]:
    from interp.prompts import data_path
    from probes import niah

    needle_set = niah.load_needles(needles or data_path("needles", default))
    text = niah.load_haystack(haystack)
    return niah.build_tests(loaded, needle_set, text, lengths, depths, max_new)


def _resume(folder: Path) -> list[dict[str, Any]]:
    path = folder / "tests.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    return row["needle"], row["length"], row["depth"]


def _run_incrementally(folder: Path, tests: list[Any], label: str, fn: Any) -> list[dict]:
    """Run `fn(test) -> rows` for tests not yet in tests.jsonl, appending rows as they come."""
    rows = _resume(folder)
    done = {_key(r) for r in rows}
    todo = [t for t in tests if _key(t.key()) not in done]
    if done:
        typer.echo(
            f"resuming: {len(tests) - len(todo)} of {len(tests)} tests already done", err=True
        )
    update, bar = progress_bar(len(todo), label)
    with bar, (folder / "tests.jsonl").open("a") as sink:
        for index, test in enumerate(todo, start=1):
            new = fn(test)
            for row in new:
                sink.write(json.dumps(row) + "\n")
            sink.flush()
            rows.extend(new)
            update(index, len(todo))
    wanted = {_key(t.key()) for t in tests}
    return [r for r in rows if _key(r) in wanted]


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def score_retrieval(
    model: Annotated[str | None, ModelOption] = None,
    needles: Annotated[Path | None, NeedlesOption] = None,
    haystack: Annotated[list[Path] | None, HaystackOption] = None,
    lengths: Annotated[str | None, LengthsOption] = None,
    depths: Annotated[int, DepthsOption] = 10,
    max_new_tokens: Annotated[int, MaxNewOption] = 50,
    count: Annotated[str, typer.Option(help="'set' (paper) or 'events' (code).")] = "set",
    span: Annotated[str, typer.Option(help="'answer' (code) or 'needle'.")] = "answer",
    average: Annotated[
        str, typer.Option(help="'successful' (code), 'failed_as_zero' or 'all'.")
    ] = "successful",
    threshold: Annotated[float, ThresholdOption] = 0.1,
    out: Annotated[Path | None, OutOption] = None,
    device: Annotated[str, DeviceOption] = "cpu",
    static: Annotated[bool, StaticOption] = True,
) -> None:
    """Score every head's retrieval score on a needle-in-a-haystack grid (Wu et al. 2024)."""
    with user_errors():
        import pandas as pd

        from interp.figures import head_heatmap
        from interp.results import Provenance, hash_inputs
        from probes import retrieval

        config = retrieval.RetrievalConfig(
            lengths=_ints(lengths),
            n_depths=depths,
            max_new_tokens=max_new_tokens,
            count=count,
            span=span,
            average=average,
            threshold=threshold,  # type: ignore[arg-type]
        )
        loaded = load_model_or_fail(model, device)
        grid = config.grid_lengths(loaded)
        tests = _tests(loaded, needles, "scoring.jsonl", haystack, grid, depths, max_new_tokens)
        folder = result_folder(out, "retrieval", loaded.spec)

        def score(test: Any) -> list[dict]:
            scores, response, _ = retrieval.score_test(loaded, test, config)
            return [retrieval.result_row(test, scores, response, config)]

        rows = _run_incrementally(folder, tests, "retrieval", score)
        provenance = Provenance(
            model=loaded.spec,
            weights_hash=loaded.weights_hash,
            analyzer=retrieval.ANALYZER,
            config=config.to_dict(),
            inputs_hash=hash_inputs([[*t.key().values(), t.input_ids.tolist()] for t in tests]),
            n_inputs=len(tests),
        )
        geometry = loaded.geometry
        result = retrieval.aggregate(
            pd.DataFrame(rows), geometry.n_layers, geometry.n_heads, config, provenance
        )
        result.scores.save(folder / "scores.parquet")
        result.scores.data.to_csv(folder / "scores.csv", index=False)
        result.tests.to_parquet(folder / "tests.parquet", index=False)
        result.tests.drop(columns="head_scores").to_csv(folder / "tests.csv", index=False)
        figure = head_heatmap(result.scores, "score", f"Retrieval score ({loaded.spec})")
        written = export_figures({"retrieval_scores": figure}, folder, static)
        table = result.scores.data
        found = table[table.score > threshold].sort_values("score", ascending=False)
        write_manifest(
            folder,
            {
                "command": "score retrieval",
                "provenance": provenance.to_dict(),
                "geometry": vars(geometry),
                "tests": len(rows),
                "successful_tests": int(result.tests.success.sum()),
                "retrieval_heads": found.label.tolist(),
                "files": _files(folder),
            },
        )
        typer.echo(f"{len(rows)} tests ({int(result.tests.success.sum())} successful) -> {folder}")
        typer.echo(
            f"{len(found)} of {len(table)} heads score > {threshold}: "
            + ", ".join(f"{r.label} ({r.score:.2f})" for r in found.head(15).itertuples())
        )
        typer.echo(f"{len(written)} figure files in {folder / 'figures'}")


def ablate_retrieval(
    scores: Annotated[
        Path, typer.Option("--scores", help="scores.parquet written by `interp score retrieval`.")
    ],
    model: Annotated[str | None, ModelOption] = None,
    needles: Annotated[Path | None, NeedlesOption] = None,
    haystack: Annotated[list[Path] | None, HaystackOption] = None,
    lengths: Annotated[str, LengthsOption] = "1000,2000",
    depths: Annotated[int, DepthsOption] = 3,
    ks: Annotated[str, typer.Option(help="Numbers of heads to mask.")] = "0,5,10,20,30,50",
    seeds: Annotated[int, typer.Option(help="Random-control seeds per K.")] = 5,
    masking: Annotated[str, typer.Option(help="'zero' (HeadScale 0) or 'uniform'.")] = "zero",
    positions: Annotated[str, typer.Option(help="'decode' (code) or 'all'.")] = "decode",
    random_draw: Annotated[
        str, typer.Option(help="'per_test' (paper) or 'per_seed'.")
    ] = "per_test",
    metric: Annotated[
        str, typer.Option(help="'match' (answer phrase in response) or 'rouge1' (paper).")
    ] = "match",
    threshold: Annotated[float, ThresholdOption] = 0.1,
    max_new_tokens: Annotated[int, MaxNewOption] = 50,
    out: Annotated[Path | None, OutOption] = None,
    device: Annotated[str, DeviceOption] = "cpu",
    static: Annotated[bool, StaticOption] = True,
) -> None:
    """NIAH accuracy with top-K retrieval heads vs K random heads masked (held-out needles)."""
    with user_errors():
        import pandas as pd

        from interp.figures import ablation_curve
        from interp.results import HeadScores
        from probes import retrieval_ablation as ablation

        config = ablation.AblationConfig(
            ks=_ints(ks) or (),
            n_seeds=seeds,
            masking=masking,
            positions=positions,  # type: ignore[arg-type]
            random_draw=random_draw,
            metric=metric,
            threshold=threshold,
            max_new_tokens=max_new_tokens,  # type: ignore[arg-type]
        )
        head_scores = HeadScores.load(scores)
        loaded = load_model_or_fail(model, device)
        grid = _ints(lengths) or ()
        tests = _tests(loaded, needles, "heldout.jsonl", haystack, grid, depths, max_new_tokens)
        folder = result_folder(out, "ablation", loaded.spec)

        def ablate(test: Any) -> list[dict]:
            return ablation.run_ablation(loaded, [test], head_scores, config).tests.to_dict(
                "records"
            )

        rows = _run_incrementally(folder, tests, "ablation", ablate)
        table = pd.DataFrame(rows)
        curve, summary = ablation.summarize(table, config.metric)
        for name, frame in {"tests": table, "curve": curve, "summary": summary}.items():
            frame.to_parquet(folder / f"{name}.parquet", index=False)
            frame.to_csv(folder / f"{name}.csv", index=False)
        figure = ablation_curve(curve, f"Masking retrieval heads ({loaded.spec}, {masking})")
        written = export_figures({"ablation_curve": figure}, folder, static)
        write_manifest(
            folder,
            {
                "command": "ablate retrieval",
                "model": loaded.spec,
                "weights_hash": loaded.weights_hash,
                "config": config.to_dict(),
                "scores": str(scores),
                "scores_provenance": head_scores.provenance.to_dict(),
                "tests": len(tests),
                "summary": summary.to_dict("records"),
                "files": _files(folder),
            },
        )
        typer.echo(f"{len(tests)} tests x {len(curve)} conditions -> {folder}")
        typer.echo(summary.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
        typer.echo(f"{len(written)} figure files in {folder / 'figures'}")
