"""``datagen verify`` passes good shards and catches every kind of broken row."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datagen.generators.keychain import KeyChainConfig
from datagen.runner import RunConfig, run_generator
from datagen.schema import SAMPLE_SCHEMA, to_table
from datagen.shards import write_table_atomic
from datagen.verify import verify


@pytest.fixture()
def good(tmp_path, toy_source):
    out = tmp_path / "kc"
    run_generator("keychain", KeyChainConfig(length=6000, num_chains=3, seed=5), toy_source,
                  RunConfig(out=out, num_samples=6, rows_per_part=3))
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
        rows[0]["prompt"][-1]["content"] = rows[0]["prompt"][-1]["content"].replace(old, json.dumps({c["keys"][1]: c["keys"][1][::-1]}))
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
