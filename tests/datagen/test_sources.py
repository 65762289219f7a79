"""The published-format source readers, on real files written in each layout."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from datagen.schema import SupportingFact, Triplet
from datagen.sources import get_source
from longmill.errors import LongmillError, RecordError
from tests.datagen.formats import (
    QARecord,
    hotpotqa_example,
    hub_hotpotqa_layout,
    make_qa_records,
    musique_example,
    musique_id,
    musique_layout,
    twowiki_example,
    write_2wiki_aliases,
    write_2wikimqa,
    write_hotpotqa,
    write_json_lines,
    write_jsonl,
    write_musique,
    write_parquet,
)


def read(name: str, input, strict: bool = False, **options) -> tuple[list[Triplet], object]:
    src = get_source(name, input, strict=strict, options=options)
    return list(src.iter_triplets()), src


def titles(docs) -> list[str]:
    return [d.title for d in docs]


def check_skip(name, path, bad_record, field, kind, caplog, **options):
    """One bad record among good ones: skipped and counted (file/record/field logged), or raised under strict."""
    with caplog.at_level(logging.WARNING, logger="datagen.sources.base"):
        triplets, src = read(name, path, **options)
    assert src.skips.as_dict() == {kind: 1}
    example = src.skips.examples[0]
    assert str(path) in example and f"record {bad_record}:" in example and f"field '{field}'" in example
    assert any(example in r.getMessage() for r in caplog.records)
    with pytest.raises(RecordError) as info:
        read(name, path, strict=True, **options)
    e = info.value
    assert (e.path, e.record, e.field) == (str(path), bad_record, field)
    assert str(path) in str(e) and f"record {bad_record}" in str(e) and field in str(e)
    return triplets


def assert_matches(t: Triplet, rec: QARecord, answers: list[str]) -> None:
    """A triplet read from a generated record carries exactly that record's content."""
    gold = rec.gold_titles
    assert t.question == rec.question
    assert t.answers == answers
    assert t.hops == len(rec.supporting)
    assert titles(t.gold_docs) == gold
    assert titles(t.distractor_docs) == [p for p, _ in rec.paragraphs if p not in gold]
    assert [d.text for d in t.gold_docs] == [rec.text_of(p) for p in gold]
    paras = dict(rec.paragraphs)
    assert t.supporting_facts == [SupportingFact(p, i, paras[p][i]) for p, i in rec.supporting]
    for d in t.gold_docs + t.distractor_docs:
        assert "\n" not in d.text and not re.search(r"\.[A-Za-z]", d.text)


@pytest.fixture(scope="module")
def records() -> list[QARecord]:
    return make_qa_records(6, seed=7)


# ------------------------------------------------------------------------------------- formats


def test_make_qa_records_is_deterministic_with_distinct_titles(records):
    again = make_qa_records(8, seed=7)
    assert again[:6] == records
    assert make_qa_records(6, seed=8) != records
    all_titles = [t for r in again for t, _ in r.paragraphs]
    assert len(all_titles) == len(set(all_titles)) == 80
    for r in again:
        for _, sents in r.paragraphs:
            assert len(sents) == 4 and all(s.endswith(".") and not s[0].isspace() for s in sents)
            assert ". " in " ".join(sents)
        for (title, i), step in zip(r.supporting, r.step_answers, strict=True):
            assert step in dict(r.paragraphs)[title][i]


def test_writers_use_the_published_bytes(tmp_path, records):
    path = write_hotpotqa(tmp_path / "hotpot_dev_distractor_v1.json", [hotpotqa_example()])
    raw = path.read_text()
    assert raw.startswith('[{"_id": "5a8b57f25542995d1e6f1371", "answer": "yes", "question": ')
    assert "\\u2013" in raw and "\n" not in raw
    assert json.loads(raw)[0]["context"][1][1][1] == " He lives in Los Angeles, California."
    lines = write_musique(tmp_path / "musique_ans_v1.0_dev.jsonl", records[:2]).read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == [musique_id(r) for r in records[:2]]
    assert list(json.loads(lines[0])) == [
        "id",
        "paragraphs",
        "question",
        "question_decomposition",
        "answer",
        "answer_aliases",
        "answerable",
    ]


# ------------------------------------------------------------------------------------- hotpotqa


def test_hotpotqa_hand_written_record(tmp_path):
    path = write_hotpotqa(tmp_path / "hotpot_dev_distractor_v1.json", [hotpotqa_example()])
    (t,), src = read("hotpotqa", path)
    assert t.id == "hotpotqa:5a8b57f25542995d1e6f1371" and t.source == "hotpotqa" and t.split == "dev"
    assert t.question == "Were Scott Derrickson and Ed Wood of the same nationality?"
    assert t.answers == ["yes"] and t.hops == 2 and t.question_type == "comparison"
    assert titles(t.gold_docs) == ["Scott Derrickson", "Ed Wood"]
    assert titles(t.distractor_docs) == ["Ed Wood (film)", "Woodson, Arkansas", "Conrad Brooks"]
    assert t.gold_docs[0].text == (
        "Scott Derrickson (born July 16, 1966) is an American director, screenwriter and "
        "producer. He lives in Los Angeles, California. He is best known for directing "
        'horror films such as "Sinister".'
    )
    # The second sentence has no leading space in the file: a space is inserted, never "actor.He".
    assert t.distractor_docs[2].text.endswith(
        "is an American actor. He moved to Hollywood, California in 1948."
    )
    assert t.supporting_facts == [
        SupportingFact(
            "Scott Derrickson",
            0,
            "Scott Derrickson (born July 16, 1966) is an American director, screenwriter and producer.",
        ),
        SupportingFact(
            "Ed Wood",
            0,
            "Edward Davis Wood Jr. (October 10, 1924 \u2013 December 10, 1978) was an "
            "American filmmaker, actor, writer, producer, and director.",
        ),
    ]
    assert src.skips.as_dict() == {}


def test_hotpotqa_generated_records_split_and_order(tmp_path, records):
    write_hotpotqa(tmp_path / "d" / "hotpot_train_v1.1.json", records[:3])
    write_hotpotqa(tmp_path / "d" / "hotpot_dev_distractor_v1.json", records[3:])
    triplets, _ = read("hotpotqa", tmp_path / "d")
    # Files in sorted order (dev before train), records in file order.
    order = records[3:] + records[:3]
    assert [t.id for t in triplets] == [f"hotpotqa:{r.id}" for r in order]
    assert [t.split for t in triplets] == ["dev"] * 3 + ["train"] * 3
    for t, r in zip(triplets, order, strict=True):
        assert_matches(t, r, [r.answer])
        assert t.question_type == "bridge"
    again, _ = read("hotpotqa", tmp_path / "d")
    assert [t.to_row() for t in again] == [t.to_row() for t in triplets]
    forced, _ = read("hotpotqa", tmp_path / "d", split="validation")
    assert {t.split for t in forced} == {"validation"}
    src = get_source("hotpotqa", tmp_path / "d", limit=2)
    assert [t.id for t in src.iter_triplets()] == [t.id for t in triplets[:2]]


def test_hotpotqa_test_file_records_without_answer_are_counted(tmp_path):
    rec = hotpotqa_example()
    unlabelled = {k: rec[k] for k in ("_id", "question", "context")}
    path = write_hotpotqa(tmp_path / "hotpot_test_fullwiki_v1.json", [unlabelled, hotpotqa_example()])
    triplets, src = read("hotpotqa", path, strict=True)
    assert len(triplets) == 1 and triplets[0].split == "test"
    assert src.skips.as_dict() == {"hotpotqa:no_answer": 1}


def test_hotpotqa_fullwiki_gold_missing_is_counted_not_an_error(tmp_path, caplog):
    missing = hotpotqa_example()
    missing["_id"] = "fullwiki-miss"
    missing["context"] = [p for p in missing["context"] if p[0] != "Ed Wood"]
    path = write_hotpotqa(tmp_path / "hotpot_dev_fullwiki_v1.json", [missing, hotpotqa_example()])
    triplets, src = read("hotpotqa", path, strict=True)
    assert [t.id for t in triplets] == ["hotpotqa:5a8b57f25542995d1e6f1371"]
    assert src.skips.as_dict() == {"hotpotqa:gold_missing": 1}
    # In the distractor setting the gold paragraphs are always given: the same record is malformed.
    distractor = write_hotpotqa(tmp_path / "hotpot_dev_distractor_v1.json", [hotpotqa_example(), missing])
    check_skip("hotpotqa", distractor, 1, "supporting_facts[1]", "hotpotqa:gold_missing", caplog)
    triplets, src = read("hotpotqa", path, setting="distractor")
    assert src.skips.as_dict() == {"hotpotqa:gold_missing": 1}


def _drop(key):
    def edit(r):
        del r[key]

    return edit


def _set(key, value):
    def edit(r):
        r[key] = value

    return edit


@pytest.mark.parametrize(
    "edit, field, kind",
    [
        (_drop("question"), "question", "malformed:question"),
        (_set("answer", 42), "answer", "malformed:answer"),
        (_set("answer", "  "), "answer", "malformed:answer"),
        (_set("context", {"Ed Wood": []}), "context", "malformed:context"),
        (lambda r: r["context"][1][1].__setitem__(0, None), "context[1][1][0]", "malformed:context"),
        (
            _set("supporting_facts", [["Scott Derrickson", 3]]),
            "supporting_facts[0][1]",
            "malformed:supporting_facts",
        ),
        (
            _set("supporting_facts", [["Scott Derrickson", "0"]]),
            "supporting_facts[0][1]",
            "malformed:supporting_facts",
        ),
        (_set("supporting_facts", []), "supporting_facts", "malformed:supporting_facts"),
        (_set("supporting_facts", [["Nobody", 0]]), "supporting_facts[0]", "hotpotqa:gold_missing"),
    ],
)
def test_hotpotqa_malformed_records(tmp_path, caplog, edit, field, kind):
    bad = hotpotqa_example()
    edit(bad)
    path = write_hotpotqa(
        tmp_path / "hotpot_dev_distractor_v1.json", [hotpotqa_example(), bad, hotpotqa_example()]
    )
    triplets = check_skip("hotpotqa", path, 1, field, kind, caplog)
    assert len(triplets) == 2


def test_hotpotqa_not_json_and_bad_option(tmp_path):
    path = tmp_path / "hotpot_dev_distractor_v1.json"
    path.write_text('[{"_id": "x",')
    with pytest.raises(LongmillError, match="not valid JSON"):
        read("hotpotqa", path)
    with pytest.raises(LongmillError, match="setting"):
        get_source("hotpotqa", path, options={"setting": "open"})
    with pytest.raises(LongmillError, match="unknown option"):
        get_source("hotpotqa", path, options={"aliases": "x"})


# ------------------------------------------------------------------------------------- musique


def test_musique_hand_written_record(tmp_path):
    path = write_musique(tmp_path / "musique_ans_v1.0_dev.jsonl", [musique_example()])
    (t,), src = read("musique", path)
    assert t.id == "musique:2hop__460946_294723" and t.split == "dev" and t.question_type == "2hop"
    assert t.question == "Who is the spouse of the Green performer?"
    assert t.answers == ["Miquette Giraudy", "Miquette Hillage"]
    assert t.hops == 2
    assert titles(t.gold_docs) == ["Green (Steve Hillage album)", "Miquette Giraudy"]
    assert titles(t.distractor_docs) == ["Pakistan Super League", "Gong (band)"]
    assert "\u067e\u0627\u06a9" in t.distractor_docs[0].text
    assert t.supporting_facts == [
        SupportingFact(
            "Green (Steve Hillage album)",
            0,
            "Green is the fourth studio album by British progressive rock musician Steve Hillage.",
        ),
        SupportingFact(
            "Miquette Giraudy",
            0,
            "Miquette Giraudy (born 9 February 1953, Nice, France) is a keyboard player and vocalist.",
        ),
    ]
    assert src.skips.as_dict() == {}


def test_musique_fact_is_the_sentence_with_the_step_answer(tmp_path):
    rec = musique_example()
    steps = rec["question_decomposition"]
    steps[0]["answer"] = "NICK mason"  # case-insensitive, second sentence
    steps[1]["answer"] = "system 7"  # third sentence, after a "!" sentence end
    rec["question_decomposition"].append(
        {"id": 1, "question": "x", "answer": "not in the text", "paragraph_support_idx": 3}
    )
    path = write_musique(tmp_path / "musique_full_v1.0_train.jsonl", [rec])
    (t,), _ = read("musique", path)
    assert t.split == "train" and t.hops == 3
    assert [(f.title, f.sent_idx, f.text) for f in t.supporting_facts] == [
        ("Green (Steve Hillage album)", 1, "Written in spring 1977, it was produced by Nick Mason."),
        ("Miquette Giraudy", 2, "She and Hillage formed System 7."),
        ("Gong (band)", 0, "Gong are a progressive rock band formed in Paris in 1967."),
    ]


def test_musique_generated_records_and_unanswerable(tmp_path, records):
    lines = [musique_layout(r) for r in records[:3]]
    lines.insert(1, musique_layout(records[3], answerable=False))
    path = write_musique(tmp_path / "musique_full_v1.0_dev.jsonl", lines)
    triplets, src = read("musique", path, strict=True)
    assert src.skips.as_dict() == {"musique:unanswerable": 1}
    assert [t.id for t in triplets] == [f"musique:{musique_id(r)}" for r in records[:3]]
    for t, r in zip(triplets, records[:3], strict=True):
        assert_matches(t, r, [r.answer, *r.aliases])
        assert t.question_type == f"{len(r.supporting)}hop"


@pytest.mark.parametrize(
    "edit, field",
    [
        (_drop("paragraphs"), "paragraphs"),
        (_set("question", ["who?"]), "question"),
        (lambda r: r["paragraphs"][1].__setitem__("is_supporting", "yes"), "paragraphs[1].is_supporting"),
        (lambda r: r["paragraphs"][2].pop("title"), "paragraphs[2].title"),
        (
            lambda r: r["question_decomposition"][0].__setitem__("paragraph_support_idx", 9),
            "question_decomposition[0].paragraph_support_idx",
        ),
        (_set("answer_aliases", "Miquette"), "answer_aliases"),
        (_set("answer", ""), "answer"),
        (_set("answerable", "true"), "answerable"),
    ],
)
def test_musique_malformed_records(tmp_path, caplog, edit, field):
    bad = musique_example()
    edit(bad)
    path = write_musique(tmp_path / "musique_ans_v1.0_dev.jsonl", [musique_example(), bad])
    root = re.split(r"[\[.]", field)[0]
    assert len(check_skip("musique", path, 1, field, f"malformed:{root}", caplog)) == 1


def test_musique_bad_json_line(tmp_path, caplog):
    path = tmp_path / "musique_ans_v1.0_dev.jsonl"
    good = json.dumps(musique_example())
    path.write_text(f"{good}\n{good[:40]}\n\n{good}\n")
    triplets = check_skip("musique", path, 1, "<line>", "malformed:<line>", caplog)
    assert len(triplets) == 2


# ------------------------------------------------------------------------------------- 2wikimqa


def test_2wikimqa_hand_written_record(tmp_path, records):
    path = write_2wikimqa(tmp_path / "dev.json", [twowiki_example(), records[0]])
    (t, g), src = read("2wikimqa", path)
    assert t.id == "2wikimqa:8813f87c0bdd11eba7f7acde48001122" and t.source == "2wikimqa" and t.split == "dev"
    assert t.question_type == "compositional" and t.hops == 2
    assert t.answers == ["Ma\u0142gorzata Braunek"]
    assert titles(t.gold_docs) == ["Polish-Russian War (film)", "Xawery \u017bu\u0142awski"]
    assert titles(t.distractor_docs) == ["Maheen Khan", "Snow White and the Seven Dwarfs"]
    assert t.gold_docs[0].text == (
        "Polish-Russian War (Wojna polsko-ruska) is a 2009 Polish film. It was directed by "
        "Xawery \u017bu\u0142awski based on the novel by Dorota Mas\u0142owska."
    )
    assert [(f.title, f.sent_idx) for f in t.supporting_facts] == [
        ("Polish-Russian War (film)", 1),
        ("Xawery \u017bu\u0142awski", 2),
    ]
    assert t.supporting_facts[1].text == (
        "He is the son of actress Ma\u0142gorzata Braunek and director Andrzej \u017bu\u0142awski."
    )
    assert_matches(g, records[0], [records[0].answer])
    assert g.question_type == "compositional"
    assert src.skips.as_dict() == {}


def test_2wikimqa_aliases_of_the_answer_entity(tmp_path):
    aliases = write_2wiki_aliases(
        tmp_path / "id_aliases.json",
        {
            "Q274378": (["Malgorzata Braunek", "Ma\u0142gorzata Braunek"], ["Polish"]),
            "Q51759": (["Xawery Zulawski"], []),
            "Q7320430": (["Ma\u0142gorzata Braunek", "M. Braunek"], []),
        },
    )
    recs = [
        twowiki_example(_id="a", answer_id="Q274378", entity_ids="Q1_Q51759"),
        twowiki_example(_id="b", entity_ids="Q7320430_Q51759"),  # fallback: only Q7320430 names the answer
        twowiki_example(_id="c", entity_ids=["Q51759"]),  # the answer is no name of Q51759: no aliases
        twowiki_example(_id="d", answer_id="Q404"),  # not in the file
    ]
    path = write_2wikimqa(tmp_path / "dev.json", recs)
    triplets, src = read("2wikimqa", path, aliases=str(aliases))
    assert [t.answers for t in triplets] == [
        ["Ma\u0142gorzata Braunek", "Malgorzata Braunek", "Polish"],
        ["Ma\u0142gorzata Braunek", "M. Braunek"],
        ["Ma\u0142gorzata Braunek"],
        ["Ma\u0142gorzata Braunek"],
    ]
    plain, _ = read("2wikimqa", path)
    assert all(t.answers == ["Ma\u0142gorzata Braunek"] for t in plain)
    with pytest.raises(LongmillError, match="id_aliases.json"):
        read("2wikimqa", path, aliases=str(tmp_path / "nope.json"))
    bad_aliases = tmp_path / "bad_aliases.json"
    bad_aliases.write_text('{"Q_id": "Q274378", "aliases": "Malgorzata", "demonyms": []}\n')
    _, src = read("2wikimqa", path, aliases=str(bad_aliases))
    assert src.skips.as_dict() == {"malformed:aliases": 1}


@pytest.mark.parametrize(
    "edit, field, kind",
    [
        (
            _set("supporting_facts", [["Polish-Russian War (film)", 1], ["Andrzej \u017bu\u0142awski", 0]]),
            "supporting_facts[1]",
            "2wikimqa:gold_missing",
        ),
        (
            _set("supporting_facts", [["Polish-Russian War (film)", 2]]),
            "supporting_facts[0][1]",
            "malformed:supporting_facts",
        ),
        (_drop("_id"), "_id", "malformed:_id"),
        (_set("type", 3), "type", "malformed:type"),
        (_set("context", [["Maheen Khan"]]), "context[0]", "malformed:context"),
    ],
)
def test_2wikimqa_malformed_records(tmp_path, caplog, edit, field, kind):
    bad = twowiki_example()
    edit(bad)
    path = write_2wikimqa(tmp_path / "train.json", [bad, twowiki_example()])
    (t,) = check_skip("2wikimqa", path, 0, field, kind, caplog)
    assert t.split == "train"


# ------------------------------------------------------------------------------------- jsonl / parquet


RENAMED = {
    "id": "qid",
    "question": "q",
    "answers": "gold",
    "gold_docs": "evidence",
    "distractor_docs": "negatives",
    "split": "part",
    "question_type": "kind",
}


def renamed_rows() -> list[dict]:
    return [
        {
            "qid": "a1",
            "q": "What is the capital of France?",
            "gold": "Paris",
            "evidence": ["Paris is the capital of France.  It is on the Seine."],
            "negatives": [
                {"title": "Rome", "text": "Rome is the capital of Italy."},
                "Berlin is in Germany.",
            ],
            "part": "validation",
            "kind": "lookup",
        },
        {
            "qid": "a2",
            "q": "Who wrote Hamlet?",
            "gold": ["William Shakespeare", "Shakespeare", "William Shakespeare"],
            "evidence": [
                {"title": "Hamlet", "text": "Hamlet is a tragedy by William Shakespeare."},
                {"title": "Shakespeare", "text": "Shakespeare was an English playwright."},
            ],
            "negatives": None,
            "part": None,
            "kind": None,
        },
    ]


def write_renamed_parquet(folder: Path) -> Path:
    """``renamed_rows`` as Parquet: a column has one type per file, so the string-answer row and the
    list-answer row go to two files, and the plain-string distractor becomes a title-less object."""
    a, b = renamed_rows()
    a["negatives"][1] = {"title": None, "text": a["negatives"][1]}
    write_parquet(folder / "qa-0.parquet", [a])
    write_parquet(folder / "qa-1.parquet", [b])
    return folder


def check_renamed(triplets: list[Triplet], source: str) -> None:
    a, b = triplets
    assert (a.id, b.id) == (f"{source}:a1", f"{source}:a2")
    assert a.answers == ["Paris"] and b.answers == ["William Shakespeare", "Shakespeare"]
    assert [(d.title, d.text) for d in a.gold_docs] == [
        ("", "Paris is the capital of France. It is on the Seine.")
    ]
    assert [(d.title, d.text) for d in a.distractor_docs] == [
        ("Rome", "Rome is the capital of Italy."),
        ("", "Berlin is in Germany."),
    ]
    assert titles(b.gold_docs) == ["Hamlet", "Shakespeare"] and b.distractor_docs == []
    assert (a.split, b.split) == ("validation", "train")
    assert (a.hops, b.hops) == (1, 2) and (a.question_type, b.question_type) == ("lookup", None)
    assert a.supporting_facts == []


def test_jsonl_default_columns_match_the_records(tmp_path, records):
    path = write_jsonl(tmp_path / "mine.jsonl", records)
    triplets, src = read("jsonl", path, strict=True)
    assert [t.id for t in triplets] == [f"jsonl:{r.id}" for r in records]
    for t, r in zip(triplets, records, strict=True):
        assert_matches(t, r, [r.answer, *r.aliases])
        assert t.split == "train" and t.question_type == "bridge"


def test_jsonl_renamed_columns(tmp_path):
    path = write_json_lines(tmp_path / "qa.jsonl", renamed_rows())
    triplets, src = read("jsonl", path, strict=True, map=RENAMED)
    check_renamed(triplets, "jsonl")
    as_text, _ = read("jsonl", path, strict=True, map=json.dumps(RENAMED))  # as given on a command line
    assert [t.to_row() for t in as_text] == [t.to_row() for t in triplets]


def test_jsonl_answer_column_context_and_index_ids(tmp_path):
    rows = [
        {"question": "Q one?", "answer": "one", "context": "The answer is one."},
        {"question": "Q two?", "answer": ["two", "2"], "context": "The answer is two.", "hops": 2},
    ]
    path = write_json_lines(tmp_path / "plain.jsonl", rows)
    triplets, _ = read("jsonl", path, strict=True, split="eval")
    assert [(t.id, t.answers, t.hops, t.split) for t in triplets] == [
        ("jsonl:0", ["one"], 1, "eval"),
        ("jsonl:1", ["two", "2"], 2, "eval"),
    ]
    assert [d.text for d in triplets[0].gold_docs] == ["The answer is one."]
    # A JSON list works too, and ids stay unique across several files.
    (tmp_path / "more.json").write_text(json.dumps(rows[:1]))
    triplets, _ = read("jsonl", tmp_path)
    assert [t.id for t in triplets] == ["jsonl:more-0", "jsonl:plain-0", "jsonl:plain-1"]


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda r: r.pop("q"), "q"),
        (lambda r: r.__setitem__("gold", 7), "gold"),
        (lambda r: r.__setitem__("gold", []), "gold"),
        (lambda r: r.__setitem__("evidence", [3]), "evidence[0]"),
        (lambda r: r.__setitem__("evidence", [{"title": "x"}]), "evidence[0].text"),
        (lambda r: r.__setitem__("evidence", None), "evidence"),
        (lambda r: r.__setitem__("negatives", "Rome"), "negatives"),
    ],
)
def test_jsonl_malformed_rows(tmp_path, caplog, edit, field):
    rows = renamed_rows()
    edit(rows[1])
    path = write_json_lines(tmp_path / "qa.jsonl", rows)
    root = re.split(r"[\[.]", field)[0]
    (t,) = check_skip("jsonl", path, 1, field, f"malformed:{root}", caplog, map=RENAMED)
    assert t.id == "jsonl:a1"


def test_jsonl_bad_line_and_bad_map(tmp_path, caplog):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"question": "Q?", "answers": "A", "context": "A."}\n{not json}\n')
    (t,) = check_skip("jsonl", path, 1, "<line>", "malformed:<line>", caplog)
    with pytest.raises(LongmillError, match="did you mean 'answers'"):
        get_source("jsonl", path, options={"map": {"answerz": "a"}})
    with pytest.raises(LongmillError, match="must be a column name"):
        get_source("jsonl", path, options={"map": {"answers": 3}})


def test_parquet_renamed_columns_read_in_batches(tmp_path, records):
    triplets, _ = read("parquet", write_renamed_parquet(tmp_path / "renamed"), strict=True, map=RENAMED)
    check_renamed(triplets, "parquet")
    many = write_parquet(tmp_path / "many" / "part-0.parquet", records, row_group_size=2)
    triplets, _ = read("parquet", many.parent, strict=True)
    for t, r in zip(triplets, records, strict=True):
        assert_matches(t, r, [r.answer, *r.aliases])


def test_parquet_malformed_rows_and_missing_column(tmp_path, caplog):
    rows = [renamed_rows()[1], renamed_rows()[1]]
    rows[0]["gold"] = None
    rows[1]["qid"] = "a3"
    path = write_parquet(tmp_path / "qa.parquet", rows)
    (t,) = check_skip("parquet", path, 0, "gold", "malformed:gold", caplog, map=RENAMED)
    assert t.id == "parquet:a3"
    with pytest.raises(LongmillError, match="no column 'question'"):
        read("parquet", path)


# ------------------------------------------------------------------------------------- hf


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No hub access: the offline variables, also patched where ``datasets`` already read them."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)
    return str(tmp_path / "hf-cache")


def test_hf_local_folder_mapped(tmp_path, offline, records):
    folder = tmp_path / "my_qa"
    write_jsonl(folder / "train.jsonl", records[:4])
    triplets, src = read("hf", None, path=str(folder), cache_dir=offline)
    assert [t.id for t in triplets] == [f"hf:{r.id}" for r in records[:4]]
    for t, r in zip(triplets, records, strict=False):
        assert_matches(t, r, [r.answer, *r.aliases])
        assert t.split == "train"
    streamed, _ = read("hf", None, path=str(folder), cache_dir=offline, streaming="true")
    assert [t.to_row() for t in streamed] == [t.to_row() for t in triplets]
    # Falls back to the input argument; Parquet files; renamed columns through map.
    renamed = tmp_path / "renamed"
    write_parquet(
        renamed / "train.parquet", [renamed_rows()[1], renamed_rows()[1] | {"qid": "a3", "part": "x"}]
    )
    triplets, _ = read("hf", str(renamed), cache_dir=offline, map=RENAMED)
    assert [(t.id, t.split, t.answers, t.hops) for t in triplets] == [
        ("hf:a2", "train", ["William Shakespeare", "Shakespeare"], 2),
        ("hf:a3", "x", ["William Shakespeare", "Shakespeare"], 2),
    ]


def test_hf_hotpotqa_hub_layout(tmp_path, offline, records):
    folder = tmp_path / "hotpot_hub"
    unlabelled = hub_hotpotqa_layout(records[2]) | {
        "answer": "",
        "supporting_facts": {"title": [], "sent_id": []},
    }
    bad = hub_hotpotqa_layout(records[3])
    bad["supporting_facts"]["sent_id"] = bad["supporting_facts"]["sent_id"][:1]
    rows = [hub_hotpotqa_layout(records[0]), unlabelled, bad, hub_hotpotqa_layout(records[1])]
    write_json_lines(folder / "validation.jsonl", rows)
    triplets, src = read(
        "hf", None, path=str(folder), split="validation", format="hotpotqa", cache_dir=offline
    )
    from_file, _ = read(
        "hotpotqa",
        write_hotpotqa(tmp_path / "hotpot_dev_distractor_v1.json", records[:2]),
        split="validation",
    )
    assert [t.to_row() for t in triplets] == [t.to_row() for t in from_file]
    assert src.skips.as_dict() == {"hotpotqa:no_answer": 1, "malformed:supporting_facts": 1}
    assert "supporting_facts" in src.skips.examples[0] and "record 2" in src.skips.examples[0]


def test_hf_errors_say_what_to_do(tmp_path, offline):
    with pytest.raises(LongmillError, match="check the dataset id.*local folder"):
        read("hf", None, path="longmill-tests/no-such-dataset", cache_dir=offline)
    with pytest.raises(LongmillError, match="check the dataset id.*local folder"):
        read("hf", None, path=str(tmp_path / "missing_folder"), cache_dir=offline)
    folder = tmp_path / "qa"
    write_json_lines(folder / "train.jsonl", [{"question": "Q?", "answers": "A", "context": "A."}])
    with pytest.raises(LongmillError, match="split"):
        read("hf", None, path=str(folder), split="test", cache_dir=offline)
    with pytest.raises(LongmillError, match="needs a dataset"):
        get_source("hf", None)
    with pytest.raises(LongmillError, match="use true or false"):
        read("hf", None, path=str(folder), streaming="maybe")
    with pytest.raises(LongmillError, match="valid formats"):
        get_source("hf", None, options={"path": str(folder), "format": "musique"})


def test_all_published_readers_are_registered():
    from datagen.sources import SOURCES

    assert {"hotpotqa", "musique", "2wikimqa", "jsonl", "parquet", "hf"} <= set(SOURCES.names())


def test_pair_shaped_text_is_neutralised():
    from datagen.generators.keychain import parse_pairs
    from datagen.sources.base import neutralise_pairs

    text = (
        'a {"0123456789abcdef": "Who?"} b {"01234567-89ab-4cde-8f01-23456789abcd": "0123456789abcdef"} '
        'c {"DEADBEEF":"x"} d { "cafebabe" : 1} e {"name": "not a key"} f {"12ab": "too short"}'
    )
    out, n = neutralise_pairs(text)
    assert n == 4 and parse_pairs(out) == []
    assert (
        '{"name": "not a key"}' in out
        and '{"12ab": "too short"}' in out
        and '{0123456789abcdef: "Who?"}' in out
    )
    assert neutralise_pairs(out) == (out, 0)  # idempotent
    assert neutralise_pairs("no braces at all") == ("no braces at all", 0)


# -- input encoding and layout (issue #9, point 10) -------------------------------------------------


def test_jsonl_line_that_is_not_utf8_is_a_skipped_record(tmp_path):
    path = write_musique(tmp_path / "musique_ans_v1.0_dev.jsonl", make_qa_records(3, seed=1))
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"question": "', b'"question": "caf\xe9 ', 1)  # Latin-1, not UTF-8
    path.write_bytes(b"".join(lines))
    triplets, src = read("musique", path)
    assert len(triplets) == 2 and src.skips.as_dict() == {"malformed:<line>": 1}
    assert "line" in src.skips.examples[0] and "not valid UTF-8" in src.skips.examples[0]
    assert str(path) in src.skips.examples[0]
    with pytest.raises(RecordError, match="not valid UTF-8"):
        read("musique", path, strict=True)


def test_utf8_bom_is_accepted(tmp_path):
    recs = make_qa_records(3, seed=2)
    hp = write_hotpotqa(tmp_path / "hotpot_dev_distractor_v1.json", recs)
    hp.write_bytes(b"\xef\xbb\xbf" + hp.read_bytes())
    ms = write_musique(tmp_path / "musique_ans_v1.0_dev.jsonl", recs)
    ms.write_bytes(b"\xef\xbb\xbf" + ms.read_bytes())
    for name, path in (("hotpotqa", hp), ("musique", ms)):
        triplets, src = read(name, path)
        assert len(triplets) == 3 and src.skips.total == 0, name


def test_utf16_file_says_so(tmp_path):
    path = tmp_path / "musique_ans_v1.0_dev.jsonl"
    path.write_bytes(
        write_musique(tmp_path / "m.jsonl", make_qa_records(2, seed=1)).read_text().encode("utf-16")
    )
    with pytest.raises(LongmillError, match="UTF-16; re-encode it as UTF-8"):
        read("musique", path)


def test_json_list_that_is_not_utf8_names_the_byte(tmp_path):
    hp = write_hotpotqa(tmp_path / "hotpot_dev_distractor_v1.json", make_qa_records(2, seed=2))
    data = hp.read_bytes()
    hp.write_bytes(data[:50] + b"\xff" + data[50:])
    with pytest.raises(LongmillError, match=r"not valid UTF-8 at byte 50 \(line 1"):
        read("hotpotqa", hp)


def test_top_level_object_says_expected_a_list(tmp_path):
    recs = [
        r for r in json.loads(write_hotpotqa(tmp_path / "h.json", make_qa_records(2, seed=3)).read_text())
    ]
    pretty = tmp_path / "hotpot_pretty.json"
    pretty.write_text(json.dumps({"version": "1", "data": recs}, indent=2))
    with pytest.raises(LongmillError, match=r"expected a JSON list.*'data' list"):
        read("hotpotqa", pretty)
    one_line = tmp_path / "hotpot_one_line.json"
    one_line.write_text(json.dumps({"data": recs}))
    with pytest.raises(LongmillError, match="expected a JSON list"):
        read("hotpotqa", one_line)
    with pytest.raises(LongmillError, match="expected a JSON list"):
        read("jsonl", one_line)


def test_file_in_another_supported_format_gets_a_hint(tmp_path):
    recs = make_qa_records(3, seed=4)
    ms = write_musique(tmp_path / "musique_ans_v1.0_dev.jsonl", recs)
    hp = write_hotpotqa(tmp_path / "hotpot_dev_distractor_v1.json", recs)
    with pytest.raises(LongmillError, match="this looks like MuSiQue, not HotpotQA; use --source musique"):
        read("hotpotqa", ms)
    with pytest.raises(LongmillError, match="this looks like HotpotQA, not MuSiQue; use --source hotpotqa"):
        read("musique", hp)
    with pytest.raises(LongmillError, match="this looks like MuSiQue; use --source musique"):
        read("jsonl", ms)
    # 2Wiki and HotpotQA share one layout: each reader reads the other's files without a complaint.
    assert len(read("2wikimqa", hp)[0]) == 3


def test_task_shaped_text_is_neutralised():
    """Issue 19: needles and variable assignments, as the generators write them and in looser forms, are
    defused like KeyChain pairs; look-alikes that are not task text (football's VAR) are left alone."""
    from datagen.generators.retrieval import _ASSIGN, _NEEDLE, NEEDLE_TEXT, VAR_COPY, VAR_VALUE
    from datagen.sources.base import neutralise_task_text

    written = " ".join(
        [
            NEEDLE_TEXT.format(key="0123456789abcdef", value="1234567"),
            VAR_VALUE.format(name="ABCDE", value="12345"),
            VAR_COPY.format(name="FGHIJ", source="ABCDE"),
            "One of the SPECIAL magic  numbers for some key is :  8.",
            'And {"0123456789abcdef": "Who?"}.',
        ]
    )
    out, counts = neutralise_task_text(written)
    assert _NEEDLE.findall(out) == [] and _ASSIGN.findall(out) == []
    assert counts == {
        "pair_text_neutralised": 1,
        "needle_text_neutralised": 2,
        "assignment_text_neutralised": 2,
    }
    assert "var FGHIJ = var ABCDE." in out and "for 0123456789abcdef is 1234567." in out
    assert neutralise_task_text(out) == (out, {})  # idempotent
    plain = "The VAR review took four minutes. A magic number: 7. Its value is: 3."
    assert neutralise_task_text(plain) == (plain, {})
