"""What every longmill package shares: errors, the registry, atomic I/O, randomness, row types, the
manifest reader, the counting helper (:class:`~datagen.core.stats.Stats`) and the package version."""
