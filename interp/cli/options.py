"""Command options generated from config dataclasses, and the options every command shares.

A command is written as a function of a `Run` (the model to load and where, the output
folder, figure export), the configs it needs, and its own options:

    @command("score sinks")
    def score_sinks(run: Run, config: SinkConfig, prompts: Annotated[...] = None) -> None:

`command` gives typer one flat signature: every field of every config becomes an option
with the field's type (a `Literal` lists its choices in `--help`), default, and help from
the class docstring's `Attributes:` section; a tuple field is one comma-separated option.
`Annotated[SinkConfig, Fields(...)]` renames or leaves out fields. A name met in several
configs (or also among the command's own options, e.g. `seed`) is one option feeding all.
The shared options (model, placement, output) are declared once, here, and so is `--shard`
of the commands that log their work (`resumable`), which splits them across jobs.

Under torchrun or accelerate launch, or with `--shard i/N` (`interp.shards`), each process
runs its share of the work; one writes the outputs and prints (rank 0), the others run
silent, and a separately launched shard stops once its share is logged (exit 0).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from interp.cli.common import (
    PLACEMENT,
    load_model_or_fail,
    parse_items,
    progress_bar,
    result_folder,
    silent_unless,
    start_record,
    user_errors,
    write_outputs,
)
from interp.cli.merge import shard_done
from interp.config import Config

if typing.TYPE_CHECKING:
    from interp.models import Model
    from interp.runs import RunRecord


@dataclasses.dataclass(frozen=True)
class Fields:
    """How a config's fields become options: `rename` maps a field to its option's name
    (without dashes, underscores allowed), `skip` fields keep their default, `defaults`
    gives a field's option the command's own default instead of the class's."""

    rename: Mapping[str, str] = dataclasses.field(default_factory=dict)
    skip: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)


PLACEMENT_HELP = {
    "model": "Model spec: a hub id, a checkpoint folder or a .gguf file."
    " Default: SmolLM2-135M-Instruct, offline.",
    "device": "Torch device, e.g. cpu or cuda.",
    "device_map": "Split the model with accelerate instead of --device: auto, balanced,"
    ' balanced_low_0, sequential, or a JSON map of every module to a device or "disk".',
    "max_memory": "Per-device limits for --device-map, e.g. cpu=4GiB,0=20GiB.",
    "offload_folder": "Where weights offloaded to disk are written, if they must be.",
    "dtype": "Weight dtype: float32, bfloat16 or float16. Default: the checkpoint's.",
}
_SHARED = (
    ("model", str | None, None, ("--model", "-m")),
    ("out", Path | None, None, ("--out", "-o")),
    ("device", str, "cpu", ()),
    ("device_map", str | None, None, ()),
    ("max_memory", str | None, None, ()),
    ("offload_folder", Path | None, None, ()),
    ("dtype", str | None, None, ()),
)
_STATIC_HELP = "Also export PNG/SVG/PDF figures (needs Chromium)."
_SHARD_HELP = (
    "Run share i of N (e.g. 0/4) of the work, as one of N separately launched jobs (a Slurm"
    " array) writing the same --out; `interp merge` then writes the results. Under torchrun"
    " or accelerate launch the ranks split the work without it."
)
_OUT_HELP = (
    "Output folder. Default: results/{job}-<model>-<UTC time>. A stopped run resumes when"
    " given the same folder (commands that log their work)."
)


@dataclasses.dataclass
class Run:
    """What a command shares with every other: its record, model, output folder, export."""

    name: str  # the default output folder is results/<name>-<model>-<UTC time>
    record: RunRecord
    model_spec: str | None
    device: str
    placement: dict[str, Any]
    out: Path | None
    static: bool
    _folder: Path | None = None

    def folder(self) -> Path:
        """The output folder, claimed on first use (call it before the long work)."""
        if self._folder is None:
            self._folder = result_folder(self.out, self.name, self.model_spec, self.record)
        return self._folder

    def load_model(self) -> Model:
        """The model, on this rank's own GPU or GPUs under torchrun (`load_model_or_fail`)."""
        return load_model_or_fail(self.model_spec, self.device, **self.placement)

    @property
    def writes(self) -> bool:
        """Whether this process writes the outputs and reports them (`Shard.writes`: not
        the ranks after the first, nor a separately launched shard)."""
        from interp.shards import current_shard

        return current_shard().writes

    @property
    def reports(self) -> bool:
        """Whether this process prints (`Shard.reports`: not the ranks after the first)."""
        from interp.shards import current_shard

        return current_shard().reports

    @contextmanager
    def progress(
        self, total: int, description: str, unit: str = "prompt"
    ) -> Iterator[Callable[[int, int], None]]:
        """A progress bar on stderr, as the progress(done, total) callback analyzers take."""
        update, bar = progress_bar(total, description, unit)
        with bar:
            yield update

    def report(self, lines: Iterable[str]) -> None:
        """Echo a result's summary lines, then where the run's outputs are."""
        if not self.writes:
            return
        for line in lines:
            typer.echo(line)
        typer.echo(f"results in {self.folder()}")

    def write(self, **outputs: Any) -> list[Path]:
        """`write_outputs` into this run's folder, with its figure-export choice (rank 0
        only: under torchrun the other ranks write nothing)."""
        if not self.writes:
            return []
        return write_outputs(self.folder(), self.record, static=self.static, **outputs)

    def write_result(self, result: Any, **summary: Any) -> None:
        """Write a workflow's result (its `tables()`, `figures()` and `summary`, to which
        `summary` adds fields) and report its `summary_lines()`."""
        figures = result.figures()
        self.write(tables=result.tables(), figures=figures, summary={**result.summary, **summary})
        self.report(result.summary_lines())


def field_help(cls: type) -> dict[str, str]:
    """Each field's text in the class docstring's `Attributes:` section (Google style)."""
    doc = inspect.getdoc(cls) or ""
    _, found, section = doc.partition("Attributes:")
    if not found:
        return {}
    helps: dict[str, str] = {}
    name, indent = None, None
    for line in section.splitlines():
        entry = re.match(r"(\s*)(\w+): (.*)", line)
        depth = len(line) - len(line.lstrip())
        if entry and (indent is None or depth == indent):
            indent, name = depth, entry.group(2)
            helps[name] = entry.group(3).strip()
        elif name and line.strip() and indent is not None and depth > indent:
            helps[name] += " " + line.strip()
        elif line.strip():
            break
    return helps


def _tuple_item(annotation: Any) -> type | None:
    """X for `tuple[X, ...]` (or `tuple[X, ...] | None`), else None."""
    for option in (annotation, *typing.get_args(annotation)):
        args = typing.get_args(option)
        if typing.get_origin(option) is tuple and len(args) == 2 and args[1] is Ellipsis:
            return args[0]
    return None


@dataclasses.dataclass(frozen=True)
class _ConfigParam:
    """A command parameter built from a config: its class and field -> option name."""

    cls: type[Config]
    options: dict[str, str]
    defaults: Mapping[str, Any]

    def build(self, values: Mapping[str, Any]) -> Config:
        hints = typing.get_type_hints(self.cls)
        given = {}
        for field, option in self.options.items():
            value, item = values[option], _tuple_item(hints[field])
            if item is not None:
                value = parse_items(value, item, "--" + option.replace("_", "-"))
            if value is None:
                value = self.defaults.get(field)
            if value is not None or _default(self.cls, field) is None:
                given[field] = value
        return self.cls(**given)


def _default(cls: type, field: str) -> Any:
    spec = next(f for f in dataclasses.fields(cls) if f.name == field)
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return None if spec.default is dataclasses.MISSING else spec.default


def _option(name: str, annotation: Any, default: Any, help: str, flags: tuple = ()) -> Any:
    """The typer parameter of one option."""
    dashed = "--" + name.replace("_", "-")
    if annotation is bool:
        flags = (f"{dashed}/--no-{dashed[2:]}",)
    info = typer.Option(*(flags or (dashed,)), help=help)
    kind = inspect.Parameter.KEYWORD_ONLY
    return inspect.Parameter(name, kind, default=default, annotation=Annotated[annotation, info])


def _config_options(cls: type[Config], fields: Fields) -> dict[str, inspect.Parameter]:
    hints = typing.get_type_hints(cls)
    helps = {k: v for base in reversed(cls.__mro__) for k, v in field_help(base).items()}
    out = {}
    for spec in dataclasses.fields(cls):
        if spec.name in fields.skip or not spec.init or spec.name.startswith("_"):
            continue
        name = fields.rename.get(spec.name, spec.name)
        annotation, default = hints[spec.name], fields.defaults.get(spec.name)
        if default is None:
            default = _default(cls, spec.name)
        if _tuple_item(annotation) is not None:
            annotation, default, shown = str | None, None, default
            helps[spec.name] = helps.get(spec.name, "") + (
                f" Comma-separated (default: {','.join(map(str, shown))})." if shown else ""
            )
        out[spec.name] = _option(name, annotation, default, helps.get(spec.name, ""))
    return out


def _merge(params: dict[str, inspect.Parameter], new: inspect.Parameter, where: str) -> None:
    old = params.get(new.name)
    if old is not None and old.default != new.default:
        raise TypeError(
            f"{where}: option --{new.name} has defaults {old.default!r} and {new.default!r};"
            " rename one (Fields(rename=...))."
        )
    params.setdefault(new.name, new)


def command(
    job: str,
    *,
    folder: str | None = None,
    placement: bool = True,
    figures: bool = True,
    resumable: bool = False,
) -> Callable[[Callable[..., None]], Any]:
    """Make a command of `body(run: Run, <configs>, <own options>)` (module docstring).

    `job` is the command as typed ("score sinks"), recorded in the run's manifest; `folder`
    names its default output folder (default: the job's last word); `placement` adds the
    model and placement options, `figures` the static-export switch, `resumable` (a
    command whose work goes through its folder's work log) the `--shard` option.
    """
    name = folder or job.split()[-1]

    def decorate(body: Callable[..., None]) -> Any:
        params, configs, run_name = _body_parameters(body)
        for option, annotation, default, flags in _SHARED if placement else ():
            helped = _OUT_HELP.format(job=name) if option == "out" else PLACEMENT_HELP[option]
            _merge(params, _option(option, annotation, default, helped, flags), job)
        if figures:
            _merge(params, _option("static", bool, True, _STATIC_HELP), job)
        if resumable:
            _merge(params, _option("shard", str | None, None, _SHARD_HELP), job)
        own = [key for key in inspect.signature(body).parameters if key not in configs]

        @functools.wraps(body)
        def wrapper(**values: Any) -> None:
            from interp.shards import Shard, ShardStopped, use_shard

            record = start_record(job, values)
            with user_errors():
                shared = {option: values.get(option) for option, *_ in _SHARED}
                where = {key: shared[key] for key in PLACEMENT}
                device, static = shared["device"] or "cpu", values.get("static", False)
                run = Run(name, record, shared["model"], device, where, shared["out"], static)
                shard = Shard.parse(values["shard"]) if values.get("shard") else None
                with use_shard(shard), silent_unless(run.reports):
                    kwargs = {key: spec.build(values) for key, spec in configs.items()}
                    kwargs |= {key: run if key == run_name else values[key] for key in own}
                    try:
                        body(**kwargs)
                    except ShardStopped as stopped:
                        shard_done(run.folder(), job, str(stopped))
                    else:
                        if shard is not None:  # its share is done, the tables are the merge's
                            shard_done(run.folder(), job)

        wrapper.__signature__ = inspect.Signature(list(params.values()))  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params.values()}
        del wrapper.__wrapped__  # typer reads the generated signature, not the body's
        return wrapper

    return decorate


def _body_parameters(
    body: Callable[..., None],
) -> tuple[dict[str, inspect.Parameter], dict[str, _ConfigParam], str | None]:
    """The options of a command body's own parameters and configs; its configs; the name
    of its `Run` parameter."""
    hints = typing.get_type_hints(body, include_extras=True)
    params: dict[str, inspect.Parameter] = {}
    configs: dict[str, _ConfigParam] = {}
    run_name = None
    for param in inspect.signature(body).parameters.values():
        hint = hints.get(param.name)
        base, *extras = typing.get_args(hint) if typing.get_origin(hint) is Annotated else (hint,)
        if base is Run:
            run_name = param.name
        elif isinstance(base, type) and issubclass(base, Config):
            fields = next((e for e in extras if isinstance(e, Fields)), Fields())
            options = _config_options(base, fields)
            names = {f: p.name for f, p in options.items()}
            configs[param.name] = _ConfigParam(base, names, fields.defaults)
            for option in options.values():
                _merge(params, option, body.__qualname__)
        else:
            own = param.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hint)
            _merge(params, own, body.__qualname__)
    return params, configs, run_name
