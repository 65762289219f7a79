"""The one row schema: round trips through Parquet, datasets and polars, and stays pinned."""

from __future__ import annotations

import dataclasses
from collections import Counter

import polars as pl
import pyarrow.parquet as pq
import pytest

from datagen.generators import GENERATORS
from datagen.schema import SAMPLE_SCHEMA, TRIPLET_SCHEMA, Sample, Triplet, schema_kind, to_table
from datagen.shards import write_table_atomic

from .conftest import toy_triplets

# Changing this list is a change of the data contract (DESIGN.md): do it on purpose.
PINNED_SAMPLE_COLUMNS = [
    ("uid", "string"), ("data_source", "string"), ("ability", "string"),
    ("prompt", "list<item: struct<role: string, content: string>>"), ("question", "string"),
    ("answers", "list<item: string>"),
    ("reward_model", "struct<style: string, ground_truth: list<item: string>>"),
    ("extra_info", "struct<split: string, index: int64, uid: string, source_id: string, data_source: string, "
                   "question: string, answers: list<item: string>, length_target: int64>"),
    ("length_target", "int64"), ("prompt_tokens", "int64"), ("tokenizer", "string"), ("chat_template", "string"),
    ("num_docs", "int32"), ("gold_doc_depths", "list<item: double>"), ("num_chains", "int32"),
    ("chain_hops", "int32"), ("hops", "int32"), ("difficulty", "double"), ("difficulty_source", "string"),
    ("seed", "int64"), ("generator", "string"), ("generator_version", "string"), ("source", "string"),
    ("source_id", "string"), ("split", "string"), ("question_type", "string"),
    ("gold_docs", "list<item: struct<doc_id: string, title: string, text: string>>"),
    ("supporting_facts", "list<item: string>"), ("doc_ids", "list<item: string>"),
    ("doc_offsets", "list<item: int64>"),
    ("chain_head", "string"),
    ("chains", "list<item: struct<keys: list<item: string>, target: string, is_true: bool>>"),
    ("params", "string"),
]  # fmt: skip


def test_sample_schema_is_pinned_and_matches_the_dataclass():
    assert [(f.name, str(f.type)) for f in SAMPLE_SCHEMA] == PINNED_SAMPLE_COLUMNS
    assert [f.name for f in dataclasses.fields(Sample)] == SAMPLE_SCHEMA.names
    assert [f.name for f in dataclasses.fields(Triplet)] == TRIPLET_SCHEMA.names
    assert all(f.metadata and f.metadata[b"doc"] for f in SAMPLE_SCHEMA)


@pytest.fixture(scope="module")
def samples(toy_corpus):
    out = []
    for name, kw in (("keychain", {"num_chains": 3}), ("longqa", {})):
        gen = GENERATORS.get(name)(GENERATORS.get(name).config_cls(length=4000, **kw), toy_corpus)
        out += [gen.sample(i, Counter()) for i in range(3)]
    return out


def test_round_trip_through_parquet(tmp_path, samples):
    path = tmp_path / "part-00000.parquet"
    write_table_atomic(to_table([s.to_row() for s in samples], SAMPLE_SCHEMA), path)
    table = pq.read_table(path)
    assert schema_kind(table.schema) == "sample"
    back = [Sample.from_row(r) for r in table.to_pylist()]
    assert back == samples


def test_loads_unchanged_with_datasets(tmp_path, samples):
    from datasets import load_dataset

    path = tmp_path / "part-00000.parquet"
    write_table_atomic(to_table([s.to_row() for s in samples], SAMPLE_SCHEMA), path)
    ds = load_dataset("parquet", data_files=str(path), split="train")
    assert len(ds) == len(samples)
    row = ds[0]
    # What TRL and verl read:
    assert row["prompt"] == samples[0].prompt and row["prompt"][-1]["role"] == "user"
    assert row["reward_model"]["ground_truth"] == samples[0].answers and row["data_source"] == "keychain/toy"
    assert row["extra_info"]["index"] == 0 and row["difficulty"] is None
    assert Sample.from_row(row) == samples[0]


def test_loads_with_polars(tmp_path, samples):
    path = tmp_path / "part-00000.parquet"
    write_table_atomic(to_table([s.to_row() for s in samples], SAMPLE_SCHEMA), path)
    df = pl.read_parquet(path)
    assert df.height == len(samples) and df["prompt_tokens"].max() <= 4000


def test_triplet_round_trip(tmp_path):
    ts = toy_triplets(n=4)
    path = tmp_path / "t.parquet"
    write_table_atomic(to_table([t.to_row() for t in ts], TRIPLET_SCHEMA), path)
    assert [Triplet.from_row(r) for r in pq.read_table(path).to_pylist()] == ts


def test_rows_that_do_not_match_are_rejected(samples):
    row = samples[0].to_row()
    row.pop("uid")
    row["extra"] = 1
    with pytest.raises(ValueError, match=r"missing \['uid'\], unexpected \['extra'\]"):
        to_table([row], SAMPLE_SCHEMA)
