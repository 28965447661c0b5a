"""`interp shapes tasks`: shapes-llava's held-out benchmarks as task folders for the CLI.

Writes POPE in its three settings (`pope-random`, `pope-popular`, `pope-adversarial`,
multiple-choice folders for `interp effect vhr|var --task`) and the caption task
(`captions`, for `--captions`: CHAIR) on the first `--scenes` held-out scenes
(`probes.organisms.shapes.task_folders`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from interp.cli.common import user_errors


def shapes_tasks(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the four tasks into.")],
    scenes: Annotated[int, typer.Option(help="Held-out scenes (seeds 1,000,000 on).")] = 100,
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
            written = write_task_folders(out, scenes, blank=blank)
        except OSError as exc:
            raise InputError(f"Cannot write the tasks into {out}: {exc.strerror or exc}.") from exc
        for folder in written:
            typer.echo(str(folder))
