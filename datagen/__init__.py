"""longmill datagen: verifiable long-context QA and KeyChain tasks as Parquet shards.

The public surface:

- :mod:`datagen.schema`: the one ``Sample`` / ``Triplet`` row types and their Arrow schemas.
- :mod:`datagen.tokenizers`: length accounting on the rendered chat prompt.
- :mod:`datagen.sources`: readers that turn published QA files into triplets.
- :mod:`datagen.generators`: ``longqa`` and ``keychain``, filled to an exact token budget.
- :mod:`datagen.shards`: atomic, resumable, deterministic Parquet shard writing.
"""

from datagen.core.version import __version__

__all__ = ["__version__"]
