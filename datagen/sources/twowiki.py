"""``2wikimqa``: 2WikiMultihopQA's ``train.json``/``dev.json`` (HotpotQA's layout plus ``evidences``).

Records are ``{"_id", "type", "question", "context", "supporting_facts", "evidences", "answer"}``;
the ``data_ids`` release adds ``entity_ids`` (the Wikidata ids of the gold paragraphs, e.g.
``"Q7320430_Q51759"``), ``answer_id`` and ``evidences_id``. Its ``id_aliases.json`` (JSON lines
``{"Q_id", "aliases", "demonyms"}``) lists other names of the entities.

Alias rule, as in the official ``2wikimultihop_evaluate_v1.1.py``: the accepted answers are the
answer plus the aliases and demonyms of ``answer_id``. ``entity_ids`` names the gold paragraphs'
entities, not the answer's, so it is used only as a fallback when the record has no ``answer_id``
and exactly one of those entities already lists the answer among its own aliases; otherwise no
aliases are added (adding a paragraph entity's names would accept wrong answers).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datagen.schema import Triplet
from datagen.sources.base import SOURCES, Source, clean_text, iter_json_records, skip_record
from datagen.sources.hotpotqa import hotpotqa_triplet
from longmill.errors import LongmillError, RecordError

log = logging.getLogger(__name__)


@SOURCES.register("2wikimqa")
class TwoWikiMQA(Source):
    """2WikiMultihopQA JSON files.

    Parsed exactly like HotpotQA (gold = paragraphs named by ``supporting_facts``, hops = distinct
    supporting titles); ``type`` (comparison, inference, compositional, bridge_comparison) becomes
    the question type.

    Skip counts: ``2wikimqa:no_answer`` (test file), ``2wikimqa:gold_missing`` and
    ``malformed:<field>`` (both fail under ``strict``); a bad line of the alias file is counted as
    ``malformed:aliases``.

    Args:
        input: a file, directory or glob of 2Wiki JSON files.
        strict: raise on the first malformed record.
        limit: stop after this many triplets.
        options: ``split`` (default guessed from the file name: train, test, else dev);
            ``aliases`` (path to the release's ``id_aliases.json``; adds the answer entity's aliases
            and demonyms to the accepted answers, see the module docstring).
    """

    name = "2wikimqa"
    extensions = (".json",)
    option_names = ("split", "aliases")

    def _iter(self) -> Iterator[Triplet]:
        aliases = self._load_aliases()
        for path, split, index, record in self.json_records():
            t = hotpotqa_triplet(
                record, path, index, split=split, fullwiki=False, skips=self.skips, source=self.name
            )
            if t is None:
                continue
            if aliases:
                extra = [clean_text(a) for a in answer_aliases(record, t.answers[0], aliases)]
                t.answers += [a for a in dict.fromkeys(extra) if a and a not in t.answers]
            yield t

    def _load_aliases(self) -> dict[str, list[str]]:
        """``{Q_id: aliases + demonyms}`` from the ``aliases`` option (empty without it)."""
        option = self.options.get("aliases")
        if not option:
            return {}
        path = Path(option)
        if not path.is_file():
            raise LongmillError(
                f"source '2wikimqa': aliases file {path} not found; "
                "pass the path of the release's id_aliases.json"
            )
        table: dict[str, list[str]] = {}
        for index, rec in iter_json_records(path):
            if isinstance(rec, RecordError):
                skip_record(self.skips, rec, kind="malformed:aliases")
                continue
            try:
                qid = rec.get("Q_id") if isinstance(rec, dict) else None
                if not isinstance(qid, str):
                    raise RecordError(str(path), index, "Q_id", "missing or not a string")
                names: list[str] = []
                for key in ("aliases", "demonyms"):
                    value = rec.get(key) or []
                    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                        raise RecordError(str(path), index, key, "expected a list of strings")
                    names += value
            except RecordError as e:
                skip_record(self.skips, e, kind="malformed:aliases")
                continue
            table[qid] = names
        log.info("%s: aliases for %d entities", path, len(table))
        return table


def answer_aliases(record: dict[str, Any], answer: str, aliases: dict[str, list[str]]) -> list[str]:
    """The other names of the record's answer entity (empty when it cannot be identified safely).

    Args:
        record: the 2Wiki record.
        answer: its (cleaned) answer.
        aliases: ``{Q_id: names}`` from ``id_aliases.json``.
    """
    answer_id = record.get("answer_id")
    if isinstance(answer_id, str) and answer_id:
        return aliases.get(answer_id, [])
    ids = record.get("entity_ids")
    if isinstance(ids, str):
        ids = [i for i in ids.split("_") if i]
    if not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
        return []
    key = answer.casefold()
    matches = [i for i in dict.fromkeys(ids) if key in {clean_text(a).casefold() for a in aliases.get(i, [])}]
    return aliases[matches[0]] if len(matches) == 1 else []
