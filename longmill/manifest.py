"""The curriculum's file contract, read by curriculum, train and their checks: ``manifest.json`` (stages,
shards and their hashes), ``heldout.json`` (what evaluation holds out, by id, question and fact), and the
one form in which questions are compared (:func:`normalize_question`, also the form datagen's corpus tells
questions apart by).

Light on purpose (standard library and :mod:`longmill.io` only): training imports it to check a curriculum
before it starts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from longmill.errors import LongmillError
from longmill.io import file_digest

MANIFEST = "manifest.json"
HELDOUT = "heldout.json"
PART_GLOB = "part-*.parquet"  # the name of every Parquet shard in a stage, eval or data folder


def load_manifest(folder: str | Path, *, need_stages: bool = True) -> dict[str, Any]:
    """A curriculum folder's ``manifest.json``.

    Args:
        folder: the curriculum folder (``python -m curriculum build --out``).
        need_stages: require at least one stage (what a trainer needs).

    Raises:
        LongmillError: the file is missing, is not a JSON object, or lists no stages when they are needed;
            the message says to build (or rebuild) the curriculum.
    """
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise LongmillError(
            f"{folder}: no {MANIFEST}; build the curriculum with `python -m curriculum build`"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise LongmillError(f"{path}: not valid JSON ({e}); rebuild the curriculum") from None
    if not isinstance(manifest, dict):
        raise LongmillError(f"{path}: not a JSON object; rebuild the curriculum")
    if need_stages and not manifest.get("stages"):
        raise LongmillError(f"{path}: the manifest lists no stages")
    return manifest


_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalize_question(question: str) -> str:
    """The form in which questions are compared for held-out checks: case-folded, punctuation and space
    runs as one space (the form datagen's corpus tells questions apart by).

    Example:
        >>> normalize_question("  Who  wrote\\nHamlet? ")
        'who wrote hamlet'
        >>> normalize_question("Who wrote 'Hamlet'") == normalize_question("who wrote Hamlet?")
        True
    """
    return _NON_WORD.sub(" ", str(question).casefold()).strip()


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


def load_heldout(path: str | Path) -> tuple[set[str], set[str], set[str]]:
    """The held-out source ids, normalised questions and fact keys of ``heldout.json`` (a file, or a
    curriculum folder). A training example whose id, question or any gold fact is among them must not
    train (``fact_keys`` is empty for files written before facts were held out, and for real sources).

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
        facts = set(data.get("fact_keys") or [])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise LongmillError(
            f"{p}: not a held-out file written by `python -m curriculum build` ({e})"
        ) from None
    return ids, questions, facts


def question_groups(rows: list[dict[str, Any]]) -> list[int]:
    """One group number per row: rows that ask the same question (the same source id, the same normalised
    text, or the same fact keys) share a group, transitively. The learning benchmark clusters its standard
    errors by these groups, since paraphrases of one held-out fact are not independent questions.

    Args:
        rows: dicts with ``source_id``, ``question`` and ``fact_keys`` (None where the source has none).

    Example:
        >>> question_groups([
        ...     {"source_id": "a", "question": "How long is X?", "fact_keys": ["x.length"]},
        ...     {"source_id": "b", "question": "What is the length of X?", "fact_keys": ["x.length"]},
        ...     {"source_id": "a", "question": "How long is X?", "fact_keys": ["x.length"]},
        ...     {"source_id": "c", "question": "Who founded Y?", "fact_keys": None},
        ... ])
        [0, 0, 0, 1]
    """
    parent: dict[Any, Any] = {}

    def find(x: Any) -> Any:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def keys(r: dict[str, Any]) -> list[Any]:
        out: list[Any] = [("id", r["source_id"]), ("q", normalize_question(r["question"]))]
        if r.get("fact_keys"):
            out.append(("facts", tuple(sorted(r["fact_keys"]))))
        return out

    for r in rows:
        first, *rest = keys(r)
        for k in rest:
            parent[find(k)] = find(first)
    numbers: dict[Any, int] = {}
    return [numbers.setdefault(find(keys(r)[0]), len(numbers)) for r in rows]
