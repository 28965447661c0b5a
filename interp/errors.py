"""Error types of the toolkit.

Every error a user can cause derives from `InterpError`, so the CLI can print it as one line
and exit non-zero instead of showing a traceback. Messages say what was expected, what was
got, and what to do.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import TypeVar

Choice = TypeVar("Choice", bound=str)


class InterpError(Exception):
    """Base class of every error the toolkit raises on purpose."""


class ConfigError(InterpError, ValueError):
    """A configuration value is out of range or of the wrong kind."""


class InputError(InterpError, ValueError):
    """User input (prompts, files, positions) cannot be used as given."""


class UnsupportedModelError(InterpError):
    """The model cannot be loaded, or its architecture is not supported by a hook."""


class HookError(InterpError, RuntimeError):
    """A hook could not be installed or was used outside its context."""


def did_you_mean(got: str, options: Iterable[str], limit: int = 5) -> str:
    """A suffix listing close matches (or the first few options) for an error message."""
    options = sorted(options)
    close = difflib.get_close_matches(got, options, n=3)
    if close:
        return f" Did you mean {', '.join(repr(c) for c in close)}?"
    shown = ", ".join(repr(o) for o in options[:limit])
    more = f", ... ({len(options)} in all)" if len(options) > limit else ""
    return f" Valid options: {shown}{more}."


def check_choice(value: str, options: Iterable[Choice], what: str) -> Choice:
    """The option equal to `value`; else a ConfigError naming `what` and close matches.

    One check for library arguments and command-line options, so both refuse alike. Given
    a `Literal`'s arguments, it returns a value of that type.
    """
    options = tuple(options)
    for option in options:
        if option == value:
            return option
    raise ConfigError(f"Unknown {what} {value!r}." + did_you_mean(str(value), options))


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, for a one-line error that wraps it."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
