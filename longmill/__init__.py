"""longmill's shared core: what datagen, curriculum, eval and train all take, and nothing else.

- :mod:`longmill.errors`: ``LongmillError`` and the user-facing error types.
- :mod:`longmill.io`: atomic writes, Parquet helpers, file digests.
- :mod:`longmill.manifest`: the curriculum's file contract (``manifest.json``, ``heldout.json``) and the
  one question normal form.
- :mod:`longmill.registry`, :mod:`longmill.rng`, :mod:`longmill.types`: named registries, seeded
  randomness and stable ids, row types.
- :mod:`longmill.stats`: the one way to count kept and dropped records.
- :mod:`longmill.secrets`: masking of credentials before anything reaches a file or a log.
- :mod:`longmill.cliutil`, :mod:`longmill.lengths`: the command-line options builder and token lengths
  as users write them (``60k``).

The core imports no other longmill package (the dependency rule: longmill <- datagen <- eval <- curriculum,
and datagen, eval <- train).
"""

from longmill.version import __version__

__all__ = ["__version__"]
