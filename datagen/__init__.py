"""longmill datagen: verifiable long-context QA and KeyChain tasks as Parquet shards.

The public surface:

- :mod:`datagen.schema`: the one ``Sample`` / ``Triplet`` row types and their Arrow schemas.
- :mod:`datagen.tokenizers`: length accounting on the rendered chat prompt.
- :mod:`datagen.sources`: readers that turn published QA files into triplets.
- :mod:`datagen.generators`: the five task generators, each filled to an exact token budget: ``longqa``
  (multi-hop QA among distractor documents), ``keychain`` (the question at the end of a UUID chain),
  ``needles`` (RULER-style multi-key needles), ``vartrack`` (variable tracking over chains of
  assignments) and ``aggregation`` (a count, sum, extreme or selection over facts scattered through the
  context).
- :mod:`datagen.shards`: atomic, resumable, deterministic Parquet shard writing.
"""

from longmill.version import __version__

__all__ = ["__version__"]
