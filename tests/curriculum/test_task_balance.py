"""Task-balanced stages: every task (the ``task`` column) gets an equal share of a stage's own samples,
and shards written before the task column existed still build."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curriculum.build import CurriculumConfig, build_curriculum
from datagen.generators import GENERATORS
from datagen.runner import RunConfig, run_generator
from datagen.sources import get_source

BINS = [1500, 3000]
COUNTS = {"keychain": 20, "aggregation": 12, "needles": 7}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    src = get_source("synthetic", options={"num_triplets": 40})
    out = []
    for length in BINS:
        for name, n in COUNTS.items():
            kw = {"num_chains": 2, "hops": 2} if name == "keychain" else {}
            d = root / f"{name}-{length}"
            run_generator(
                name,
                GENERATORS.get(name).config_cls(length=length, seed=1, **kw),
                src,
                RunConfig(out=d, num_samples=n),
            )
            out.append(d)
    return out


def stage_tasks(folder):
    return [
        r["task"]
        for p in sorted(folder.glob("part-*.parquet"))
        for r in pq.read_table(p, columns=["task"]).to_pylist()
    ]


def test_each_stage_has_an_equal_share_per_task(inputs, tmp_path):
    m = build_curriculum(
        inputs,
        tmp_path / "c",
        CurriculumConfig(bins=BINS, eval_share=0.0, retro_share=0.0, task_balance=True),
    )
    for s in m["stages"]:
        assert s["by_task"] == {"aggregation": 7, "keychain": 7, "needles": 7}
        tasks = stage_tasks(tmp_path / "c" / s["name"])
        assert sorted(tasks) == sorted(["aggregation", "keychain", "needles"] * 7)
    assert m["dropped"]["task_balance"] == 2 * (20 + 12 - 14)
    again = build_curriculum(
        inputs,
        tmp_path / "d",
        CurriculumConfig(bins=BINS, eval_share=0.0, retro_share=0.0, task_balance=True),
    )
    assert [s["shards"] for s in again["stages"]] == [s["shards"] for s in m["stages"]]  # seeded draw


def test_without_the_option_nothing_is_cut(inputs, tmp_path):
    m = build_curriculum(inputs, tmp_path / "c", CurriculumConfig(bins=BINS, eval_share=0.0, retro_share=0.0))
    assert m["stages"][0]["by_task"] == {"aggregation": 12, "keychain": 20, "needles": 7}
    assert "task_balance" not in m["dropped"]


def test_older_shards_without_a_task_column_build_with_newer_ones(inputs, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    src = next(inputs[0].glob("part-*.parquet"))
    t = pq.read_table(src)
    t = t.drop_columns(["task"])
    ei = t.column("extra_info").combine_chunks()
    keep = [f for f in ei.type if f.name not in ("task", "task_data")]
    t = t.set_column(
        t.schema.get_field_index("extra_info"),
        "extra_info",
        pa.StructArray.from_arrays([ei.field(f.name) for f in keep], fields=keep),
    )
    pq.write_table(t.replace_schema_metadata(pq.read_schema(src).metadata), old / "part-00000.parquet")
    m = build_curriculum(
        [old, *inputs[1:3]], tmp_path / "c", CurriculumConfig(bins=[1500], eval_share=0.0, task_balance=True)
    )
    assert m["stages"][0]["by_task"] == {"aggregation": 7, "keychain": 7, "needles": 7}
