"""Source readers, registered by name in :data:`SOURCES`.

Importing this package registers every built-in source; look them up with ``SOURCES.get(name)``.
"""

from datagen.sources.base import SOURCES, SkipCounter, Source

# Each module registers its source(s) on import.
from datagen.sources import triplets  # noqa: E402,F401  (isort: skip)

for _mod in ("hotpotqa", "musique", "twowiki", "tabular", "hf", "synthetic"):
    try:
        __import__(f"datagen.sources.{_mod}")
    except ModuleNotFoundError as _e:  # pragma: no cover - only while a module is being written
        if _e.name != f"datagen.sources.{_mod}":
            raise


def get_source(name: str, input=None, **kwargs) -> Source:
    """Instantiate source ``name`` (``UnknownNameError`` with a suggestion for unknown names)."""
    return SOURCES.get(name)(input, **kwargs)


__all__ = ["SOURCES", "SkipCounter", "Source", "get_source"]
