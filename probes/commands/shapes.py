"""`interp shapes tasks`: shapes-llava's held-out benchmarks as task folders for the CLI.

Writes POPE in its three settings (`pope-random`, `pope-popular`, `pope-adversarial`,
multiple-choice folders for `interp effect vhr|var --task`) and the caption task
(`captions`, for `--captions`: CHAIR) on the first `--scenes` scenes of the evaluation
range (`--split test`: of the final test range); each POPE folder's calibration split holds
as many scenes of the validation range, so a head search never tunes on a scored scene
(`probes.organisms.shapes.task_folders`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from interp.cli.common import user_errors


def shapes_tasks(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the four tasks into.")],
    scenes: Annotated[int, typer.Option(help="Held-out scenes per split.")] = 100,
    split: Annotated[
        Literal["eval", "test"],
        typer.Option(
            help="Test scenes: 'eval' (seeds 1,000,000 on) or 'test' (1,200,000 on);"
            " calibration: validation (1,100,000 on)."
        ),
    ] = "eval",
    blank: Annotated[
        bool, typer.Option("--blank/--image", help="Background-only images (the control).")
    ] = False,
) -> None:
    """Write shapes-llava's POPE and caption tasks on held-out scenes."""
    with user_errors():
        from interp.errors import InputError
        from probes.organisms.shapes.task_folders import write_task_folders

        if scenes < 1:
            raise InputError(f"--scenes must be at least 1, got {scenes}.")
        try:
            if out.exists() and not out.is_dir():
                raise InputError(f"--out {out} is a file; give a folder.")
            written = write_task_folders(out, scenes, blank=blank, split=split)
        except OSError as exc:
            raise InputError(f"Cannot write the tasks into {out}: {exc.strerror or exc}.") from exc
        for folder in written:
            typer.echo(str(folder))
