"""Source readers, registered by name in :data:`SOURCES`.

Importing this package registers every built-in source; look them up with ``SOURCES.get(name)``.
"""

from datagen.sources import hf, hotpotqa, musique, synthetic, tabular, triplets, twowiki  # noqa: F401
from datagen.sources.base import SOURCES, SkipCounter, Source


def get_source(name: str, input=None, **kwargs) -> Source:
    """Instantiate source ``name`` (``UnknownNameError`` with a suggestion for unknown names)."""
    return SOURCES.get(name)(input, **kwargs)


__all__ = ["SOURCES", "SkipCounter", "Source", "get_source"]
