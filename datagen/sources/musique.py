"""``musique``: MuSiQue's JSON-lines files (``musique_ans_v1.0_*.jsonl``, ``musique_full_v1.0_*.jsonl``).

Each line is::

    {"id": "2hop__460946_294723", "question": str, "answer": str, "answer_aliases": [str, ...],
     "answerable": bool, "paragraphs": [{"idx", "title", "paragraph_text", "is_supporting"}, ...],
     "question_decomposition": [{"id", "question", "answer", "paragraph_support_idx"}, ...]}
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datagen.schema import Document, SupportingFact, Triplet
from datagen.sources.base import (
    SOURCES,
    Source,
    bad_type,
    clean_text,
    make_doc,
    require,
    skip_record,
)
from datagen.sources.hotpotqa import answer_list
from longmill.errors import RecordError

log = logging.getLogger(__name__)

_SENT_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    """Split cleaned paragraph text after ``.``, ``!`` or ``?`` followed by whitespace.

    Args:
        text: single-line paragraph text.
    """
    return [s for s in _SENT_END.split(text) if s]


def _paragraphs(value: list[Any], path: Path, index: int) -> dict[int, tuple[Document, bool]]:
    """``{idx: (document, is_supporting)}`` in file order."""
    out: dict[int, tuple[Document, bool]] = {}
    for i, p in enumerate(value):
        f = f"paragraphs[{i}]"
        if not isinstance(p, dict):
            raise bad_type(path, index, f, "an object", p)
        for key, type_ in (("idx", int), ("title", str), ("paragraph_text", str), ("is_supporting", bool)):
            if key not in p:
                raise RecordError(str(path), index, f"{f}.{key}", "missing")
            if not isinstance(p[key], type_) or (type_ is int and isinstance(p[key], bool)):
                raise bad_type(path, index, f"{f}.{key}", type_.__name__, p[key])
        if p["idx"] in out:
            raise RecordError(str(path), index, f"{f}.idx", f"idx {p['idx']} repeated")
        out[p["idx"]] = (make_doc(p["title"], p["paragraph_text"]), p["is_supporting"])
    return out


def _facts(
    steps: list[Any], paras: dict[int, tuple[Document, bool]], path: Path, index: int
) -> list[SupportingFact]:
    """One supporting sentence per decomposition step: the first sentence of its supporting
    paragraph that contains the step's answer (case-insensitive), else that paragraph's first."""
    facts: list[SupportingFact] = []
    for i, step in enumerate(steps):
        f = f"question_decomposition[{i}]"
        if not isinstance(step, dict):
            raise bad_type(path, index, f, "an object", step)
        support = step.get("paragraph_support_idx")
        answer = step.get("answer", "")
        if not isinstance(answer, str):
            raise bad_type(path, index, f"{f}.answer", "str", answer)
        if support is None:
            log.debug("%s: record %s: %s has no supporting paragraph", path, index, f)
            continue
        if isinstance(support, bool) or not isinstance(support, int):
            raise bad_type(path, index, f"{f}.paragraph_support_idx", "int or null", support)
        if support not in paras:
            raise RecordError(
                str(path), index, f"{f}.paragraph_support_idx", f"no paragraph has idx {support}"
            )
        doc = paras[support][0]
        sents = split_sentences(doc.text)
        if not sents:
            raise RecordError(str(path), index, f"{f}.paragraph_support_idx", f"paragraph {support} is empty")
        key = clean_text(answer).casefold()
        sent_idx = next((j for j, s in enumerate(sents) if key and key in s.casefold()), 0)
        fact = SupportingFact(title=doc.title, sent_idx=sent_idx, text=sents[sent_idx])
        if fact not in facts:
            facts.append(fact)
    return facts


def musique_triplet(record: Any, path: Path, index: int, split: str, source: Source) -> Triplet | None:
    """One MuSiQue record as a :class:`Triplet`, or ``None`` when it is skipped (and counted).

    Args:
        record: the parsed JSON object.
        path: the input file (for errors).
        index: the record's line number.
        split: the split to record.
        source: the source whose skip counter counts skips.
    """
    try:
        rid = require(record, "id", str, path, index)
        answerable = record.get("answerable", True)
        if not isinstance(answerable, bool):
            raise bad_type(path, index, "answerable", "bool", answerable)
        if not answerable:
            source.skips.count("musique:unanswerable")
            return None
        if "answer" not in record:
            source.skips.count("musique:no_answer")
            return None
        question = clean_text(require(record, "question", str, path, index))
        if not question:
            raise RecordError(str(path), index, "question", "the question is empty")
        aliases = record.get("answer_aliases") or []
        if not isinstance(aliases, list):
            raise bad_type(path, index, "answer_aliases", "a list", aliases)
        for j, a in enumerate(aliases):
            if not isinstance(a, str):
                raise bad_type(path, index, f"answer_aliases[{j}]", "str", a)
        answers = answer_list(path, index, "answer", [require(record, "answer", str, path, index)])
        answers = answer_list(path, index, "answer", [*answers, *aliases])
        paras = _paragraphs(require(record, "paragraphs", list, path, index), path, index)
        steps = require(record, "question_decomposition", list, path, index)
        if not steps:
            raise RecordError(str(path), index, "question_decomposition", "empty")
        facts = _facts(steps, paras, path, index)
    except RecordError as e:
        skip_record(source.skips, e)
        return None
    # Gold in evidence order: paragraphs in the order the decomposition steps use them, then any
    # other supporting paragraph in file order.
    used = [s.get("paragraph_support_idx") for s in steps]
    order = [i for i in dict.fromkeys(used) if i in paras] + [i for i in paras if i not in used]
    gold = [paras[i][0] for i in order if paras[i][1]]
    if not gold:
        skip_record(source.skips, RecordError(str(path), index, "paragraphs", "no paragraph is_supporting"))
        return None
    qtype = rid.split("__", 1)[0] if "__" in rid else None
    return Triplet(
        id=f"{source.name}:{rid}",
        source=source.name,
        split=split,
        question=question,
        answers=answers,
        hops=len(steps),
        question_type=qtype,
        gold_docs=gold,
        supporting_facts=facts,
        distractor_docs=[d for d, sup in paras.values() if not sup and d.text],
    )


@SOURCES.register("musique")
class MuSiQue(Source):
    """MuSiQue JSON-lines files (the ``ans`` and ``full`` versions).

    Gold documents are the paragraphs with ``is_supporting``, in the order the decomposition steps
    use them (as HotpotQA's follow their first supporting fact); hops is the number of decomposition
    steps; the question type is the id's prefix (``2hop``, ``3hop1``, ``4hop3``, ...); answers are
    ``[answer] + answer_aliases``.

    Skip counts: ``musique:unanswerable`` (``answerable: false`` in the full version; not an error),
    ``musique:no_answer`` (test files), ``malformed:<field>`` (fails under ``strict``).

    Args:
        input: a file, directory or glob of MuSiQue ``.jsonl`` files.
        strict: raise on the first malformed record.
        limit: stop after this many triplets.
        options: ``split`` (default guessed from the file name: train, test, else dev).
    """

    name = "musique"
    extensions = (".jsonl",)
    option_names = ("split",)

    def _iter(self) -> Iterator[Triplet]:
        for path, split, index, record in self.json_records():
            t = musique_triplet(record, path, index, split, self)
            if t is not None:
                yield t
