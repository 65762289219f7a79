"""``aggregation``: answers computed from the world, facts spread over many documents, exact lengths,
determinism, and a verify hook that catches tampering."""

from __future__ import annotations

import json
import re
from collections import Counter

import pyarrow.parquet as pq
import pytest

from datagen.corpus import Corpus
from datagen.generators import GENERATORS
from datagen.generators.aggregation import NUMERIC, AggregationConfig, compute_answer
from datagen.runner import RunConfig, run_generator
from datagen.schema import SAMPLE_SCHEMA, to_table
from datagen.sources import get_source
from datagen.sources.synthetic import SyntheticWorld, generate_triplets
from datagen.verify import check_row, verify
from longmill.io import write_table_atomic

LENGTH = 3000


@pytest.fixture(scope="module")
def corpus():
    return Corpus(generate_triplets(120, seed=3), name="synthetic")


@pytest.fixture(scope="module")
def samples(corpus):
    gen = GENERATORS.get("aggregation")(AggregationConfig(length=LENGTH, seed=1), corpus)
    return [gen.sample(i, Counter()) for i in range(40)]


def data(s) -> dict:
    return json.loads(s.extra_info["task_data"])


def test_every_operation_is_drawn_and_questions_name_all_items(samples):
    assert set(Counter(s.question_type for s in samples)) == {"count", "sum", "max", "min", "select"}
    for s in samples:
        d = data(s)
        assert s.task == "aggregation" and s.data_source == "aggregation/synthetic" and s.hops == 8
        assert len(d["items"]) == 8 == len(s.gold_docs) and s.question.startswith("Consider these 8 ")
        assert all(it["name"] in s.question for it in d["items"])
        assert [g.doc_id for g in s.gold_docs] == [it["doc_id"] for it in d["items"]]


def test_answers_are_computed_from_the_world(samples):
    world = SyntheticWorld(0)
    for s in samples:
        d = data(s)
        region = world.region(d["region"])
        members = [region.entity(it["name"]) for it in d["items"]]
        raw = [
            region.rel[d["key"]][m.idx] if d["key"] in region.rel else region.attr[d["key"]][m.idx]
            for m in members
        ]
        values = [region.entities[v].ref if d["key"] in region.rel else v for v in raw]
        answer, winner = compute_answer(
            d["op"], values, [m.name for m in members], d["direction"], d["target"]
        )
        assert answer == s.answers[0] == s.reward_model["ground_truth"][0]
        if d["op"] == "count":
            # skimming fails: some named entities have the property and some do not
            assert 0 < int(answer) < len(members)
        if winner is not None:
            assert s.answers == list(members[winner].aliases)
            if d["op"] in ("max", "min"):
                assert values.count(values[winner]) == 1


def test_the_documents_are_spread_among_distractors(samples):
    for s in samples:
        assert s.num_docs > 2 * len(s.gold_docs)
        depths = sorted(s.gold_doc_depths)
        assert depths[-1] - depths[0] > 0.3, depths  # uniform placement: not one block
        user = s.user_text
        for it in data(s)["items"]:
            i = s.doc_ids.index(it["doc_id"])
            assert it["fact"] in user[s.doc_offsets[i] : s.doc_offsets[i + 1]]


def test_look_alikes_of_the_named_entities_are_in_the_context(samples):
    world = SyntheticWorld(0)
    with_twins = 0
    for s in samples:
        d = data(s)
        region = world.region(d["region"])
        names = {it["name"] for it in d["items"]}
        twins = [region.entities[region.entity(n).twin] for n in names if region.entity(n).twin is not None]
        twins = [t for t in twins if t.name not in names]
        with_twins += bool(twins)
        assert all(region.documents[t.idx].doc_id in s.doc_ids for t in twins)
    assert with_twins > len(samples) // 2


def test_exact_length_and_verify_passes(samples):
    for s in samples:
        assert LENGTH * 0.99 <= s.prompt_tokens <= LENGTH
        assert check_row(s.to_row()) == []


def test_same_seed_same_bytes(tmp_path):
    def run(out, seed=7, workers=1):
        src = get_source("synthetic", None, options={"num_triplets": "60"})
        run_generator(
            "aggregation",
            AggregationConfig(length=2500, seed=seed),
            src,
            RunConfig(out=out, num_samples=6, rows_per_part=3, workers=workers),
        )
        return {p.name: p.read_bytes() for p in sorted(out.glob("part-*.parquet"))}

    a, b = run(tmp_path / "a"), run(tmp_path / "b", workers=2)
    assert a == b and len(a) == 2
    assert run(tmp_path / "c", seed=8) != a
    report = verify(tmp_path / "a")
    assert report.ok, [str(v) for v in report.violations]


def _problems(row) -> list[tuple[str, str]]:
    return [p for p in check_row(row) if p[0] == "aggregation"]


def _first(samples, pred):
    return next(s for s in samples if pred(s)).to_row()


def test_verify_catches_a_wrong_ground_truth(samples):
    row = _first(samples, lambda s: s.question_type == "count")
    wrong = str(int(row["answers"][0]) + 1)
    row["answers"] = [wrong]
    row["reward_model"]["ground_truth"] = [wrong]
    assert any("ground truth" in m for _, m in _problems(row))


def test_verify_catches_an_edited_fact_in_the_prompt(samples):
    row = _first(samples, lambda s: data(s)["numeric"])
    it = data(samples[[s.uid for s in samples].index(row["uid"])])["items"][3]
    num = re.search(r"\d[\d,]*", it["fact"]).group(0)
    edited = it["fact"].replace(num, str(int(num.replace(",", "")) + 1))
    row["prompt"][-1]["content"] = row["prompt"][-1]["content"].replace(it["fact"], edited)
    assert any("does not state" in m for _, m in _problems(row))


def test_verify_catches_a_tampered_carried_value(samples):
    row = _first(samples, lambda s: not data(s)["numeric"])
    d = json.loads(row["extra_info"]["task_data"])
    d["items"][0]["value"] = d["items"][0]["value"] + "x"
    row["extra_info"]["task_data"] = json.dumps(d)
    assert any("does not say" in m for _, m in _problems(row))


def test_verify_catches_a_missing_document(samples):
    row = _first(samples, lambda s: True)
    d = json.loads(row["extra_info"]["task_data"])
    d["items"][2]["doc_id"] = "0000000000000000"
    row["extra_info"]["task_data"] = json.dumps(d)
    assert any("not in the context" in m for _, m in _problems(row))
    row["extra_info"]["task_data"] = None
    assert any("task_data" in m for _, m in _problems(row))


def test_verify_fails_on_a_tampered_shard(tmp_path):
    out = tmp_path / "agg"
    src = get_source("synthetic", None, options={"num_triplets": "60"})
    run_generator(
        "aggregation",
        AggregationConfig(length=2500, seed=2, ops="sum"),
        src,
        RunConfig(out=out, num_samples=3, rows_per_part=3),
    )
    path = out / "part-00000.parquet"
    rows = pq.read_table(path).to_pylist()
    assert all(r["question_type"] == "sum" for r in rows)
    rows[1]["answers"] = rows[1]["reward_model"]["ground_truth"] = rows[1]["extra_info"]["answers"] = [
        "1,000"
    ]
    write_table_atomic(to_table(rows, SAMPLE_SCHEMA), path)
    report = verify(out)
    assert not report.ok and report.checks == {"aggregation": 1} and report.violations[0].row == 1


def test_options_are_checked():
    from longmill.errors import LongmillError

    with pytest.raises(LongmillError, match="ops must be"):
        AggregationConfig(length=3000, ops="count,median")
    with pytest.raises(LongmillError, match="num_items"):
        AggregationConfig(length=3000, num_items=2)
    assert AggregationConfig(length=3000, ops="max, count").ops == "max,count"
    assert all(k in NUMERIC for k in [("person", "birth_year"), ("city", "population")])


def test_cli_lists_the_new_families_and_makes_verified_shards(tmp_path):
    from .test_cli import rows
    from .test_retrieval import datagen

    listed = datagen("list")
    gens = next(line for line in listed.splitlines() if line.startswith("generators:"))
    assert {"aggregation", "needles", "vartrack", "keychain", "longqa"} <= set(
        gens.split(": ")[1].split(", ")
    )
    datagen(
        "aggregation",
        "--length",
        "3k",
        "--num-samples",
        "4",
        "--num-items",
        "6",
        "--ops",
        "count,select",
        "--out",
        str(tmp_path / "a"),
    )
    rs = rows(tmp_path / "a")
    assert len(rs) == 4 and {r["question_type"] for r in rs} <= {"count", "select"}
    assert all(r["task"] == "aggregation" and r["hops"] == 6 for r in rs)
    assert "OK: 4 rows" in datagen("verify", str(tmp_path / "a"))


def test_facts_that_start_with_the_value_still_verify(corpus):
    """'The Ostra River flows through X.': a reference capitalised at the start of its sentence."""
    gen = GENERATORS.get("aggregation")(
        AggregationConfig(length=2000, seed=2, num_items=4, ops="select,count"), corpus
    )
    capitalised = 0
    for i in range(0, 240, 3):
        s = gen.sample(i, Counter())
        assert check_row(s.to_row()) == [], s.question
        d = data(s)
        capitalised += sum(
            isinstance(it["value"], str)
            and it["value"][:1].islower()
            and it["fact"].startswith(it["value"][:1].upper() + it["value"][1:])
            for it in d["items"]
        )
    assert capitalised > 0


def _reworded(row: dict, old: str, new: str, prompt_only: bool = False) -> dict:
    """``row`` with ``old`` replaced by ``new`` in the question where a reader sees it, the answer kept."""
    user = row["prompt"][-1]["content"]
    at = user.rindex("Question: ")  # the question after the text, not the documents
    assert old in user[at:], (old, user[at:])
    row["prompt"][-1]["content"] = user[:at] + user[at:].replace(old, new)
    if not prompt_only:
        row["question"] = row["extra_info"]["question"] = row["question"].replace(old, new)
    return row


def test_verify_catches_a_question_changed_with_its_answer_kept(samples):
    """Issue 19: "released after 1936" -> "after 1996" kept the answer 7 (the true count is 5), and a
    "smallest" flipped to "largest" passed too: the question is rebuilt from task_data and compared."""
    year = _first(samples, lambda s: "were released after 1936?" in s.question)
    smallest = _first(samples, lambda s: "has the smallest population?" in s.question)
    assert check_row(year) == [] and check_row(smallest) == []
    for row, old, new in ((year, "after 1936", "after 1996"), (smallest, "smallest", "largest")):
        for prompt_only in (False, True):
            bad = _reworded(json.loads(json.dumps(row)), old, new, prompt_only)
            assert check_row(bad) != [], (old, prompt_only)
            assert any("question" in m for _, m in _problems(bad)), _problems(bad)
    # the carried threshold changed with the question: the recomputed answer no longer matches
    d = json.loads(year["extra_info"]["task_data"])
    d["target"] = 1996
    bad = _reworded(json.loads(json.dumps(year)), "after 1936", "after 1996")
    bad["extra_info"]["task_data"] = json.dumps(d)
    assert any("ground truth" in m for _, m in _problems(bad)), _problems(bad)
