"""The package version, from the installed package's metadata (``pyproject.toml`` is the one source)."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

_PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def package_version(dist: str = "longmill") -> str:
    """The installed version of ``dist``.

    A source checkout that was never installed reads it from its ``pyproject.toml``; ``0+unknown`` when
    neither is there.
    """
    try:
        return version(dist)
    except PackageNotFoundError:
        pass
    try:
        return str(tomllib.loads(_PYPROJECT.read_text(encoding="utf-8"))["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "0+unknown"


__version__ = package_version()
