"""The source interface: readers that turn published QA files into normalised :class:`Triplet` s.

A source only answers "what are the triplets in this input?". Bad records are named by file, record
and field, then skipped and counted (or, under ``strict``, raised), as datatrove's filters count their
drop reasons.
"""

from __future__ import annotations

import dataclasses
import glob
import io
import itertools
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from datagen.schema import Document, Triplet
from datagen.sources.jsonstream import iter_json_array
from datagen.tokenizers import nfc
from longmill.errors import LongmillError, RecordError
from longmill.registry import Registry
from longmill.stats import Stats

log = logging.getLogger(__name__)

_WS = re.compile(r"\s+")
_ROOT_FIELD = re.compile(r"[\[.]")
#: Text shaped like a KeyChain pair: a brace, then a quoted hex key (8+ hex digits, dashes allowed, any
#: case) and a colon. Broader than the keys KeyChain writes, so that no source text can pass for a pair.
_PAIR_SHAPED = re.compile(r'\{(\s*)"([0-9A-Fa-f][0-9A-Fa-f-]{6,}[0-9A-Fa-f])"(\s*):')
#: Text shaped like a ``needles`` needle ("One of the special magic numbers for <key> is: <value>."): any
#: case, spacing and key. Broader than what the generator writes, for the same reason.
_NEEDLE_SHAPED = re.compile(r"(?i)(\bmagic\s+numbers?\b[^.:\n]{0,80}?\bis)\s*:")
#: Text shaped like a ``vartrack`` assignment ("VAR ABCDE = 12345.", "VAR ABCDE = VAR FGHIJ."): any name,
#: value and spacing. ``VAR`` alone (football's video assistant referee) is left as it is.
_ASSIGN_SHAPED = re.compile(r"\bVAR(\s+\w+\s*=\s*)(VAR\b)?")


def _lower_assignment(m: re.Match[str]) -> str:
    return "var" + m.group(1) + ("var" if m.group(2) else "")


#: Each task's own text that a source could imitate: (the count in stats.json, its shape, the defused
#: form). ``datagen verify`` re-reads these shapes from the whole prompt, so a source document holding one
#: would add a pair, needle or assignment that belongs to no task.
TASK_SHAPES: list[tuple[str, re.Pattern[str], Any]] = [
    ("pair_text_neutralised", _PAIR_SHAPED, r"{\1\2\3:"),  # the key's quotes go: {1f2e3d4c: "x"}
    ("needle_text_neutralised", _NEEDLE_SHAPED, r"\1"),  # the colon goes: "... for <key> is 42."
    ("assignment_text_neutralised", _ASSIGN_SHAPED, _lower_assignment),  # "var ABCDE = var FGHIJ."
]


def _maybe_task_shaped(text: str) -> bool:
    """A quick test (plain substring scans) that every task-shaped text passes, so most texts skip the regexes."""
    return "{" in text or "VAR" in text or "agic" in text or "AGIC" in text


def neutralise_pairs(text: str) -> tuple[str, int]:
    """``text`` with pair-shaped JSON (``{"<hex key>": ...``) defused, and how many were.

    KeyChain hides its chain as ``{"<key>": "<value>"}`` objects and ``datagen verify`` re-reads every
    such object from the text; a source document that already holds one would add a pair that belongs
    to no chain. The key's quotes are dropped (``{"1f2e3d4c": "x"}`` becomes ``{1f2e3d4c: "x"}``), so the
    text stays readable but is no longer a JSON object.

    Example:
        >>> neutralise_pairs('See {"0123456789abcdef": "Who won?"} here.')
        ('See {0123456789abcdef: "Who won?"} here.', 1)
    """
    if "{" not in text:  # the common case, without a regex pass
        return text, 0
    return _PAIR_SHAPED.subn(r"{\1\2\3:", text)


def neutralise_task_text(text: str) -> tuple[str, dict[str, int]]:
    """``text`` with everything shaped like a task's own text defused (:data:`TASK_SHAPES`: KeyChain pairs,
    needles, variable assignments), and how many of each kind were.

    Example:
        >>> neutralise_task_text("VAR ABCDE = 12345. One of the special magic numbers for x is: 7.")
        ('var ABCDE = 12345. One of the special magic numbers for x is 7.', {'needle_text_neutralised': 1, 'assignment_text_neutralised': 1})
    """
    counts: dict[str, int] = {}
    if not _maybe_task_shaped(text):
        return text, counts
    for kind, shape, repl in TASK_SHAPES:
        text, k = shape.subn(repl, text)
        if k:
            counts[kind] = k
    return text, counts


def neutralise_triplet(t: Triplet) -> tuple[Triplet, dict[str, int]]:
    """``t`` with task-shaped text defused in every text that reaches a prompt; returns (triplet, counts)."""
    if not _maybe_task_shaped(t.question) and not any(
        _maybe_task_shaped(d.text) or _maybe_task_shaped(d.title)
        for d in itertools.chain(t.gold_docs, t.distractor_docs)
    ):
        return t, {}  # the common case: plain scans, no copies
    counts: dict[str, int] = {}

    def fix(text: str) -> str:
        out, k = neutralise_task_text(text)
        for kind, n in k.items():
            counts[kind] = counts.get(kind, 0) + n
        return out

    def fix_docs(docs: list[Document]) -> list[Document]:
        out = []
        for d in docs:
            title, text = fix(d.title), fix(d.text)
            out.append(d if (title, text) == (d.title, d.text) else Document.make(title, text))
        return out

    question = fix(t.question)
    gold, distractors = fix_docs(t.gold_docs), fix_docs(t.distractor_docs)
    facts = [
        f
        if not _maybe_task_shaped(f.text) and not _maybe_task_shaped(f.title)
        else dataclasses.replace(f, title=fix(f.title), text=fix(f.text))
        for f in t.supporting_facts
    ]
    if not counts:
        return t, counts
    return dataclasses.replace(
        t, question=question, gold_docs=gold, distractor_docs=distractors, supporting_facts=facts
    ), counts


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


class SkipCounter(Stats):
    """Counts skipped records by reason (a :class:`Stats`); under ``strict`` the first skip raises instead.

    Args:
        strict: raise :class:`RecordError` on the first bad record.
        max_logged: how many skips to log individually before only counting.
    """

    def __init__(self, strict: bool = False, max_logged: int = 20):
        super().__init__()
        self.strict = strict
        self.max_logged = max_logged
        self.examples: list[str] = []

    def skip(
        self, path: str | Path, record: int | str, field: str, reason: str, kind: str | None = None
    ) -> None:
        """Record one skipped record. ``kind`` groups the count (default: ``malformed:<field>``)."""
        err = RecordError(str(path), record, field, reason)
        if self.strict:
            raise err
        self.add(kind or f"malformed:{field}")
        if len(self.examples) < self.max_logged:
            self.examples.append(str(err))
            log.warning("skipped: %s", err)

    def count(self, kind: str, n: int = 1) -> None:
        """Count an expected, non-error skip (e.g. MuSiQue's unanswerable questions)."""
        self.add(kind, n)

    def as_dict(self) -> dict[str, int]:
        return self.to_dict(sort=True)


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
    #: whether an answer (or one of its aliases) is text of the gold documents, yes/no answers aside;
    #: ``datagen verify`` fails a row whose answer is not there, and counts it for sources marked False
    extractive_answers: ClassVar[bool] = True
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
        #: texts changed while reading, by kind (``pair_text_neutralised``), for stats.json
        self.cleaned = Stats()
        self.limit = limit
        self.options = dict(options or {})
        self._check_options()

    #: option names this source accepts (others are an error)
    option_names: ClassVar[tuple[str, ...]] = ()

    def _check_options(self) -> None:
        unknown = sorted(set(self.options) - set(self.option_names))
        if unknown:
            valid = ", ".join(self.option_names) or "none"
            raise LongmillError(
                f"source '{self.name}' got unknown option(s) {unknown}; valid options: {valid}"
            )

    def files(self) -> list[Path]:
        """The input files, sorted, with a clear error when there are none."""
        assert self.input is not None
        return resolve_inputs(self.input, self.extensions)

    def json_records(self) -> Iterator[tuple[Path, str, int, Any]]:
        """``(file, split, index, record)`` over the input JSON / JSONL files.

        The split is the ``split`` option, else guessed from the file name; lines that are not JSON are
        counted as skipped records (or raised under ``strict``). A file whose first record is in another
        reader's layout is an error that names that reader ("this looks like MuSiQue").
        """
        for path in self.files():
            split = guess_split(path, self.options.get("split"))
            n = 0
            for index, record in iter_json_records(path):
                if isinstance(record, RecordError):
                    skip_record(self.skips, record)
                    continue
                if n == 0 and (hint := format_hint(record, self.name)):
                    raise LongmillError(f"{path}: {hint}")
                n += 1
                yield path, split, index, record
            log.info("%s: %d records (split %s)", path, n, split)

    def iter_triplets(self) -> Iterator[Triplet]:
        """Yield triplets, in a deterministic order, honouring ``limit``.

        Every reader's triplets pass through here, so text shaped like a task's own (KeyChain pairs,
        needles, variable assignments: see :func:`neutralise_task_text`) is defused once for all sources
        and all generators, and counted in :attr:`cleaned`.
        """
        n = 0
        for t in self._iter():
            if self.limit is not None and n >= self.limit:
                return
            t, counts = neutralise_triplet(t)
            for kind, k in counts.items():
                if not self.cleaned.get(kind):
                    log.info("%s: defusing task-shaped text (%s) from record %s on", self.name, kind, t.id)
                self.cleaned.add(kind, k)
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


_BOM = b"\xef\xbb\xbf"


def iter_json_records(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, record)`` from a JSON list or a JSON-lines file (UTF-8, with or without a BOM).

    A JSONL line that does not parse, or is not valid UTF-8, is yielded as a :class:`RecordError` in
    place of the record, so the caller can count it and carry on. A file that is one JSON object (not a
    list, nor one object per line) is an error that says so.
    """
    with open(path, "rb") as f:
        head = f.read(4096)
        f.seek(0)
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise LongmillError(
                f"{path}: the file is UTF-16; re-encode it as UTF-8 "
                f"(e.g. iconv -f utf-16 -t utf-8 {path.name} > {path.stem}.utf8{path.suffix})"
            )
        start = head[len(_BOM) :] if head.startswith(_BOM) else head
        start = start.lstrip()
        if start.startswith(b"["):
            # Streamed, so that memory stays bounded on HotpotQA train (540 MB) and the like.
            text = io.TextIOWrapper(f, encoding="utf-8-sig", newline="")
            try:
                yield from enumerate(iter_json_array(text, path))
            except UnicodeDecodeError:
                f.seek(0)
                _load_json(path, f.read(), "a JSON list of records")  # names the byte and line, then raises
                raise
            return
        first = True
        for i, raw in enumerate(f):
            if i == 0 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield (
                    i,
                    RecordError(
                        str(path),
                        i,
                        "<line>",
                        f"not valid UTF-8 (byte {e.start} of the line: {e.reason}); "
                        "re-encode the file as UTF-8",
                    ),
                )
                first = False
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                if first and start.startswith(b"{"):
                    f.seek(0)
                    whole = _load_json(path, f.read(), None)
                    if whole is not None:
                        raise LongmillError(_object_message(path, whole)) from None
                yield i, RecordError(str(path), i, "<line>", f"invalid JSON: {e.msg} at column {e.colno}")
                first = False
                continue
            if first and isinstance(record, dict) and records_inside(record) is not None:
                raise LongmillError(_object_message(path, record))
            first = False
            yield i, record


def _load_json(path: Path, data: bytes, expected: str | None) -> Any:
    """The whole file as JSON; with ``expected`` None, None when it is not JSON (instead of an error)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        if expected is None:
            return None
        line = data.count(b"\n", 0, e.start) + 1
        raise LongmillError(
            f"{path}: not valid UTF-8 at byte {e.start} (line {line}: {e.reason}); "
            "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        if expected is None:
            return None
        raise LongmillError(f"{path}: not valid JSON ({e}); expected {expected}") from None


def records_inside(obj: dict[str, Any]) -> str | None:
    """The key of ``obj`` that holds a list of records (JSON objects), if ``obj`` wraps them."""
    if _looks_like_record(obj):
        return None
    for k, v in obj.items():
        if isinstance(v, list) and v and all(isinstance(x, dict) and _looks_like_record(x) for x in v[:10]):
            return str(k)
    return None


def _looks_like_record(obj: dict[str, Any]) -> bool:
    return "question" in obj or looks_like(obj) is not None


def _object_message(path: Path, obj: Any) -> str:
    keys = ", ".join(repr(k) for k in list(obj)[:6]) if isinstance(obj, dict) else ""
    inner = records_inside(obj) if isinstance(obj, dict) else None
    hint = (
        f"; the records seem to be its {inner!r} list: write that list out (e.g. jq '.{inner}')"
        if inner
        else ""
    )
    return (
        f"{path}: expected a JSON list of records (or one JSON object per line), but the file is one JSON "
        f"object (keys {keys}){hint}"
    )


#: The published layouts a reader can recognise, by the keys only that layout has.
FORMAT_NAMES = {
    "hotpotqa": "HotpotQA",
    "2wikimqa": "2WikiMultihopQA",
    "musique": "MuSiQue",
    "hf": "the Hugging Face hub layout of HotpotQA",
}
_TWOWIKI_TYPES = {"compositional", "inference", "bridge_comparison"}


def looks_like(record: Any) -> str | None:
    """The source whose published layout ``record`` has (``musique``, ``hotpotqa``, ...), else None.

    Example:
        >>> looks_like({"id": "2hop__1", "paragraphs": [], "question_decomposition": [], "question": "?"})
        'musique'
    """
    if not isinstance(record, dict):
        return None
    keys = set(record)
    if {"paragraphs", "question_decomposition"} <= keys:
        return "musique"
    if {"context", "supporting_facts"} <= keys:
        if isinstance(record["context"], dict):
            return "hf"
        if "evidences" in keys or record.get("type") in _TWOWIKI_TYPES:
            return "2wikimqa"
        if "_id" in keys:
            return "hotpotqa"
    return None


def format_hint(record: Any, reader: str) -> str | None:
    """ "this looks like MuSiQue; use --source musique" when ``record`` is in another reader's layout."""
    other = looks_like(record)
    if other is None or other == reader or {other, reader} == {"hotpotqa", "2wikimqa"}:
        return None  # HotpotQA and 2Wiki share one layout: either reader reads the other's files
    return (
        f"this looks like {FORMAT_NAMES[other]}, not {FORMAT_NAMES.get(reader, reader)}; use --source {other}"
    )


def make_doc(title: str, text: str) -> Document:
    """A cleaned :class:`Document`."""
    return Document.make(clean_text(title), clean_text(text))


def require(record: Any, key: str, type_: type | tuple[type, ...], path: Path, index: int | str) -> Any:
    """``record[key]`` checked for presence and type, or a :class:`RecordError` naming the field."""
    if not isinstance(record, dict):
        raise RecordError(
            str(path), index, "<record>", f"expected a JSON object, got {type(record).__name__}"
        )
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
