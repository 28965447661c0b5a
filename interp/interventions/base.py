"""What every intervention is: a value that applies itself to a model inside a context.

An intervention is a frozen dataclass naming heads and parameters. `intervention.applied(model)`
is a context manager that installs its hooks and removes them on exit, exceptions and Ctrl-C
included; `applied_all(model, a, b, ...)` stacks several.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Protocol

from interp.models import Model


class Intervention(Protocol):
    """Anything with `applied(model)` returning a context manager."""

    def applied(self, model: Model) -> AbstractContextManager[None]: ...


@contextmanager
def applied_all(model: Model, *interventions: Intervention) -> Iterator[None]:
    """Apply several interventions at once, in order; all are removed on exit."""
    with ExitStack() as stack:
        for intervention in interventions:
            stack.enter_context(intervention.applied(model))
        yield
