"""Generators, registered by name in :data:`GENERATORS` (``longqa``, ``keychain``, ``aggregation``, ``needles``, ``vartrack``)."""

from datagen.generators import aggregation, keychain, longqa, retrieval  # noqa: F401  (registers them)
from datagen.generators.base import GENERATORS, GenConfig, Generator, SkipSample

__all__ = ["GENERATORS", "GenConfig", "Generator", "SkipSample"]
