"""``triplets``: reads triplet shards written by ``datagen triplets`` back as a source."""

from __future__ import annotations

from collections.abc import Iterator

from datagen.schema import TRIPLET_OPTIONAL, TRIPLET_SCHEMA, Triplet, schema_kind
from datagen.shards import iter_rows, list_parts, read_schema
from datagen.sources.base import SOURCES, Source
from longmill.errors import LongmillError


@SOURCES.register("triplets")
class TripletShards(Source):
    """Triplet shards (``part-*.parquet`` in the triplet schema) from ``datagen triplets``.

    Args:
        input: the triplet folder (or one Parquet file).
    """

    name = "triplets"

    def _iter(self) -> Iterator[Triplet]:
        assert self.input is not None
        parts = list_parts(self.input)
        required = set(TRIPLET_SCHEMA.names) - set(TRIPLET_OPTIONAL)
        columns: list[str] | None = None
        for p in parts:
            schema = read_schema(p)
            if schema_kind(schema) != "triplet" or not required <= set(schema.names):
                raise LongmillError(
                    f"{p} is not a triplet shard (columns: {', '.join(schema.names)}); "
                    "make triplets with `datagen triplets --source NAME --input PATH --out DIR`"
                )
            # shards written before an optional column existed read it as null
            have = [n for n in TRIPLET_SCHEMA.names if n in schema.names]
            columns = have if columns is None else [n for n in columns if n in have]
        for path, i, row in iter_rows(parts, columns=columns or TRIPLET_SCHEMA.names):
            try:
                yield Triplet.from_row(row)
            except (KeyError, TypeError, ValueError) as e:
                self.skips.skip(path, i, str(e), f"cannot read triplet row: {e}")
