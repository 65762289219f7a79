"""The curriculum's file contract: ``manifest.json`` and ``heldout.json``, and checking them.

Light on purpose (no numpy, no eval): training imports it to check a curriculum before it starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datagen.core.errors import LongmillError
from datagen.core.io import file_digest
from datagen.core.manifest import MANIFEST, load_manifest
from datagen.shards import PART_GLOB

HELDOUT = "heldout.json"


def normalize_question(question: str) -> str:
    """The form in which questions are compared for held-out checks: lower case, single spaces.

    Example:
        >>> normalize_question("  Who  wrote\\nHamlet? ")
        'who wrote hamlet?'
    """
    return " ".join(str(question).lower().split())


def check(folder: str | Path) -> dict[str, Any]:
    """Re-hash a curriculum's shards against its ``manifest.json``; returns the manifest.

    Every stage and eval shard listed must exist with the listed sha256, no other ``part-*.parquet`` may
    sit in a stage folder, no stage folder may be missing from the manifest, and ``heldout.json`` must
    match its hash.

    Args:
        folder: the curriculum folder (``python -m curriculum build --out``).

    Raises:
        LongmillError: naming the first mismatch and saying to rebuild.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    manifest = load_manifest(folder, need_stages=False)
    rebuild = "rebuild it with `python -m curriculum build` (or `dvc repro curriculum`)"
    groups = [(s["name"], s["shards"]) for s in manifest.get("stages", [])]
    if manifest.get("eval"):
        groups.append(("eval", manifest["eval"].get("shards", [])))
    for name, shards in groups:
        listed = {sh["file"] for sh in shards}
        for sh in shards:
            p = folder / name / sh["file"]
            if not p.exists():
                raise LongmillError(f"{p} is listed in {path} but missing; {rebuild}")
            if file_digest(p) != sh["sha256"]:
                raise LongmillError(
                    f"{p} does not match the sha256 in {path} (changed after the build); {rebuild}"
                )
        extra = sorted(p.name for p in (folder / name).glob(PART_GLOB) if p.name not in listed)
        if extra:
            raise LongmillError(
                f"{folder / name} holds shards the manifest does not list ({', '.join(extra[:3])}); {rebuild}"
            )
    names = {n for n, _ in groups}
    stale = sorted(d.name for d in folder.glob("stage-*") if d.is_dir() and d.name not in names)
    if stale:
        raise LongmillError(
            f"{folder} holds stage folders the manifest does not list ({', '.join(stale)}); {rebuild}"
        )
    held = manifest.get("heldout")
    if held:
        p = folder / held["file"]
        if not p.exists() or file_digest(p) != held["sha256"]:
            raise LongmillError(f"{p} is missing or does not match the sha256 in {path}; {rebuild}")
    return manifest


def load_heldout(path: str | Path) -> tuple[set[str], set[str]]:
    """The held-out source ids and normalised questions of ``heldout.json`` (a file, or a curriculum folder).

    Raises:
        LongmillError: the file is missing or malformed.
    """
    p = Path(path)
    if p.is_dir():
        p = p / HELDOUT
    if not p.exists():
        raise LongmillError(
            f"{p}: no such held-out file; `python -m curriculum build` writes it "
            f"(OUT/{HELDOUT}, or where --heldout-out says)"
        )
    try:
        data = json.loads(p.read_text())
        ids, questions = set(data["source_ids"]), {normalize_question(q) for q in data["questions"]}
    except (ValueError, KeyError, TypeError) as e:
        raise LongmillError(
            f"{p}: not a held-out file written by `python -m curriculum build` ({e})"
        ) from None
    return ids, questions
