"""Writers of small files in the published QA layouts, and builders of realistic records for tests.

- ``write_hotpotqa``, ``write_musique``, ``write_2wikimqa``, ``write_2wiki_aliases``, ``write_jsonl``,
  ``write_parquet``: write files byte-for-byte in each layout (``json.dump`` defaults, as the
  releases use: ASCII escapes, ``", "``/``": "`` separators; one JSON list, or one object a line).
  They take :class:`QARecord` s (converted to the layout) or dicts already in the layout.
- ``hotpotqa_example``, ``musique_example``, ``twowiki_example``: hand-written records modelled on
  the first dev record of each data set (fresh copies, safe to mutate).
- ``make_qa_records``: ``n`` deterministic multi-hop records with ~80-150-token paragraphs and
  distinct titles, for building long contexts.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


@dataclass
class QARecord:
    """A layout-neutral multi-hop record.

    Args:
        id: the record id (``_id`` in HotpotQA/2Wiki; MuSiQue ids are derived from it).
        question: the question.
        answer: the main answer.
        aliases: other accepted answers.
        paragraphs: ``(title, sentences)`` in context order; sentences carry no leading space.
        supporting: ``(title, sent_idx)`` evidence, one per hop, in hop order.
        step_answers: the answer of each hop (the bridge entities, then the answer).
        type: the question type.
        level: HotpotQA's difficulty level.
    """

    id: str
    question: str
    answer: str
    aliases: list[str] = field(default_factory=list)
    paragraphs: list[tuple[str, list[str]]] = field(default_factory=list)
    supporting: list[tuple[str, int]] = field(default_factory=list)
    step_answers: list[str] = field(default_factory=list)
    type: str = "bridge"
    level: str = "medium"

    @property
    def gold_titles(self) -> list[str]:
        return list(dict.fromkeys(t for t, _ in self.supporting))

    def text_of(self, title: str) -> str:
        """The paragraph's text, sentences joined by single spaces."""
        return " ".join(dict(self.paragraphs)[title])


# ---------------------------------------------------------------------------------------------
# layouts


def hotpotqa_layout(rec: QARecord) -> dict[str, Any]:
    """The HotpotQA file layout (sentences after the first start with a space, as released)."""
    return {
        "_id": rec.id,
        "answer": rec.answer,
        "question": rec.question,
        "supporting_facts": [[t, i] for t, i in rec.supporting],
        "context": [
            [t, [s if j == 0 else " " + s for j, s in enumerate(sents)]] for t, sents in rec.paragraphs
        ],
        "type": rec.type,
        "level": rec.level,
    }


def hub_hotpotqa_layout(rec: QARecord) -> dict[str, Any]:
    """The row layout of the hub dataset ``hotpotqa/hotpot_qa`` (columns of lists)."""
    row = hotpotqa_layout(rec)
    return {
        "id": row["_id"],
        "question": row["question"],
        "answer": row["answer"],
        "type": row["type"],
        "level": row["level"],
        "supporting_facts": {
            "title": [t for t, _ in rec.supporting],
            "sent_id": [i for _, i in rec.supporting],
        },
        "context": {"title": [t for t, _ in row["context"]], "sentences": [s for _, s in row["context"]]},
    }


def musique_id(rec: QARecord) -> str:
    """A MuSiQue-style id, ``<hops>hop__<step id>_<step id>...``, derived from the record id."""
    steps = [str(100000 + zlib.crc32(f"{rec.id}:{i}".encode()) % 900000) for i in range(len(rec.supporting))]
    return f"{len(steps)}hop__" + "_".join(steps)


def musique_layout(rec: QARecord, answerable: bool = True) -> dict[str, Any]:
    """The MuSiQue line layout; step ``i`` is supported by the paragraph of ``supporting[i]``."""
    idx = {t: i for i, (t, _) in enumerate(rec.paragraphs)}
    gold = set(rec.gold_titles)
    ids = musique_id(rec).split("__")[1].split("_")
    answers = rec.step_answers or [rec.answer] * len(rec.supporting)
    return {
        "id": musique_id(rec),
        "paragraphs": [
            {"idx": i, "title": t, "paragraph_text": " ".join(s), "is_supporting": t in gold}
            for i, (t, s) in enumerate(rec.paragraphs)
        ],
        "question": rec.question,
        "question_decomposition": [
            {
                "id": int(ids[k]),
                "question": f"step {k + 1} of: {rec.question}",
                "answer": answers[k],
                "paragraph_support_idx": idx[t],
            }
            for k, (t, _) in enumerate(rec.supporting)
        ],
        "answer": rec.answer,
        "answer_aliases": list(rec.aliases),
        "answerable": answerable,
    }


def twowiki_layout(rec: QARecord, **extra: Any) -> dict[str, Any]:
    """The 2WikiMultihopQA layout (sentences without leading spaces); ``extra`` adds keys such as
    ``entity_ids`` or ``answer_id``."""
    answers = rec.step_answers or [rec.answer] * len(rec.supporting)
    return {
        "_id": rec.id,
        "type": "compositional" if rec.type == "bridge" else rec.type,
        "question": rec.question,
        "context": [[t, list(s)] for t, s in rec.paragraphs],
        "supporting_facts": [[t, i] for t, i in rec.supporting],
        "evidences": [[t, "relation", a] for (t, _), a in zip(rec.supporting, answers, strict=False)],
        "answer": rec.answer,
        **extra,
    }


def mapped_layout(rec: QARecord) -> dict[str, Any]:
    """longmill's default column names (what the ``jsonl``/``parquet``/``hf`` sources read unmapped)."""
    gold = rec.gold_titles
    return {
        "id": rec.id,
        "question": rec.question,
        "answers": [rec.answer, *rec.aliases],
        "gold_docs": [{"title": t, "text": rec.text_of(t)} for t in gold],
        "distractor_docs": [{"title": t, "text": " ".join(s)} for t, s in rec.paragraphs if t not in gold],
        "supporting_facts": [
            {"title": t, "sent_idx": i, "text": dict(rec.paragraphs)[t][i]} for t, i in rec.supporting
        ],
        "hops": len(gold),
        "question_type": rec.type,
    }


# ---------------------------------------------------------------------------------------------
# writers


def _as(records: list[Any], layout: Any) -> list[Any]:
    return [layout(r) if isinstance(r, QARecord) else r for r in records]


def _write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_json_list(path: str | Path, records: list[Any]) -> Path:
    """One JSON list, ``json.dump`` defaults (how HotpotQA and 2Wiki are released)."""
    return _write_text(path, json.dumps(records))


def write_json_lines(path: str | Path, records: list[Any]) -> Path:
    """One JSON object a line (``json.dumps`` defaults), newline-terminated."""
    return _write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def write_hotpotqa(path: str | Path, records: list[QARecord | dict]) -> Path:
    """A HotpotQA file (``hotpot_dev_distractor_v1.json`` layout)."""
    return write_json_list(path, _as(records, hotpotqa_layout))


def write_musique(path: str | Path, records: list[QARecord | dict]) -> Path:
    """A MuSiQue file (``musique_ans_v1.0_dev.jsonl`` layout)."""
    return write_json_lines(path, _as(records, musique_layout))


def write_2wikimqa(path: str | Path, records: list[QARecord | dict]) -> Path:
    """A 2WikiMultihopQA file (``dev.json`` layout)."""
    return write_json_list(path, _as(records, twowiki_layout))


def write_2wiki_aliases(path: str | Path, aliases: dict[str, tuple[list[str], list[str]]]) -> Path:
    """2Wiki's ``id_aliases.json``: ``{Q_id: (aliases, demonyms)}`` as JSON lines."""
    return write_json_lines(path, [{"Q_id": q, "aliases": a, "demonyms": d} for q, (a, d) in aliases.items()])


def write_jsonl(path: str | Path, rows: list[QARecord | dict]) -> Path:
    """User rows as JSON lines (QARecords in longmill's default column names)."""
    return write_json_lines(path, _as(rows, mapped_layout))


def write_parquet(path: str | Path, rows: list[QARecord | dict], row_group_size: int = 2) -> Path:
    """User rows as Parquet, in small row groups so that readers really go batch by batch."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(_as(rows, mapped_layout)), path, row_group_size=row_group_size)
    return path


# ---------------------------------------------------------------------------------------------
# hand-written records, modelled on each data set's first dev record


def hotpotqa_example() -> dict[str, Any]:
    """A comparison record in the layout of ``hotpot_dev_distractor_v1.json``'s first record."""
    return {
        "_id": "5a8b57f25542995d1e6f1371",
        "answer": "yes",
        "question": "Were Scott Derrickson and Ed Wood of the same nationality?",
        "supporting_facts": [["Scott Derrickson", 0], ["Ed Wood", 0]],
        "context": [
            [
                "Ed Wood (film)",
                [
                    "Ed Wood is a 1994 American biographical period comedy-drama film directed and produced by Tim Burton.",
                    " It stars Johnny Depp as cult filmmaker Ed Wood.",
                ],
            ],
            [
                "Scott Derrickson",
                [
                    "Scott Derrickson (born July 16, 1966) is an American director, screenwriter and producer.",
                    " He lives in Los Angeles, California.",
                    ' He is best known for directing horror films such as "Sinister".',
                ],
            ],
            [
                "Woodson, Arkansas",
                ["Woodson is a census-designated place in Pulaski County, Arkansas, United States."],
            ],
            [
                "Ed Wood",
                [
                    "Edward Davis Wood Jr. (October 10, 1924 \u2013 December 10, 1978) was an American filmmaker, actor, writer, producer, and director."
                ],
            ],
            [
                "Conrad Brooks",
                [
                    "Conrad Brooks (born Conrad Biedrzycki on January 3, 1931 in Baltimore, Maryland) is an American actor.",
                    "He moved to Hollywood, California in 1948.",
                ],
            ],
        ],
        "type": "comparison",
        "level": "hard",
    }


def musique_example() -> dict[str, Any]:
    """A 2-hop record in the layout of ``musique_ans_v1.0_dev.jsonl``'s first line."""
    return {
        "id": "2hop__460946_294723",
        "paragraphs": [
            {
                "idx": 0,
                "title": "Pakistan Super League",
                "paragraph_text": "Pakistan Super League (Urdu: \u067e\u0627\u06a9\u0633\u062a\u0627\u0646 \u0633\u067e\u0631 \u0644\u06cc\u06af) is a professional Twenty20 cricket league. It was founded in 2015.",
                "is_supporting": False,
            },
            {
                "idx": 1,
                "title": "Green (Steve Hillage album)",
                "paragraph_text": "Green is the fourth studio album by British progressive rock musician Steve Hillage. Written in spring 1977, it was produced by Nick Mason.",
                "is_supporting": True,
            },
            {
                "idx": 2,
                "title": "Miquette Giraudy",
                "paragraph_text": "Miquette Giraudy (born 9 February 1953, Nice, France) is a keyboard player and vocalist. She is best known for her work in Gong and with her partner Steve Hillage! She and Hillage formed System 7.",
                "is_supporting": True,
            },
            {
                "idx": 3,
                "title": "Gong (band)",
                "paragraph_text": "Gong are a progressive rock band formed in Paris in 1967.",
                "is_supporting": False,
            },
        ],
        "question": "Who is the spouse of the Green performer?",
        "question_decomposition": [
            {
                "id": 460946,
                "question": "Green >> performer",
                "answer": "Steve Hillage",
                "paragraph_support_idx": 1,
            },
            {
                "id": 294723,
                "question": "#1 >> spouse",
                "answer": "Miquette Giraudy",
                "paragraph_support_idx": 2,
            },
        ],
        "answer": "Miquette Giraudy",
        "answer_aliases": ["Miquette Hillage", "Miquette Giraudy"],
        "answerable": True,
    }


def twowiki_example(**extra: Any) -> dict[str, Any]:
    """A compositional record in the layout of 2Wiki's ``dev.json`` first record."""
    return {
        "_id": "8813f87c0bdd11eba7f7acde48001122",
        "type": "compositional",
        "question": "Who is the mother of the director of film Polish-Russian War (Film)?",
        "context": [
            [
                "Maheen Khan",
                [
                    "Maheen Khan is a Pakistani fashion and costume designer.",
                    "She has done many national and international shows.",
                ],
            ],
            [
                "Polish-Russian War (film)",
                [
                    "Polish-Russian War (Wojna polsko-ruska) is a 2009 Polish film.",
                    "It was directed by Xawery \u017bu\u0142awski based on the novel by Dorota Mas\u0142owska.",
                ],
            ],
            [
                "Xawery \u017bu\u0142awski",
                [
                    "Xawery \u017bu\u0142awski (born 22 December 1971 in Warsaw) is a Polish film director.",
                    "In 1995 he graduated from the National Film School in \u0141\u00f3d\u017a.",
                    "He is the son of actress Ma\u0142gorzata Braunek and director Andrzej \u017bu\u0142awski.",
                ],
            ],
            ["Snow White and the Seven Dwarfs", ["Snow White is a 1937 American animated film."]],
        ],
        "supporting_facts": [["Polish-Russian War (film)", 1], ["Xawery \u017bu\u0142awski", 2]],
        "evidences": [
            ["Polish-Russian War", "director", "Xawery \u017bu\u0142awski"],
            ["Xawery \u017bu\u0142awski", "mother", "Ma\u0142gorzata Braunek"],
        ],
        "answer": "Ma\u0142gorzata Braunek",
        **extra,
    }


# ---------------------------------------------------------------------------------------------
# generated records

_WORDS = (
    "the river valley council records trade harbor early century northern southern museum archive "
    "village market winter summer festival bridge station library school church castle garden "
    "company railway province island forest mountain coast family farmers merchants workers "
    "painting music theatre novel poem journal letters history report survey treaty border "
    "was were became remained opened closed moved built restored described recorded founded "
    "during after before between within across under near along around through among "
    "old new large small famous quiet busy distant local public private royal ancient modern "
    "and with for from into over by of in on at to its their many several most"
).split()
_SYLLABLES = (
    "kal mor ve ran tis dor an el ost bri ga len vo ru sen hal mi ter ka ro lo "
    "ne fa dre sto wyn cor ba li thu gre pas min ol ar us"
).split()
_RELATIONS = (
    ("founder", "{s} was founded by {o}"),
    ("spouse", "{s} was married to {o}"),
    ("mentor", "{s} studied for many years under {o}"),
    ("publisher", "{s} was first published by {o}"),
    ("director", "{s} was directed by {o}"),
    ("architect", "{s} was designed by {o}"),
)


def _name(rng: np.random.Generator, taken: set[str], words: int) -> str:
    while True:
        parts = [
            "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4)))).capitalize() for _ in range(words)
        ]
        name = " ".join(parts)
        if name not in taken:
            taken.add(name)
            return name


def _filler(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(_WORDS, size=n))


def _sentence(rng: np.random.Generator, subject: str, lo: int = 15, hi: int = 26) -> str:
    words = _filler(rng, int(rng.integers(lo, hi)))
    return f"In the {rng.choice(_WORDS)} years {subject} {words}."


def make_qa_records(
    n: int,
    seed: int,
    paragraphs_per_record: int = 10,
    sentences_per_paragraph: int = 4,
    hops: int | tuple[int, int] = (2, 4),
) -> list[QARecord]:
    """``n`` deterministic multi-hop bridge records with plausible paragraphs.

    Record ``i`` has a chain of entities ``E0 -> E1 -> ... -> Ek``; paragraph ``Ej`` (gold, titled by
    the entity) holds the sentence linking ``Ej`` to ``Ej+1``, at a random sentence position; the
    question composes the relations, and the answer is ``Ek``. The other paragraphs are distractors
    about other entities with the same relations. Every title is distinct across all records; each
    paragraph is ``sentences_per_paragraph`` sentences of ~15-26 words (~80-150 tokens) joined by
    ``". "``.

    Args:
        n: how many records.
        seed: the seed of the ``numpy.random.Generator``; the same seed gives the same records, and
            record ``i`` does not depend on ``n``.
        paragraphs_per_record: paragraphs per record, gold included.
        sentences_per_paragraph: sentences per paragraph.
        hops: hops per record, or a ``(low, high)`` inclusive range to draw from.
    """
    rng = np.random.default_rng(seed)
    taken: set[str] = set()
    lo, hi = (hops, hops) if isinstance(hops, int) else hops
    out = []
    for _ in range(n):
        k = int(rng.integers(lo, hi + 1))
        if k > paragraphs_per_record:
            raise ValueError(f"{k} hops need at least {k} paragraphs per record")
        chain = [_name(rng, taken, 1)] + [_name(rng, taken, 2) for _ in range(k)]
        rels = [_RELATIONS[int(j)] for j in rng.choice(len(_RELATIONS), size=k, replace=False)]
        paragraphs: list[tuple[str, list[str]]] = []
        supporting: list[tuple[str, int]] = []
        for j in range(k):
            sents = [_sentence(rng, chain[j]) for _ in range(sentences_per_paragraph)]
            pos = int(rng.integers(0, sentences_per_paragraph))
            link = rels[j][1].format(s=chain[j], o=chain[j + 1])
            sents[pos] = f"{link}, and {_filler(rng, int(rng.integers(10, 18)))}."
            paragraphs.append((chain[j], sents))
            supporting.append((chain[j], pos))
        for _ in range(paragraphs_per_record - k):
            title = _name(rng, taken, int(rng.integers(1, 3)))
            sents = [_sentence(rng, title) for _ in range(sentences_per_paragraph)]
            noun, template = _RELATIONS[int(rng.integers(len(_RELATIONS)))]
            sents[int(rng.integers(0, sentences_per_paragraph))] = (
                f"{template.format(s=title, o=_name(rng, taken, 2))}, and {_filler(rng, int(rng.integers(10, 18)))}."
            )
            paragraphs.append((title, sents))
        order = rng.permutation(len(paragraphs))
        paragraphs = [paragraphs[int(i)] for i in order]
        phrase = chain[0]
        for noun, _ in rels:
            phrase = f"the {noun} of {phrase}"
        answer = chain[-1]
        out.append(
            QARecord(
                id=rng.bytes(12).hex(),
                question=f"Who is {phrase}?",
                answer=answer,
                aliases=[answer.split()[-1]],
                paragraphs=paragraphs,
                supporting=supporting,
                step_answers=chain[1:],
                type="bridge",
                level=str(rng.choice(["easy", "medium", "hard"])),
            )
        )
    return out
