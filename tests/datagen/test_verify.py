"""``datagen verify`` passes good shards and catches every kind of broken row."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datagen.generators.keychain import KeyChainConfig
from datagen.runner import RunConfig, run_generator
from datagen.schema import SAMPLE_SCHEMA, to_table
from datagen.verify import verify
from longmill.io import write_table_atomic


@pytest.fixture()
def good(tmp_path, toy_source):
    out = tmp_path / "kc"
    run_generator(
        "keychain",
        KeyChainConfig(length=6000, num_chains=3, seed=5),
        toy_source,
        RunConfig(out=out, num_samples=6, rows_per_part=3),
    )
    return out


def rewrite(folder, fn):
    """Apply ``fn`` to the rows of part 0 and write them back."""
    path = folder / "part-00000.parquet"
    rows = pq.read_table(path).to_pylist()
    fn(rows)
    write_table_atomic(to_table(rows, SAMPLE_SCHEMA), path)


def test_good_shards_pass(good):
    report = verify(good)
    assert report.ok, [str(v) for v in report.violations]
    assert report.rows == 6 and report.keychain_rows == 6 and report.files == 2


def test_wrong_stored_length(good):
    def f(rows):
        rows[0]["prompt_tokens"] -= 3

    rewrite(good, f)
    r = verify(good)
    assert r.checks == {"length": 1} and "stored prompt_tokens" in str(r.violations[0])
    assert "part-00000.parquet: row 0" in str(r.violations[0])


def test_text_inserted_after_measuring_breaks_the_length(good):
    def f(rows):
        rows[1]["prompt"][-1]["content"] += " Extra words added after the length was measured." * 20

    rewrite(good, f)
    r = verify(good)
    assert r.checks["length"] == 2  # the stored count is wrong and the prompt is over budget


def test_broken_chain(good):
    def f(rows):
        c = rows[0]["chains"][0]
        old = json.dumps({c["keys"][1]: c["keys"][2]})
        rows[0]["prompt"][-1]["content"] = rows[0]["prompt"][-1]["content"].replace(
            old, json.dumps({c["keys"][1]: c["keys"][1][::-1]})
        )

    rewrite(good, f)
    r = verify(good)
    assert r.checks.get("chain", 0) >= 1 and any("not at the question" in v.message for v in r.violations)


def test_missing_gold_document(good):
    def f(rows):
        g = rows[2]["gold_docs"][0]
        rows[2]["gold_docs"][0] = {**g, "text": g["text"] + " A sentence that is not in the prompt."}

    rewrite(good, f)
    assert verify(good).checks == {"gold": 1, "structure": 1}


def test_document_offsets_must_delimit_the_documents(good):
    def f(rows):
        rows[0]["doc_offsets"] = rows[0]["doc_offsets"][::-1]

    rewrite(good, f)
    r = verify(good)
    assert r.checks == {"structure": 1} and "doc_offsets" in r.violations[0].message


def test_duplicate_uid(good):
    def f(rows):
        rows[1]["uid"] = rows[0]["uid"]
        rows[1]["extra_info"] = {**rows[1]["extra_info"], "uid": rows[0]["uid"]}

    rewrite(good, f)
    assert verify(good).checks == {"uid": 1}


def test_not_a_sample_shard(tmp_path):
    pq.write_table(pa.table({"x": [1]}), tmp_path / "part-00000.parquet")
    r = verify(tmp_path)
    assert not r.ok and r.violations[0].check == "schema"


def test_each_generator_checks_its_own_structure(good, monkeypatch):
    """verify calls the hook of the generator named in the row, so a new generator brings its checks."""
    from datagen.generators import GENERATORS
    from datagen.generators.keychain import KeyChain

    seen = []

    class Strict(KeyChain):
        @classmethod
        def check_row(cls, row):
            seen.append(row["uid"])
            return [("mine", "rejected by the generator's own hook")]

    monkeypatch.setitem(GENERATORS._items, "keychain", Strict)
    r = verify(good)
    assert len(seen) == 6 and r.checks == {"mine": 6}


def test_unknown_generator_is_a_violation(good):
    def f(rows):
        rows[0]["generator"] = "keychian"

    rewrite(good, f)
    r = verify(good)
    assert r.checks == {"generator": 1} and "did you mean 'keychain'" in r.violations[0].message


# -- verify with teeth (issue #9, point 13) ---------------------------------------------------------


@pytest.fixture()
def good_longqa(tmp_path, toy_source):
    from datagen.generators import GenConfig

    out = tmp_path / "lq"
    run_generator(
        "longqa",
        GenConfig(length=3000, seed=2),
        toy_source,
        RunConfig(out=out, num_samples=4, rows_per_part=2),
    )
    return out


def test_longqa_text_must_ask_the_question_column(good_longqa):
    assert verify(good_longqa).ok

    def f(rows):
        rows[0]["question"] = rows[1]["question"]  # the text still asks row 0's own question
        rows[0]["extra_info"] = {**rows[0]["extra_info"], "question": rows[1]["question"]}

    rewrite(good_longqa, f)
    r = verify(good_longqa)
    assert r.checks == {"question": 1}
    assert "the text asks" in r.violations[0].message and "not the question column" in r.violations[0].message


def test_answers_must_agree_with_the_reward(good_longqa):
    def f(rows):
        rows[1]["reward_model"] = {**rows[1]["reward_model"], "ground_truth": ["something else"]}
        rows[0]["extra_info"] = {**rows[0]["extra_info"], "answers": ["something else"]}

    rewrite(good_longqa, f)
    r = verify(good_longqa)
    assert r.checks == {"answers": 2}
    assert {v.row for v in r.violations} == {0, 1} and "ground_truth" in str(r.violations[1])


def test_instructions_naming_two_head_keys(good):
    from datagen.prompts import HEAD_KEY_PHRASE

    def f(rows):
        decoy = rows[0]["chains"][1]["keys"][0]
        msg = rows[0]["prompt"][-1]
        # The last stated head and chain_head stay the true one; a second, different head comes first.
        msg["content"] = msg["content"].replace(
            "Please read the following text.",
            f'{HEAD_KEY_PHRASE} "{decoy}", please read the following text.',
            1,
        )

    rewrite(good, f)
    r = verify(good)
    assert any("2 different head keys" in v.message for v in r.violations), [str(v) for v in r.violations]


def test_folder_mixing_runs(tmp_path, good, toy_source):
    import shutil

    other = tmp_path / "other"
    run_generator(
        "keychain",
        KeyChainConfig(length=6000, num_chains=3, seed=6),
        toy_source,
        RunConfig(out=other, num_samples=6, rows_per_part=3),
    )
    shutil.copy(other / "part-00001.parquet", good / "part-00001.parquet")
    shutil.copy(other / ".parts" / "part-00001.json", good / ".parts" / "part-00001.json")
    r = verify(good)
    msgs = [v.message for v in r.violations]
    assert r.checks == {"run": 4}, msgs  # 3 rows with other settings, and two fingerprints among the markers
    assert any("differs in: seed" in m for m in msgs) and any("2 different runs" in m for m in msgs)


def test_folder_mixing_runs_without_markers(tmp_path, good, toy_source):
    """A part copied in without its marker is still caught: its rows carry other settings."""
    import shutil

    other = tmp_path / "other"
    run_generator(
        "keychain",
        KeyChainConfig(length=6000, num_chains=4, seed=5),
        toy_source,
        RunConfig(out=other, num_samples=6, rows_per_part=3),
    )
    shutil.copy(other / "part-00001.parquet", good / "part-00001.parquet")
    r = verify(good)
    assert r.checks == {"run": 3} and "differs in: num_chains" in r.violations[0].message


def test_missing_part(good):
    (good / "part-00001.parquet").unlink()
    r = verify(good)
    msgs = [v.message for v in r.violations]
    assert r.checks == {"run": 2}, msgs
    assert "part-00001.parquet" in msgs[0] and "stats.json says 2 parts" in msgs[0]
    assert "stats.json says 6 rows were written, the parts hold 3" in msgs[1]


def test_missing_part_without_stats(good):
    (good / "part-00000.parquet").unlink()
    (good / "stats.json").unlink()
    msgs = [v.message for v in verify(good).violations]
    assert any("part-00000.parquet" in m for m in msgs) and any("not complete" in m for m in msgs)


def test_row_count_checked_against_stats(good):
    stats = json.loads((good / "stats.json").read_text())
    stats["written"] = 7
    (good / "stats.json").write_text(json.dumps(stats))
    r = verify(good)
    assert r.checks == {"run": 1} and "says 7 rows" in r.violations[0].message


def test_length_judged_by_the_runs_tolerance(good):
    """A row that widens its own tolerance and target is judged by the run's (stats.json)."""

    def f(rows):
        params = json.loads(rows[0]["params"])
        rows[0]["params"] = json.dumps({**params, "length": 6400, "tolerance": 0.2}, sort_keys=True)
        rows[0]["length_target"] = 6400

    rewrite(good, f)
    r = verify(good)
    assert not r.ok and r.checks["run"] >= 1
    assert any("the run's length is 6000" in v.message for v in r.violations)


def test_malformed_rows_are_violations_not_tracebacks(good):
    def f(rows):
        rows[0]["params"] = "{not json"
        rows[1]["tokenizer"] = "no-such-tokenizer"

    rewrite(good, f)
    r = verify(good)
    assert r.checks.get("malformed") == 2 and r.rows == 6
    assert "regenerate" in r.violations[0].message


def test_unreadable_part_is_a_violation(good):
    (good / "part-00001.parquet").write_bytes(b"not parquet at all")
    r = verify(good)
    assert not r.ok and r.violations[0].check == "schema" and "part-00001.parquet" in str(r.violations[0])


def test_a_folder_of_several_runs_without_run_files_judges_each_row_by_its_own(tmp_path, good, good_longqa):
    """A folder assembled from several runs (as a curriculum stage is) is not a mixed run."""
    import shutil

    mixed = tmp_path / "stage"
    mixed.mkdir()
    shutil.copy(good / "part-00000.parquet", mixed / "part-00000.parquet")
    shutil.copy(good_longqa / "part-00000.parquet", mixed / "part-00001.parquet")
    r = verify(mixed)
    assert r.ok and r.rows == 5, [str(v) for v in r.violations]


# -- verify checks answers too (issue 18 §4) ----------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_rows(tmp_path_factory):
    """Long-QA and KeyChain rows from the synthetic world (bridge and yes/no comparison questions)."""
    from datagen.generators import GenConfig
    from datagen.runner import run_triplets
    from datagen.sources import get_source

    root = tmp_path_factory.mktemp("answers")
    run_triplets(get_source("synthetic", options={"num_triplets": 40}), root / "t")
    src = get_source("triplets", str(root / "t"))
    run_generator("longqa", GenConfig(length=2000, seed=3), src, RunConfig(out=root / "lq", num_samples=40))
    run_generator(
        "keychain",
        KeyChainConfig(length=2500, num_chains=2, seed=3),
        src,
        RunConfig(out=root / "kc", num_samples=6),
    )
    return root


def _copy(folder, tmp_path):
    import shutil

    shutil.copytree(folder, tmp_path / folder.name)
    return tmp_path / folder.name


@pytest.mark.parametrize("kind", ["lq", "kc"])
def test_an_answer_its_gold_documents_do_not_contain_fails(synthetic_rows, tmp_path, kind):
    """The three copies of the answer changed together to "Atlantis" agree with each other, but no gold
    document says it: verify fails the row."""
    folder = _copy(synthetic_rows / kind, tmp_path)
    before = verify(folder)
    assert before.ok, [str(v) for v in before.violations[:3]]
    assert before.answers.get("found", 0) > 0 and before.answers.get("missing", 0) == 0
    rows = pq.read_table(folder / "part-00000.parquet").to_pylist()
    i = next(i for i, r in enumerate(rows) if r["answers"][0] not in ("yes", "no"))

    def f(rows):
        rows[i]["answers"] = ["Atlantis"]
        rows[i]["reward_model"] = {**rows[i]["reward_model"], "ground_truth": ["Atlantis"]}
        rows[i]["extra_info"] = {**rows[i]["extra_info"], "answers": ["Atlantis"]}

    rewrite(folder, f)
    r = verify(folder)
    assert r.checks == {"answer": 1} and r.violations[0].row == i
    assert "'Atlantis'" in r.violations[0].message and r.answers["missing"] == 1


def test_yes_no_answers_are_counted_not_failed(synthetic_rows):
    r = verify(synthetic_rows / "lq")
    assert r.ok and r.answers["yes_no"] > 0 and r.answers["found"] > 0
    assert r.answers["found"] + r.answers["yes_no"] == r.rows == 40


def test_answers_of_a_source_that_marks_them_free_form_are_counted_not_failed(tmp_path):
    """A jsonl source read through a column map may hold free-form answers: counted, not failed; the same
    row from an extractive source fails."""
    from datagen.generators import GenConfig
    from datagen.sources import get_source

    from .formats import make_qa_records, write_jsonl

    recs = make_qa_records(6, seed=4)
    for r in recs[:2]:
        r.answer, r.aliases = "a summary in other words", []
    write_jsonl(tmp_path / "mine.jsonl", recs)
    src = get_source("jsonl", str(tmp_path / "mine.jsonl"))
    run_generator(
        "longqa", GenConfig(length=2000, seed=1), src, RunConfig(out=tmp_path / "lq", num_samples=6)
    )
    r = verify(tmp_path / "lq")
    assert r.ok and r.answers == {"found": 4, "not_extractive": 2}


@pytest.mark.parametrize("source", ["hotpotqa", "musique", "2wikimqa"])
def test_published_layouts_answers_are_found(tmp_path, source):
    """The readers of the published formats, on the repository's format fixtures (hand-written records
    modelled on each data set's first dev record plus generated records in its layout; not the real data):
    every answer is found in the gold documents or is a yes/no comparison."""
    from datagen.generators import GenConfig
    from datagen.sources import get_source

    from . import formats

    recs = formats.make_qa_records(8, seed=7)
    writer, example = {
        "hotpotqa": (formats.write_hotpotqa, formats.hotpotqa_example),
        "musique": (formats.write_musique, formats.musique_example),
        "2wikimqa": (formats.write_2wikimqa, formats.twowiki_example),
    }[source]
    path = writer(tmp_path / f"{source}.json", [example(), *recs])
    src = get_source(source, str(path))
    run_generator(
        "longqa", GenConfig(length=3000, seed=1), src, RunConfig(out=tmp_path / "lq", num_samples=9)
    )
    r = verify(tmp_path / "lq")
    assert r.ok, [str(v) for v in r.violations[:3]]
    assert r.answers.get("missing", 0) == 0 and sum(r.answers.values()) == r.rows == 9
