"""What the circuit commands share: the checks of the tasks' sizes and seeds."""

from __future__ import annotations


def check_counts(**values: int) -> None:
    """Seeds and sizes the tasks and the bootstrap take: whole numbers, seeds >= 0, prompt
    counts within what a task is built with (checked again against its templates)."""
    from circuits.circuit_task import MAX_PROMPTS
    from interp.errors import InputError

    for name, value in values.items():
        low = 0 if name == "seed" else 1
        if value < low:
            raise InputError(f"--{name.replace('_', '-')} must be at least {low}, got {value}.")
        if name in ("n", "repair_n") and value > MAX_PROMPTS:
            raise InputError(
                f"--{name.replace('_', '-')} {value}: a task takes at most {MAX_PROMPTS}"
                " prompts (each is built, held and patched per head)."
            )
