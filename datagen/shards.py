"""Parquet shards: atomic writes, deterministic bytes, done-markers, and reading back.

An artifact is a folder of ``part-00000.parquet``, ``part-00001.parquet``, ... plus ``stats.json``.
Every part is written to a temporary name and renamed into place, and is followed by a done-marker in
``.parts/`` that records the run's fingerprint and the part's own statistics. A re-run skips parts whose
marker matches, so an interrupted run resumes, and ranks of a sharded run (``--num-shards``) never
touch each other's files. ``stats.json`` is written once every part of the run is done.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from datagen.errors import LongmillError

log = logging.getLogger(__name__)

PART_GLOB = "part-*.parquet"
MARKER_DIR = ".parts"
STATS_FILE = "stats.json"
#: zstd keeps long-context shards small; fixed settings keep the bytes reproducible.
PARQUET_OPTIONS: dict[str, Any] = dict(compression="zstd", compression_level=3, use_dictionary=True,
                                       write_statistics=True, row_group_size=256)


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode())


def write_table_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` as Parquet at ``path`` atomically, with fixed settings (same input, same bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, **PARQUET_OPTIONS)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def list_parts(folder: str | Path) -> list[Path]:
    """The part files of an artifact folder, sorted; a clear error when there are none.

    A single ``.parquet`` file is a one-part artifact, and a folder of artifact folders (e.g.
    ``data/synth`` holding ``keychain-20k/`` and ``longqa-20k/``) stands for all of them, in name order.
    """
    p = Path(folder)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise LongmillError(f"{folder}: no such folder of Parquet shards")
    parts = sorted(p.glob(PART_GLOB)) or sorted(p.glob("*.parquet"))
    if not parts:
        parts = [x for sub in sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
                 for x in sorted(sub.glob(PART_GLOB))]
    if not parts:
        raise LongmillError(f"{folder}: no Parquet shards (part-*.parquet) found, nor folders of them")
    return parts


def read_schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except Exception as e:
        raise LongmillError(f"{path}: not a readable Parquet file ({e})") from e


def iter_rows(paths: Iterable[Path], columns: list[str] | None = None, batch_size: int = 256) -> Iterator[tuple[Path, int, dict]]:
    """Yield ``(path, row_index_in_file, row)`` over Parquet files, a batch at a time."""
    for path in paths:
        try:
            pf = pq.ParquetFile(path)
        except Exception as e:
            raise LongmillError(f"{path}: not a readable Parquet file ({e})") from e
        i = 0
        for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
            for row in batch.to_pylist():
                yield path, i, row
                i += 1


def read_table(folder: str | Path, columns: list[str] | None = None) -> pa.Table:
    """All parts of an artifact as one table; shards with different schemas are an error."""
    parts = list_parts(folder)
    tables = []
    first = None
    for p in parts:
        schema = read_schema(p)
        if first is None:
            first = (p, schema)
        elif not schema.remove_metadata().equals(first[1].remove_metadata()):
            raise LongmillError(
                f"{p} has a different schema from {first[0]}; shards of one artifact must share one schema "
                f"(regenerate the older shards with this version of longmill)"
            )
        tables.append(pq.read_table(p, columns=columns))
    return pa.concat_tables(tables)


class PartWriter:
    """Writes the parts of one run into ``folder`` with done-markers, and finalises ``stats.json``.

    Args:
        folder: the artifact folder.
        fingerprint: identifies the run's configuration; a folder holding parts of another
            configuration is an error unless ``overwrite``.
        num_parts: how many parts the whole run has (over all ranks).
        overwrite: delete the folder's existing parts and markers first.
    """

    def __init__(self, folder: str | Path, fingerprint: str, num_parts: int, overwrite: bool = False):
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        self.num_parts = num_parts
        self.markers = self.folder / MARKER_DIR
        if overwrite and self.folder.exists():
            for p in list(self.folder.glob(PART_GLOB)) + list(self.markers.glob("*.json")):
                p.unlink()
            (self.folder / STATS_FILE).unlink(missing_ok=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.markers.mkdir(exist_ok=True)
        self._check_foreign()

    def _check_foreign(self) -> None:
        for m in sorted(self.markers.glob("*.json")):
            data = json.loads(m.read_text())
            if data.get("fingerprint") != self.fingerprint:
                raise LongmillError(
                    f"{self.folder} holds parts of a run with other settings ({m.name}: "
                    f"{data.get('config_summary', 'unknown')}); use another --out folder or pass --overwrite"
                )
        stray = [p.name for p in self.folder.glob(PART_GLOB) if not (self.markers / (p.stem + ".json")).exists()]
        if stray:
            log.info("%s: %d part(s) without a done-marker will be rewritten: %s", self.folder, len(stray),
                     ", ".join(sorted(stray)[:5]))

    def marker_path(self, index: int) -> Path:
        return self.markers / (Path(part_name(index)).stem + ".json")

    def is_done(self, index: int) -> bool:
        m = self.marker_path(index)
        if not m.exists() or not (self.folder / part_name(index)).exists():
            return False
        return json.loads(m.read_text()).get("fingerprint") == self.fingerprint

    def write(self, index: int, table: pa.Table, part_stats: dict[str, Any], config_summary: str = "") -> Path:
        """Write part ``index`` atomically, then its done-marker."""
        path = self.folder / part_name(index)
        write_table_atomic(table, path)
        atomic_write_json(self.marker_path(index), {"fingerprint": self.fingerprint, "part": index,
                                                    "config_summary": config_summary, "stats": part_stats})
        return path

    def done_stats(self) -> list[dict[str, Any]]:
        """The stats of every finished part, in part order."""
        out = []
        for i in range(self.num_parts):
            if self.is_done(i):
                out.append(json.loads(self.marker_path(i).read_text())["stats"])
        return out

    def all_done(self) -> bool:
        return all(self.is_done(i) for i in range(self.num_parts))

    def write_stats(self, stats: dict[str, Any]) -> Path:
        path = self.folder / STATS_FILE
        atomic_write_json(path, stats)
        return path
