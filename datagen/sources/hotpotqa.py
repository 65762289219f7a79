"""``hotpotqa``: the HotpotQA JSON files, and the ``context``/``supporting_facts`` layout it shares with 2Wiki.

The published files (``hotpot_dev_distractor_v1.json``, ``hotpot_dev_fullwiki_v1.json``,
``hotpot_train_v1.1.json``) are one JSON list of::

    {"_id": str, "question": str, "answer": str, "type": "bridge"|"comparison", "level": str,
     "supporting_facts": [[title, sent_id], ...], "context": [[title, [sentence, ...]], ...]}

This module also holds the helpers that 2WikiMultihopQA (same layout) and the hub layout of
``hotpotqa/hotpot_qa`` reuse: :func:`parse_wiki_layout`, :func:`join_sentences`, :func:`answer_list`,
:func:`datagen.sources.base.guess_split`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datagen.schema import Document, SupportingFact, Triplet
from datagen.sources.base import (
    SOURCES,
    SkipCounter,
    Source,
    bad_type,
    clean_text,
    require,
    skip_record,
)
from longmill.errors import LongmillError, RecordError

log = logging.getLogger(__name__)


def join_sentences(sentences: Iterable[str]) -> str:
    """Join a paragraph's sentences into single-line text that keeps a space after each sentence end.

    HotpotQA sentences after the first usually start with a space already; 2Wiki's do not. A space is
    inserted only where neither side has one, so ``"end." + "Next"`` never becomes ``"end.Next"``.

    Args:
        sentences: the paragraph's sentences, in order.
    """
    # Joining with a space everywhere separates the same words (cleaning collapses the doubled spaces where
    # a sentence already starts with one); replacing the double spaces first lets clean_text take its fast path.
    return clean_text(" ".join(sentences).replace("  ", " "))


def answer_list(path: str | Path, index: int | str, field: str, answers: Iterable[Any]) -> list[str]:
    """Cleaned answers, deduplicated in order; empty strings dropped; at least one is required.

    Args:
        path: the input file (for the error).
        index: the record index or id (for the error).
        field: the answer field's name (for the error).
        answers: the accepted answers, main answer first.
    """
    out: list[str] = []
    for i, a in enumerate(answers):
        if not isinstance(a, str):
            raise bad_type(path, index, field if i == 0 else f"{field}[{i}]", "a string answer", a)
        a = clean_text(a)
        if a and a not in out:
            out.append(a)
    if not out:
        raise RecordError(str(path), index, field, "the answer is empty")
    return out


class GoldTitleMissing(RecordError):
    """A supporting fact names a title that is not among the record's paragraphs."""


@dataclass
class WikiParts:
    """The documents and evidence of one record in the ``context``/``supporting_facts`` layout.

    Args:
        gold_docs: the paragraphs named by supporting facts, in order of their first fact.
        distractor_docs: the other paragraphs, in context order (empty ones left out).
        supporting_facts: the supporting sentences, deduplicated, in the record's order.
        hops: the number of distinct supporting titles.
    """

    gold_docs: list[Document]
    distractor_docs: list[Document]
    supporting_facts: list[SupportingFact]
    hops: int


def _parse_context(value: Any, path: str | Path, index: int | str) -> dict[str, list[str]]:
    """``[[title, [sentence, ...]], ...]`` as an ordered ``{clean title: sentences}`` map."""
    paras: dict[str, list[str]] = {}
    for i, item in enumerate(value):
        if not (isinstance(item, list | tuple) and len(item) == 2):
            raise RecordError(str(path), index, f"context[{i}]", "expected a [title, [sentence, ...]] pair")
        title, sents = item
        if not isinstance(title, str):
            raise bad_type(path, index, f"context[{i}][0]", "a title string", title)
        if not isinstance(sents, list | tuple):
            raise bad_type(path, index, f"context[{i}][1]", "a list of sentences", sents)
        for j, s in enumerate(sents):
            if not isinstance(s, str):
                raise bad_type(path, index, f"context[{i}][1][{j}]", "a sentence string", s)
        key = clean_text(title)
        if key in paras:
            # A repeated title would make supporting facts ambiguous; the first paragraph wins.
            log.debug("%s: record %s: paragraph %r repeated in context; keeping the first", path, index, key)
            continue
        paras[key] = list(sents)
    return paras


def _parse_facts(value: Any, path: str | Path, index: int | str) -> list[tuple[int, str, int]]:
    """``[[title, sent_id], ...]`` as ``(position, clean title, sent_id)``, duplicates removed."""
    facts: list[tuple[int, str, int]] = []
    seen: set[tuple[str, int]] = set()
    for i, item in enumerate(value):
        if not (isinstance(item, list | tuple) and len(item) == 2):
            raise RecordError(str(path), index, f"supporting_facts[{i}]", "expected a [title, sent_id] pair")
        title, sent = item
        if not isinstance(title, str):
            raise bad_type(path, index, f"supporting_facts[{i}][0]", "a title string", title)
        if isinstance(sent, bool) or not isinstance(sent, int):
            raise bad_type(path, index, f"supporting_facts[{i}][1]", "an integer sentence id", sent)
        key = (clean_text(title), sent)
        if key not in seen:
            seen.add(key)
            facts.append((i, *key))
    return facts


def parse_wiki_layout(record: dict[str, Any], path: str | Path, index: int | str) -> WikiParts:
    """Gold documents, distractors and supporting facts of a HotpotQA/2Wiki-layout record.

    Args:
        record: the record, with ``context`` and ``supporting_facts`` in the list layout.
        path: the input file (for errors).
        index: the record index or id (for errors).

    Raises:
        GoldTitleMissing: a supporting fact names a title absent from ``context`` (expected in
            HotpotQA's fullwiki setting).
        RecordError: any other malformed part, naming the nested field.
    """
    paras = _parse_context(require(record, "context", list, path, index), path, index)
    facts = _parse_facts(require(record, "supporting_facts", list, path, index), path, index)
    if not facts:
        raise RecordError(str(path), index, "supporting_facts", "empty: the record names no evidence")
    sfs: list[SupportingFact] = []
    gold_titles: list[str] = []
    for pos, title, sent in facts:
        if title not in paras:
            raise GoldTitleMissing(
                str(path), index, f"supporting_facts[{pos}]", f"title {title!r} is not in context"
            )
        sents = paras[title]
        if not 0 <= sent < len(sents):
            raise RecordError(
                str(path),
                index,
                f"supporting_facts[{pos}][1]",
                f"sentence {sent} is out of range: {title!r} has {len(sents)} sentence(s)",
            )
        text = clean_text(sents[sent])
        if not text:
            raise RecordError(
                str(path), index, f"supporting_facts[{pos}][1]", f"sentence {sent} of {title!r} is empty"
            )
        sfs.append(SupportingFact(title=title, sent_idx=sent, text=text))
        if title not in gold_titles:
            gold_titles.append(title)
    # Titles (the keys of ``paras``) and joined sentences are clean already: no second clean_text pass.
    gold = [Document.make(t, join_sentences(paras[t])) for t in gold_titles]
    distractors = []
    for title, sents in paras.items():
        if title in gold_titles:
            continue
        doc = Document.make(title, join_sentences(sents))
        if doc.text:
            distractors.append(doc)
    return WikiParts(gold_docs=gold, distractor_docs=distractors, supporting_facts=sfs, hops=len(gold_titles))


def hotpotqa_triplet(
    record: Any,
    path: str | Path,
    index: int,
    *,
    split: str,
    fullwiki: bool,
    skips: SkipCounter,
    source: str = "hotpotqa",
    id_key: str = "_id",
) -> Triplet | None:
    """One HotpotQA record (list layout) as a :class:`Triplet`, or ``None`` when it was skipped.

    Args:
        record: the parsed JSON object.
        path: the input file (for errors).
        index: the record's position in the file.
        split: the split to record in the triplet.
        fullwiki: whether a supporting title missing from ``context`` is expected (counted as
            ``hotpotqa:gold_missing``) rather than a malformed record.
        skips: where skipped records are counted.
        source: the source name used in the triplet id.
        id_key: the record's id field (``_id`` in the files, ``id`` on the hub).
    """
    try:
        rid = require(record, id_key, str, path, index)
        question = clean_text(require(record, "question", str, path, index))
        if not question:
            raise RecordError(str(path), index, "question", "the question is empty")
        if "answer" not in record:
            # The test-set files carry no answers: nothing to verify a reward against.
            skips.count(f"{source}:no_answer")
            return None
        answers = answer_list(path, index, "answer", [require(record, "answer", str, path, index)])
        qtype = record.get("type")
        if qtype is not None and not isinstance(qtype, str):
            raise bad_type(path, index, "type", "a string", qtype)
        parts = parse_wiki_layout(record, path, index)
    except GoldTitleMissing as e:
        if fullwiki:
            skips.count(f"{source}:gold_missing")
            log.debug("%s", e)
        else:
            skip_record(skips, e, kind=f"{source}:gold_missing")
        return None
    except RecordError as e:
        skip_record(skips, e)
        return None
    return Triplet(
        id=f"{source}:{rid}",
        source=source,
        split=split,
        question=question,
        answers=answers,
        hops=parts.hops,
        question_type=qtype,
        gold_docs=parts.gold_docs,
        supporting_facts=parts.supporting_facts,
        distractor_docs=parts.distractor_docs,
    )


@SOURCES.register("hotpotqa")
class HotpotQA(Source):
    """HotpotQA JSON files (distractor, fullwiki, or train).

    Gold documents are the context paragraphs named by ``supporting_facts``; the record's other
    paragraphs are its distractors; hops is the number of distinct supporting titles.

    Skip counts: ``hotpotqa:no_answer`` (test files carry no answer), ``hotpotqa:gold_missing`` (a
    supporting title absent from the retrieved context: expected in fullwiki, a malformed record in
    the distractor setting, where it fails under ``strict``), and ``malformed:<field>``.

    Args:
        input: a file, directory or glob of HotpotQA JSON files.
        strict: raise on the first malformed record.
        limit: stop after this many triplets.
        options: ``split`` (default: ``train`` if the file name says train, ``test`` if it says
            test, else ``dev``); ``setting`` (``distractor`` or ``fullwiki``; default: ``fullwiki``
            when the file name contains it).
    """

    name = "hotpotqa"
    extensions = (".json",)
    option_names = ("split", "setting")

    def _check_options(self) -> None:
        super()._check_options()
        setting = self.options.get("setting")
        if setting not in (None, "distractor", "fullwiki"):
            raise LongmillError(
                f"source 'hotpotqa': option setting={setting!r}; use 'distractor' or 'fullwiki'"
            )

    def _iter(self) -> Iterator[Triplet]:
        setting = self.options.get("setting")
        for path, split, index, record in self.json_records():
            fullwiki = setting == "fullwiki" if setting else "fullwiki" in path.name.lower()
            t = hotpotqa_triplet(record, path, index, split=split, fullwiki=fullwiki, skips=self.skips)
            if t is not None:
                yield t
