"""Explicit, per-sample randomness.

Every sample draws from its own ``numpy.random.Generator`` seeded by (seed, name, index), so a sample
does not depend on which other samples were generated, in which order, or in which process. UUIDs are
drawn from that generator, never from ``uuid4()``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from hashlib import blake2b
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any

import numpy as np


def stable_hash(*parts: Any, digest_size: int = 8) -> int:
    """A process-independent integer hash (Python's ``hash()`` is salted per process)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return int.from_bytes(hashlib.blake2b(blob.encode(), digest_size=digest_size).digest(), "big")


def stable_id(*parts: Any, n_hex: int = 16) -> str:
    """A short hex id derived from ``parts`` (used for uids and document ids)."""
    if all(type(p) is str for p in parts):  # document ids: the same JSON text, without json.dumps' set-up
        blob = "[" + ",".join(map(encode_basestring, parts)) + "]"
    else:
        blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.blake2b(blob.encode(), digest_size=(n_hex + 1) // 2).hexdigest()[:n_hex]


def doc_id(title: str, text: str) -> str:
    """A document's id: ``stable_id("doc", title, text)``, computed directly (sources make millions)."""
    blob = '["doc",' + encode_basestring(title) + "," + encode_basestring(text) + "]"
    return blake2b(blob.encode(), digest_size=8).hexdigest()


def sample_rng(seed: int, name: str, index: int) -> np.random.Generator:
    """The generator for sample ``index`` of generator ``name`` under ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), stable_hash(name), int(index)]))


def rng_uuid(rng: np.random.Generator, short: bool = False) -> str:
    """A version-4 UUID drawn from ``rng``; ``short`` gives its first 16 hex digits."""
    u = uuid.UUID(bytes=rng.bytes(16), version=4)
    return u.hex[:16] if short else str(u)


def check_seed(seed: Any, what: str = "--seed") -> int:
    """``seed`` as an int, or a :class:`~longmill.errors.LongmillError` saying what a seed must be."""
    from longmill.errors import LongmillError

    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise LongmillError(f"{what} must be a whole number >= 0, got {seed!r}")
    return int(seed)
