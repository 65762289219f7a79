"""Atomic writes: a temporary file in the target's folder, fsync, then a rename.

An interrupted write leaves the old file (or none), never a half-written one that looks complete. JSON
records are written with their secrets masked (:func:`atomic_write_json`).
Parquet is written with fixed settings, so the same table gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from longmill.secrets import redact

#: zstd keeps long-context shards small; fixed settings keep the bytes reproducible.
PARQUET_OPTIONS: dict[str, Any] = dict(
    compression="zstd", compression_level=3, use_dictionary=True, write_statistics=True, row_group_size=256
)
_UMASK: list[int] = []


def _file_mode() -> int:
    """The mode a plain ``open()`` would give a new file under the process umask (mkstemp gives 0600)."""
    if not _UMASK:
        mask = os.umask(0o022)
        os.umask(mask)
        _UMASK.append(mask)
    return 0o666 & ~_UMASK[0]


def _mkstemp(path: Path) -> tuple[int, str]:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, _file_mode())
    return fd, tmp


def file_digest(
    path: str | Path, algorithm: str = "sha256", digest_size: int | None = None, into: Any = None
) -> str:
    """The hex digest of a file's bytes, read in 16 MiB blocks (large shards and weights never sit in memory).

    Args:
        path: the file.
        algorithm: a :mod:`hashlib` name (``sha256``, ``blake2b``, ...).
        digest_size: for ``blake2b``.
        into: an existing hash object to feed instead (then its hex digest after this file is returned).
    """
    h = (
        into
        if into is not None
        else (hashlib.new(algorithm, digest_size=digest_size) if digest_size else hashlib.new(algorithm))
    )
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _mkstemp(path)
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
    """Write ``obj`` as indented, key-sorted JSON, atomically, with every secret masked.

    This is the writer of every ``stats.json``, ``manifest.json``, ``metrics.json``, ``--stats-out`` copy
    and meta file, so the redaction (:func:`longmill.secrets.redact`: API keys, ``user:pass@`` in
    URLs, ``api_key=`` option items) happens here, once, for all of them.
    """
    atomic_write_bytes(
        Path(path), (json.dumps(redact(obj), indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    )


def write_table_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` as Parquet at ``path`` atomically, with fixed settings (same input, same bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _mkstemp(path)
    os.close(fd)
    try:
        pq.write_table(table, tmp, **PARQUET_OPTIONS)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
