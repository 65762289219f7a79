"""Generators, registered by name in :data:`GENERATORS` (``longqa``, ``keychain``)."""

from datagen.generators import keychain, longqa  # noqa: F401  (registers them)
from datagen.generators.base import GENERATORS, GenConfig, Generator, SkipSample

__all__ = ["GENERATORS", "GenConfig", "Generator", "SkipSample"]
