"""The source interface: readers that turn published QA files into normalised :class:`Triplet` s.

A source only answers "what are the triplets in this input?". Bad records are named by file, record
and field, then skipped and counted (or, under ``strict``, raised), as datatrove's filters count their
drop reasons.
"""

from __future__ import annotations

import glob
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from datagen.errors import LongmillError, RecordError
from datagen.registry import Registry
from datagen.schema import Document, Triplet
from datagen.sources.jsonstream import iter_json_array
from datagen.tokenizers import nfc

log = logging.getLogger(__name__)

_WS = re.compile(r"\s+")
_ROOT_FIELD = re.compile(r"[\[.]")


def clean_text(text: str) -> str:
    """NFC, collapse runs of whitespace into one space, strip (single-line text).

    Most published text is clean already, so that case is checked first with C-speed string methods: a
    printable string holds no whitespace but ASCII spaces (every other whitespace character is a control
    or separator, which ``isprintable`` rejects), so with no double, leading or trailing space it is its
    own cleaned form. The regex, about five times slower, runs only on the rest.
    """
    if not text.isascii():  # (ASCII is NFC; isascii is O(1))
        text = nfc(text)
    if text.isprintable() and "  " not in text and text[:1] != " " and text[-1:] != " ":
        return text
    return _WS.sub(" ", text).strip()


class SkipCounter:
    """Counts skipped records by reason; under ``strict`` the first skip raises instead.

    Args:
        strict: raise :class:`RecordError` on the first bad record.
        max_logged: how many skips to log individually before only counting.
    """

    def __init__(self, strict: bool = False, max_logged: int = 20):
        self.strict = strict
        self.max_logged = max_logged
        self.counts: Counter[str] = Counter()
        self.examples: list[str] = []

    def skip(self, path: str | Path, record: int | str, field: str, reason: str, kind: str | None = None) -> None:
        """Record one skipped record. ``kind`` groups the count (default: ``malformed:<field>``)."""
        err = RecordError(str(path), record, field, reason)
        if self.strict:
            raise err
        key = kind or f"malformed:{field}"
        self.counts[key] += 1
        if len(self.examples) < self.max_logged:
            self.examples.append(str(err))
            log.warning("skipped: %s", err)

    def count(self, kind: str, n: int = 1) -> None:
        """Count an expected, non-error skip (e.g. MuSiQue's unanswerable questions)."""
        self.counts[kind] += n

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


class Source:
    """Base class of all sources.

    Args:
        input: a file, a directory or a glob; ``None`` for sources that need none (``synthetic``).
        strict: fail on the first malformed record instead of skipping it.
        limit: stop after this many triplets (for quick runs).
        options: source-specific options (column mappings, hub ids, world size, ...).
    """

    name: ClassVar[str] = ""
    needs_input: ClassVar[bool] = True
    #: file extensions accepted when ``input`` is a directory
    extensions: ClassVar[tuple[str, ...]] = (".json", ".jsonl")

    def __init__(
        self,
        input: str | Path | None = None,
        *,
        strict: bool = False,
        limit: int | None = None,
        options: dict[str, Any] | None = None,
    ):
        if self.needs_input and not input:
            raise LongmillError(f"source '{self.name}' needs --input (a file, a directory or a glob)")
        self.input = str(input) if input is not None else None
        self.skips = SkipCounter(strict=strict)
        self.limit = limit
        self.options = dict(options or {})
        self._check_options()

    #: option names this source accepts (others are an error)
    option_names: ClassVar[tuple[str, ...]] = ()

    def _check_options(self) -> None:
        unknown = sorted(set(self.options) - set(self.option_names))
        if unknown:
            valid = ", ".join(self.option_names) or "none"
            raise LongmillError(f"source '{self.name}' got unknown option(s) {unknown}; valid options: {valid}")

    def files(self) -> list[Path]:
        """The input files, sorted, with a clear error when there are none."""
        assert self.input is not None
        return resolve_inputs(self.input, self.extensions)

    def json_records(self) -> Iterator[tuple[Path, str, int, Any]]:
        """``(file, split, index, record)`` over the input JSON / JSONL files.

        The split is the ``split`` option, else guessed from the file name; lines that are not JSON are
        counted as skipped records (or raised under ``strict``).
        """
        for path in self.files():
            split = guess_split(path, self.options.get("split"))
            n = 0
            for index, record in iter_json_records(path):
                if isinstance(record, RecordError):
                    skip_record(self.skips, record)
                    continue
                n += 1
                yield path, split, index, record
            log.info("%s: %d records (split %s)", path, n, split)

    def iter_triplets(self) -> Iterator[Triplet]:
        """Yield triplets, in a deterministic order, honouring ``limit``."""
        n = 0
        for t in self._iter():
            if self.limit is not None and n >= self.limit:
                return
            yield t
            n += 1

    def _iter(self) -> Iterator[Triplet]:
        raise NotImplementedError


SOURCES: Registry[type[Source]] = Registry("source")


def guess_split(path: Path, option: Any = None) -> str:
    """The split named by ``option``, else guessed from the file name (train, test, else dev).

    Args:
        path: the input file.
        option: the user's ``split`` option, if any.
    """
    if option:
        return str(option)
    name = path.name.lower()
    if "train" in name:
        return "train"
    if "test" in name:
        return "test"
    return "dev"


def resolve_inputs(input: str, extensions: tuple[str, ...]) -> list[Path]:
    """Expand a file, a directory (files with ``extensions``, recursively) or a glob into sorted paths."""
    p = Path(input)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(extensions))
        if not files:
            raise LongmillError(f"{input}: directory has no {'/'.join(extensions)} files")
        return files
    if p.exists():
        return [p]
    matches = sorted(Path(m) for m in glob.glob(input, recursive=True))
    if matches:
        return matches
    raise LongmillError(f"{input}: no such file, directory or glob match")


def iter_json_records(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, record)`` from a JSON list or a JSON-lines file.

    A JSONL line that does not parse is yielded as a :class:`RecordError` in place of the record, so
    the caller can count it and carry on.
    """
    with open(path, encoding="utf-8") as f:
        head = f.read(4096).lstrip()
        f.seek(0)
        if head.startswith("["):
            # Streamed, so that memory stays bounded on HotpotQA train (540 MB) and the like.
            yield from enumerate(iter_json_array(f, path))
            return
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                yield i, json.loads(line)
            except json.JSONDecodeError as e:
                yield i, RecordError(str(path), i, "<line>", f"invalid JSON: {e.msg} at column {e.colno}")


def make_doc(title: str, text: str) -> Document:
    """A cleaned :class:`Document`."""
    return Document.make(clean_text(title), clean_text(text))


def require(record: Any, key: str, type_: type | tuple[type, ...], path: Path, index: int | str) -> Any:
    """``record[key]`` checked for presence and type, or a :class:`RecordError` naming the field."""
    if not isinstance(record, dict):
        raise RecordError(str(path), index, "<record>", f"expected a JSON object, got {type(record).__name__}")
    if key not in record:
        raise RecordError(str(path), index, key, "missing")
    value = record[key]
    if not isinstance(value, type_):
        names = type_.__name__ if isinstance(type_, type) else " or ".join(t.__name__ for t in type_)
        raise RecordError(str(path), index, key, f"expected {names}, got {type(value).__name__}")
    return value


def skip_record(skips: SkipCounter, err: RecordError, kind: str | None = None) -> None:
    """Count ``err`` as a skipped record (raises it under ``strict``).

    The count is grouped by the top-level field (``malformed:context`` for ``context[3][1]``), so
    that one bad paragraph position does not make a new counter per index.

    Args:
        skips: the source's skip counter.
        err: the error that names file, record and field.
        kind: the count's key; default ``malformed:<top-level field>``.
    """
    root = _ROOT_FIELD.split(err.field, maxsplit=1)[0] or err.field
    skips.skip(err.path, err.record, err.field, err.reason, kind=kind or f"malformed:{root}")


def bad_type(path: str | Path, index: int | str, field: str, expected: str, value: Any) -> RecordError:
    """A :class:`RecordError` saying that ``field`` should be ``expected`` and what it was instead.

    Args:
        path: the input file.
        index: the record index or id.
        field: the offending field, dotted for nested fields.
        expected: what the field should hold ("a string", "a list of sentences", ...).
        value: what it holds.
    """
    return RecordError(str(path), index, field, f"expected {expected}, got {type(value).__name__}")
