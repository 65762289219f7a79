"""The one row schema: round trips through Parquet, datasets and polars, and stays pinned."""

from __future__ import annotations

import dataclasses
from collections import Counter

import polars as pl
import pyarrow.parquet as pq
import pytest

from datagen.generators import GENERATORS
from datagen.schema import (
    SAMPLE_SCHEMA,
    TRIPLET_SCHEMA,
    Sample,
    Triplet,
    conform_samples,
    schema_kind,
    task_of,
    to_table,
)
from longmill.io import write_table_atomic

from .conftest import toy_triplets

# Changing this list is a change of the data contract (docs/design.md, "Data contract"): do it on purpose.
PINNED_SAMPLE_COLUMNS = [
    ("uid", "string"), ("data_source", "string"), ("ability", "string"),
    ("prompt", "list<item: struct<role: string, content: string>>"), ("question", "string"),
    ("answers", "list<item: string>"),
    ("reward_model", "struct<style: string, ground_truth: list<item: string>>"),
    ("extra_info", "struct<split: string, index: int64, uid: string, source_id: string, data_source: string, "
                   "question: string, answers: list<item: string>, length_target: int64, task: string, "
                   "task_data: string>"),
    ("length_target", "int64"), ("prompt_tokens", "int64"), ("tokenizer", "string"), ("chat_template", "string"),
    ("num_docs", "int32"), ("gold_doc_depths", "list<item: double>"), ("num_chains", "int32"),
    ("chain_hops", "int32"), ("hops", "int32"), ("difficulty", "double"), ("difficulty_source", "string"),
    ("seed", "int64"), ("generator", "string"), ("generator_version", "string"), ("source", "string"),
    ("source_id", "string"), ("split", "string"), ("question_type", "string"),
    ("gold_docs", "list<item: struct<doc_id: string, title: string, text: string>>"),
    ("supporting_facts", "list<item: string>"), ("doc_ids", "list<item: string>"),
    ("doc_offsets", "list<item: int64>"),
    ("chain_head", "string"),
    ("chains", "list<item: struct<keys: list<item: string>, target: string, is_true: bool, "
               "fact_keys: list<item: string>>>"),
    ("params", "string"), ("task", "string"), ("closed_book_pass_rate", "double"), ("context_pass_rate", "double"),
    ("grounding_flag", "string"), ("fact_keys", "list<item: string>"),
]  # fmt: skip


def test_sample_schema_is_pinned_and_matches_the_dataclass():
    assert [(f.name, str(f.type)) for f in SAMPLE_SCHEMA] == PINNED_SAMPLE_COLUMNS
    assert [f.name for f in dataclasses.fields(Sample)] == SAMPLE_SCHEMA.names
    assert [f.name for f in dataclasses.fields(Triplet)] == TRIPLET_SCHEMA.names
    assert all(f.metadata and f.metadata[b"doc"] for f in SAMPLE_SCHEMA)


@pytest.fixture(scope="module")
def samples(toy_corpus):
    out = []
    for name, kw in (
        ("keychain", {"num_chains": 3}),
        ("longqa", {}),
        ("aggregation", {}),
        ("needles", {}),
        ("vartrack", {}),
    ):
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
    # the fact identity rides along, for the true question and for every decoy chain's question
    keychain = [s for s in back if s.num_chains > 1]
    assert any(s.fact_keys for s in keychain) and any(s.fact_keys is None for s in back)
    assert all(s.chains[0].fact_keys == s.fact_keys for s in keychain)
    assert any(c.fact_keys and not c.is_true for s in keychain for c in s.chains)


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
    back = [Triplet.from_row(r) for r in pq.read_table(path).to_pylist()]
    assert back == ts and back[0].fact_keys == ["toy:0.first", "toy:0.second"] and back[1].fact_keys is None


def test_older_triplet_shards_without_fact_keys_still_read(tmp_path):
    from datagen.sources import get_source

    ts = toy_triplets(n=4)
    table = to_table([t.to_row() for t in ts], TRIPLET_SCHEMA).drop_columns(["fact_keys"])
    write_table_atomic(table, tmp_path / "old" / "part-00000.parquet")
    back = list(get_source("triplets", str(tmp_path / "old")).iter_triplets())
    assert [t.id for t in back] == [t.id for t in ts] and all(t.fact_keys is None for t in back)


def test_rows_that_do_not_match_are_rejected(samples):
    row = samples[0].to_row()
    row.pop("uid")
    row["extra"] = 1
    with pytest.raises(ValueError, match=r"missing \['uid'\], unexpected \['extra'\]"):
        to_table([row], SAMPLE_SCHEMA)


def test_every_row_records_its_task(samples):
    assert [s.task for s in samples] == ["keychain"] * 3 + ["longqa"] * 3 + ["aggregation"] * 3 + [
        "needles"
    ] * 3 + ["vartrack"] * 3
    assert all(s.extra_info["task"] == s.task for s in samples)
    # the task's own structure rides in extra_info (verl hands extra_info to the reward), as JSON
    assert all(s.extra_info["task_data"] is None for s in samples[:6])
    assert all(isinstance(s.extra_info["task_data"], str) for s in samples[6:])


def _old_shard(tmp_path, samples):
    """A shard as written before the task column and extra_info.task/task_data existed."""
    import pyarrow as pa

    table = to_table([s.to_row() for s in samples], SAMPLE_SCHEMA).drop_columns(["task", "fact_keys"])
    ch = table.column("chains").combine_chunks()  # chains without fact_keys, as they were written then
    keep_ch = [f for f in ch.type.value_type if f.name != "fact_keys"]
    old_ch = pa.ListArray.from_arrays(
        ch.offsets, pa.StructArray.from_arrays([ch.values.field(f.name) for f in keep_ch], fields=keep_ch)
    )
    table = table.set_column(table.schema.get_field_index("chains"), "chains", old_ch)
    ei = table.column("extra_info").combine_chunks()
    keep = [f for f in ei.type if f.name not in ("task", "task_data")]
    old_ei = pa.StructArray.from_arrays([ei.field(f.name) for f in keep], fields=keep)
    table = table.set_column(table.schema.get_field_index("extra_info"), "extra_info", old_ei)
    path = tmp_path / "old" / "part-00000.parquet"
    write_table_atomic(table, path)
    return path


def test_older_shards_without_the_task_column_still_read(tmp_path, samples):
    path = _old_shard(tmp_path, samples[:6])
    raw = pq.read_table(path)
    assert "task" not in raw.schema.names
    table = conform_samples(raw)
    assert table.schema.equals(SAMPLE_SCHEMA, check_metadata=False)
    assert (
        table.column("task").to_pylist() == ["keychain"] * 3 + ["longqa"] * 3
    )  # the generator stands for it
    rows = raw.to_pylist()
    back = [Sample.from_row(r) for r in rows]
    assert [b.uid for b in back] == [s.uid for s in samples[:6]] and all(b.task is None for b in back)
    assert [task_of(r) for r in rows] == ["keychain"] * 3 + ["longqa"] * 3
    assert all(b.extra_info["task_data"] is None for b in back)
    assert all(b.fact_keys is None and all(c.fact_keys is None for c in b.chains) for b in back)
    chains = table.column("chains").to_pylist()
    assert chains[0] and all(c["fact_keys"] is None for ch in chains for c in ch)


def test_verify_accepts_older_shards(tmp_path, samples):
    from datagen.verify import verify

    path = _old_shard(tmp_path, samples[:6])
    report = verify(path.parent)
    assert report.ok, report.violations[:3]
    assert report.rows == 6
