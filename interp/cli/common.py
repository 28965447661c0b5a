"""What every `interp` command shares: loading, result folders, progress, errors.

`interp.cli` is the application layer: it is the one part of `interp` that imports the
analyzers in `probes/` and `circuits/` (lazily, inside commands); the core never does.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from tqdm.auto import tqdm

from interp.errors import InputError, InterpError

if TYPE_CHECKING:
    from interp.runs import RunRecord


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error to stderr and exit with `code`."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


# Result folders the running command holds (see result_folder); user_errors releases them.
_HELD = ExitStack()


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn toolkit errors into one-line messages and Ctrl-C into exit code 130.

    The command's whole body runs inside it, so the folder lock it took is released here.
    """
    try:
        yield
    except InterpError as exc:
        fail(str(exc).splitlines()[0])
    except KeyboardInterrupt:
        typer.secho("interrupted: partial results (if any) are in the output folder.", err=True)
        raise typer.Exit(130) from None
    finally:
        _HELD.close()


@contextmanager
def silent_unless(speaks: bool) -> Iterator[None]:
    """Run the block with stdout and stderr dropped unless `speaks`: under torchrun the
    ranks after the first print nothing (rank 0 shows the one progress view); an error
    still gets its one line, printed by `user_errors` outside the block."""
    if speaks:
        yield
        return
    with open(os.devnull, "w") as null, redirect_stdout(null), redirect_stderr(null):
        yield


def result_folder(out: Path | None, job: str, model_spec: str | None, record: RunRecord) -> Path:
    """The output folder, claimed for this run until the command ends.

    `out`, or results/<job>-<model>-<UTC time>. Call it before the long work, so a folder
    that cannot be used (a file, read-only, another live run's, another run's results) is
    refused at once rather than after the analysis; see `interp.runs.claim_folder`.
    """
    from interp.models import DEFAULT_MODEL
    from interp.runs import claim_folder

    if out is None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(model_spec or DEFAULT_MODEL).name)
        out = Path("results") / f"{job}-{safe}-{stamp}"
    return _HELD.enter_context(claim_folder(out, record))


def progress_bar(
    total: int, description: str, unit: str = "prompt"
) -> tuple[Callable[[int, int], None], Any]:
    """A tqdm bar on stderr and the progress(done, total) callback analyzers take."""
    bar = tqdm(total=total, desc=description, unit=unit, file=sys.stderr)

    def update(done: int, _total: int) -> None:
        bar.update(done - bar.n)

    return update, bar


@contextmanager
def stage_bars(
    units: str | Mapping[str, str] = "item", resumable: Iterable[str] = ()
) -> Iterator[Callable[[str, int, int], None]]:
    """The progress(stage, done, total) callback of a workflow (`interp.work.StageProgress`):
    one tqdm bar per stage, each closed when another starts; `units` is every stage's unit
    or a map stage -> unit. The `resumable` stages' bars are `work_progress` bars, which
    say when a run resumes."""
    resumed = set(resumable)
    with ExitStack() as bars:
        current: list[Any] = []  # [stage, update] of the stage running

        def on_progress(stage: str, done: int, total: int) -> None:
            if not current or current[0] != stage:  # a stage met again gets a new bar
                bars.close()
                unit = units if isinstance(units, str) else units.get(stage, "item")
                if stage in resumed:
                    update, bar = work_progress(stage, unit)
                else:
                    update, bar = progress_bar(total, stage, unit)
                bars.enter_context(bar)
                current[:] = [stage, update]
            current[1](done, total)

        yield on_progress


def work_progress(description: str, unit: str = "test") -> tuple[Callable[[int, int], None], Any]:
    """`progress_bar` for a run through the work driver (`interp.work`), which reports the
    total and the items its log already holds before any work: a resumed run says so."""
    update, bar = progress_bar(0, description, unit)
    units = unit + ("es" if unit.endswith("s") else "s")
    first = True

    def on_progress(done: int, total: int) -> None:
        nonlocal first
        if first and done:
            typer.echo(f"resuming {description}: {done} of {total} {units} already done", err=True)
        first = False
        bar.total = total
        update(done, total)

    return on_progress, bar


def start_record(command: str, params: dict[str, Any]) -> RunRecord:
    """The run record of a command: argv, its parsed options (`locals()` at its top), now."""
    from interp.runs import RunRecord

    return RunRecord(command, sys.argv, params)


def parse_items(text: str | None, item: type, flag: str) -> tuple[Any, ...] | None:
    """A comma-separated option's values as `item`s (None stays None: the default)."""
    if text is None:
        return None
    try:
        return tuple(item(part) for part in text.split(","))
    except ValueError:
        raise InputError(
            f"{flag} takes comma-separated {item.__name__} values, got {text!r}."
        ) from None


def parse_ints(text: str | None, minimum: int, flag: str) -> tuple[int, ...] | None:
    """Comma-separated integers >= `minimum` (None stays None: the command's default)."""
    values = parse_items(text, int, flag)
    if values is not None and min(values) < minimum:
        raise InputError(f"{flag} takes integers >= {minimum}, got {text!r}.")
    return values


PLACEMENT = ("device_map", "dtype", "max_memory", "offload_folder")


def load_model_or_fail(
    spec: str | None,
    device: str,
    *,
    device_map: str | None = None,
    dtype: str | None = None,
    max_memory: str | None = None,
    offload_folder: Path | None = None,
) -> Any:
    """Load a model with a status line (the analyzers never print).

    With a device map the default --device (cpu) is ignored; another --device is an error.
    Under torchrun each rank gets its own GPU (`rank_device`), or with a device-map strategy
    its own group of GPUs (`rank_max_memory`).
    """
    from interp.models import DEFAULT_MODEL, load_model
    from interp.placement import Placement, parse_device_map, parse_dtype, parse_max_memory
    from interp.shards import rank_device, rank_max_memory

    device = rank_device(device)
    chosen = {
        "device": None if device_map is not None and device == "cpu" else device,
        "device_map": parse_device_map(device_map),
        "max_memory": parse_max_memory(max_memory),
        "offload_folder": offload_folder,
    }
    Placement.of(**chosen)  # checked before the status line: a bad value is the only line
    chosen["max_memory"] = rank_max_memory(chosen["device_map"], chosen["max_memory"])
    parse_dtype(dtype)
    typer.echo(f"loading {spec or DEFAULT_MODEL} ...", err=True)
    return load_model(spec, dtype=dtype, **chosen)


def require_vision_model(spec: str | None, command: str) -> None:
    """Refuse a text-only model from its config, before any weights load."""
    from interp.models import DEFAULT_MODEL, takes_images

    if not takes_images(spec):
        raise InputError(
            f"{spec or DEFAULT_MODEL} is a text-only model (its config has no vision tower):"
            f" `interp {command}` needs a vision-language model with its processor, e.g."
            " --model shapes-llava (shipped, offline) or a LLaVA-1.5/NeXT, Idefics3/SmolVLM"
            " or Qwen2.5-VL folder or hub id."
        )


def export_figures(figures: dict[str, Any], folder: Path, static: bool) -> list[Path]:
    """Write figures; say so when static export is skipped for want of Chromium."""
    from interp.figure_export import STATIC_FORMATS, chromium_path, export

    formats = STATIC_FORMATS if static else ()
    if static and chromium_path() is None:
        typer.echo(
            "note: no Chromium found, so figures are HTML only. Install Debian's `chromium`"
            " (or set BROWSER_PATH) for PNG/SVG/PDF.",
            err=True,
        )
    return export(figures, folder / "figures", formats)


def write_outputs(
    folder: Path,
    record: RunRecord,
    *,
    bundles: Iterable[Any] = (),
    tables: Mapping[str, Any] | None = None,
    figures: Mapping[str, Any] | None = None,
    static: bool = True,
    summary: Mapping[str, Any] | None = None,
    **manifest: Any,
) -> list[Path]:
    """The one output path of every command; returns the figure files it wrote.

    Writes, in this order: each result bundle's tables (`Bundle.save`, parquet + CSV), each
    named table as `<name>.parquet` (+ CSV), the figures if any (HTML, plus PNG/SVG/PDF
    when `static`), `summary.json` when a summary is given (also copied into the manifest), and
    last `manifest.json` with `manifest`'s fields, so a folder with a manifest is complete.
    """
    from interp.results import csv_path

    for bundle in bundles:
        record.wrote(bundle.save(folder))
    for name, table in (tables or {}).items():
        path = table.save(folder / f"{name}.parquet", csv=True)
        record.wrote([path, csv_path(path)])
    written = export_figures(dict(figures), folder, static) if figures else []
    record.wrote(written)
    if summary is not None:
        path = folder / "summary.json"
        path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        record.wrote([path])
        manifest = {**manifest, "summary": summary}
    record.write(folder, **manifest)
    return written


def distinct_sweep(values: list[float] | None, option: str, default: float) -> list[float]:
    """A repeated option's sweep values, refused up front when one repeats.

    Each value is measured and drawn as one point of the sweep; a repeat would be measured
    twice and then has no place of its own in the table or the figure.
    """
    from interp.errors import InputError

    chosen = values or [default]
    repeated = sorted({v for v in chosen if chosen.count(v) > 1})
    if repeated:
        shown = ", ".join(f"{v:g}" for v in repeated)
        raise InputError(f"{option} {shown} is given more than once: give each value once.")
    return chosen
