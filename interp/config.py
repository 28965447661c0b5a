"""Base for analyzer and intervention configs: frozen, keyword-only, round-trippable."""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Self

from interp.errors import ConfigError


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Subclasses are frozen keyword-only dataclasses.

    Checked here for every subclass: `Literal` fields hold an allowed value, and float values
    are finite (NaN would slip through every later range comparison).
    """

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(
                    f"{type(self).__name__}.{spec.name} must be a finite number, got {value!r}."
                )
            allowed = typing.get_args(hints[spec.name])
            if typing.get_origin(hints[spec.name]) is typing.Literal and value not in allowed:
                raise ConfigError(
                    f"{type(self).__name__}.{spec.name} must be one of {list(allowed)},"
                    f" got {value!r}."
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"{cls.__name__} has no fields {sorted(unknown)}.")
        hints = typing.get_type_hints(cls)
        values = {
            k: tuple(v) if isinstance(v, list) and "tuple" in str(hints[k]) else v
            for k, v in data.items()
        }
        return cls(**values)


def check_range(
    owner: Config,
    name: str,
    low: float | None = None,
    high: float | None = None,
    *,
    strict_low: bool = False,
) -> None:
    """Raise ConfigError unless low <= value <= high (or low < value with strict_low).

    NaN and infinities are refused too: NaN passes every comparison, so a bare range check
    would let `--threshold nan` run and report all zeros.
    """
    value = getattr(owner, name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{type(owner).__name__}.{name} must be a finite number, got {value!r}.")
    too_low = low is not None and (value <= low if strict_low else value < low)
    too_high = high is not None and value > high
    if too_low or too_high:
        bounds = f"{'(' if strict_low else '['}{low}, {high}]"
        raise ConfigError(f"{type(owner).__name__}.{name} must lie in {bounds}, got {value!r}.")
