"""The toolkit's version, read from the installed distribution's metadata (no heavy imports)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "interp-heads"


def toolkit_version() -> str:
    """The installed `interp-heads` version; "0+unknown" for a source tree never installed."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"
