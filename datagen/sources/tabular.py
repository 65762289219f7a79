"""``jsonl`` and ``parquet``: the user's own QA files, read through a column mapping.

The option ``map`` names, for each longmill field, the user's column (default: the same name)::

    {"id": "qid", "question": "q", "answers": "gold", "gold_docs": "evidence", ...}

Fields: ``id`` (default: the record's position), ``question``, ``answers`` (a string or a list of
strings; a column ``answer`` is used when ``answers`` is absent and not mapped), ``gold_docs`` and
``distractor_docs`` (lists of ``{"title", "text"}`` objects or of plain strings), ``context`` (a string,
used as the one gold document when there are no ``gold_docs``), ``supporting_facts`` (a list of
``{"title", "sent_idx", "text"}`` objects or of strings; an unknown ``sent_idx`` is -1), ``hops``
(default: the number of gold documents), ``question_type`` and ``split`` (default: the ``split``
option, else ``train``).
"""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datagen.schema import Document, SupportingFact, Triplet
from datagen.shards import iter_rows, read_schema
from datagen.sources.base import (
    FORMAT_NAMES,
    SOURCES,
    Source,
    bad_type,
    clean_text,
    iter_json_records,
    looks_like,
    make_doc,
    skip_record,
)
from datagen.sources.hotpotqa import answer_list
from longmill.errors import LongmillError, RecordError

log = logging.getLogger(__name__)

FIELDS = (
    "id",
    "question",
    "answers",
    "gold_docs",
    "distractor_docs",
    "context",
    "supporting_facts",
    "hops",
    "question_type",
    "split",
)


class ColumnMap:
    """Turns one user row into a :class:`Triplet` through a field -> column mapping.

    Args:
        mapping: ``{longmill field: user column}``; unmapped fields use their own name.
        source: the source name used in triplet ids.
        default_split: the split of rows that have no split column.
    """

    def __init__(self, mapping: Any, source: str, default_split: str = "train"):
        mapping = {} if mapping is None else mapping
        if isinstance(mapping, str):  # given as JSON text on a command line
            try:
                mapping = json.loads(mapping)
            except json.JSONDecodeError as e:
                raise LongmillError(
                    f"source '{source}': option map is not a JSON object ({e}); "
                    'write it as {"question": "my_question_column", ...}'
                ) from e
        if not isinstance(mapping, dict):
            raise LongmillError(
                f"source '{source}': option map must be a {{field: column}} object, "
                f"got {type(mapping).__name__}"
            )
        for key, col in mapping.items():
            if key not in FIELDS:
                close = difflib.get_close_matches(str(key), FIELDS, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise LongmillError(
                    f"source '{source}': option map has unknown field '{key}'{hint}; "
                    f"valid fields: {', '.join(FIELDS)}"
                )
            if not isinstance(col, str) or not col:
                raise LongmillError(
                    f"source '{source}': option map['{key}'] must be a column name, got {col!r}"
                )
        self.mapping = {f: mapping.get(f, f) for f in FIELDS}
        self.answer_fallback = "answers" not in mapping
        self.source = source
        self.default_split = default_split

    def columns(self) -> list[str]:
        """Every user column the mapping may read (``answer`` included when it is the fallback)."""
        cols = list(dict.fromkeys(self.mapping.values()))
        if self.answer_fallback and "answer" not in cols:
            cols.append("answer")
        return cols

    def _get(self, row: dict[str, Any], field: str) -> tuple[str, Any]:
        col = self.mapping[field]
        return col, row.get(col)

    def triplet(self, row: Any, path: str | Path, index: int, fallback_id: str) -> Triplet:
        """The row as a triplet; a :class:`RecordError` naming the user's column when it is malformed.

        Args:
            row: the record (a dict of columns).
            path: the file it came from (for errors).
            index: its position in the file (for errors).
            fallback_id: the record id to use when the row has no id.
        """
        path = str(path)
        if not isinstance(row, dict):
            raise bad_type(path, index, "<record>", "an object", row)
        col, rid = self._get(row, "id")
        if rid is None:
            rid = fallback_id
        elif isinstance(rid, bool) or not isinstance(rid, str | int):
            raise bad_type(path, index, col, "a string or integer id", rid)
        col, question = self._get(row, "question")
        if question is not None and not isinstance(question, str):
            raise bad_type(path, index, col, "a string", question)
        if not question or not clean_text(question):
            raise RecordError(path, index, col, "missing or empty")
        col, answers = self._get(row, "answers")
        if answers is None and self.answer_fallback and row.get("answer") is not None:
            col, answers = "answer", row["answer"]
        if answers is None:
            raise RecordError(path, index, col, "missing (map the answer column with map={'answers': NAME})")
        if not isinstance(answers, str | list | tuple):
            raise bad_type(path, index, col, "a string or a list of strings", answers)
        answers = answer_list(path, index, col, [answers] if isinstance(answers, str) else answers)
        gold = self._docs(row, "gold_docs", path, index)
        if not gold:
            col, context = self._get(row, "context")
            if isinstance(context, str):
                gold = [make_doc("", context)] if clean_text(context) else []
            elif context is not None:
                gold = self._docs(row, "context", path, index)
            if not gold:
                gold_col, context_col = self.mapping["gold_docs"], self.mapping["context"]
                raise RecordError(
                    path, index, gold_col, f"no gold documents: give '{gold_col}' or a '{context_col}' string"
                )
        col, hops = self._get(row, "hops")
        if hops is None:
            hops = len(gold)
        elif isinstance(hops, bool) or not isinstance(hops, int) or hops < 1:
            raise RecordError(path, index, col, f"expected a positive integer, got {hops!r}")
        col, qtype = self._get(row, "question_type")
        if qtype is not None and not isinstance(qtype, str):
            raise bad_type(path, index, col, "a string", qtype)
        col, split = self._get(row, "split")
        if split is not None and not isinstance(split, str):
            raise bad_type(path, index, col, "a string", split)
        return Triplet(
            id=f"{self.source}:{rid}",
            source=self.source,
            split=split or self.default_split,
            question=clean_text(question),
            answers=answers,
            hops=hops,
            question_type=qtype,
            gold_docs=gold,
            supporting_facts=self._facts(row, path, index),
            distractor_docs=[d for d in self._docs(row, "distractor_docs", path, index) if d.text],
        )

    def _docs(self, row: dict[str, Any], field: str, path: str, index: int) -> list[Document]:
        col, value = self._get(row, field)
        if value is None:
            return []
        if not isinstance(value, list | tuple):
            raise bad_type(path, index, col, "a list of documents", value)
        docs = []
        for i, d in enumerate(value):
            if isinstance(d, str):
                docs.append(make_doc("", d))
                continue
            if not isinstance(d, dict):
                raise bad_type(path, index, f"{col}[{i}]", "a {title, text} object or a string", d)
            title, text = d.get("title") or "", d.get("text")
            if not isinstance(text, str):
                if text is None:
                    raise RecordError(path, index, f"{col}[{i}].text", "missing")
                raise bad_type(path, index, f"{col}[{i}].text", "a string", text)
            if not isinstance(title, str):
                raise bad_type(path, index, f"{col}[{i}].title", "a string", title)
            docs.append(make_doc(title, text))
        if field != "distractor_docs":
            for i, d in enumerate(docs):
                if not d.text:
                    raise RecordError(path, index, f"{col}[{i}]", "a gold document is empty")
        return docs

    def _facts(self, row: dict[str, Any], path: str, index: int) -> list[SupportingFact]:
        col, value = self._get(row, "supporting_facts")
        if value is None:
            return []
        if not isinstance(value, list | tuple):
            raise bad_type(path, index, col, "a list", value)
        facts = []
        for i, f in enumerate(value):
            if isinstance(f, str):
                f = {"text": f}
            if not isinstance(f, dict):
                raise bad_type(path, index, f"{col}[{i}]", "a {title, sent_idx, text} object or a string", f)
            title, sent, text = f.get("title") or "", f.get("sent_idx"), f.get("text")
            sent = -1 if sent is None else sent
            if not (isinstance(text, str) and isinstance(title, str)) or type(sent) is not int:
                raise RecordError(path, index, f"{col}[{i}]", "expected title: str, sent_idx: int, text: str")
            facts.append(SupportingFact(title=clean_text(title), sent_idx=sent, text=clean_text(text)))
        return facts


class _Mapped(Source):
    """Shared option handling of the mapped file sources."""

    option_names = ("map", "split")
    #: a column map says nothing about where a user's answers come from (they may be free-form)
    extractive_answers = False

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.columns = ColumnMap(self.options.get("map"), self.name, self.options.get("split") or "train")

    def _emit(self, row: Any, path: Path, index: int, multi: bool) -> Triplet | None:
        fallback = f"{path.stem}-{index}" if multi else str(index)
        try:
            return self.columns.triplet(row, path, index, fallback)
        except RecordError as e:
            skip_record(self.skips, e)
            return None


@SOURCES.register("jsonl")
class JsonlSource(_Mapped):
    """The user's JSON-lines (or JSON list) files, read through the column mapping.

    Skip counts: ``malformed:<column>`` for bad rows and ``malformed:<line>`` for lines that are not
    JSON (both fail under ``strict``).

    Args:
        input: a file, directory or glob of ``.jsonl``/``.json`` files.
        strict: raise on the first malformed record.
        limit: stop after this many triplets.
        options: ``map`` (``{field: column}``, see the module docstring) and ``split`` (the split of
            rows without a split column; default ``train``). Without an id column, a row's id is its
            line number (prefixed by the file's stem when there are several files).
    """

    name = "jsonl"
    extensions = (".jsonl", ".json")

    def _iter(self) -> Iterator[Triplet]:
        files = self.files()
        for path in files:
            first = True
            for index, record in iter_json_records(path):
                if isinstance(record, RecordError):
                    skip_record(self.skips, record)
                    continue
                if first and not self.options.get("map") and (other := looks_like(record)):
                    # Without a mapping, a published layout would be read column by column and lose its
                    # documents; its own reader understands it.
                    raise LongmillError(
                        f"{path}: this looks like {FORMAT_NAMES[other]}; use --source {other} "
                        "(or map its fields with the source option map={...})"
                    )
                first = False
                t = self._emit(record, path, index, len(files) > 1)
                if t is not None:
                    yield t


@SOURCES.register("parquet")
class ParquetSource(_Mapped):
    """The user's Parquet files, read batch by batch through the column mapping.

    Only the mapped columns are read. A file without the question column is an error (every row
    would be skipped); other bad rows are counted as ``malformed:<column>``.

    Args:
        input: a file, directory or glob of ``.parquet`` files.
        strict: raise on the first malformed record.
        limit: stop after this many triplets.
        options: ``map`` and ``split``, as for ``jsonl``.
    """

    name = "parquet"
    extensions = (".parquet",)

    def _iter(self) -> Iterator[Triplet]:
        files = self.files()
        for path in files:
            names = read_schema(path).names
            question = self.columns.mapping["question"]
            if question not in names:
                raise LongmillError(
                    f"{path}: no column '{question}' for the question (columns: {', '.join(names)}); "
                    "name it with the source option map={'question': COLUMN}"
                )
            cols = [c for c in self.columns.columns() if c in names]
            for _, index, row in iter_rows([path], columns=cols):
                t = self._emit(row, path, index, len(files) > 1)
                if t is not None:
                    yield t
