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


def uids(folder):
    return [
        r["uid"]
        for p in sorted(folder.glob("part-*.parquet"))
        for r in pq.read_table(p, columns=["uid"]).to_pylist()
    ]


def test_balance_with_retrospective_sampling(inputs, tmp_path):
    """Issue 19: rows cut from stage 1 by the balance came back as stage-2 retrospective rows, `dropped`
    counted them as gone, and stage 2 was unbalanced. Balance comes after the retrospective draw, which
    draws only rows that were in an earlier stage, and `dropped` counts the rows that are in no stage."""
    config = CurriculumConfig(
        bins=BINS, eval_share=0.0, retro_share=0.25, retro_hard_quantile=0.0, task_balance=True
    )
    m = build_curriculum(inputs, tmp_path / "c", config)
    s1, s2 = m["stages"]
    in_stage1 = set(uids(tmp_path / "c" / "stage-1"))
    assert s2["retro"] > 0 and set(s2["retro_uids"]) <= in_stage1  # nothing cut from stage 1 comes back
    for s in m["stages"]:
        assert len(set(s["by_task"].values())) == 1, s["by_task"]  # the whole stage is balanced
        assert s["own"] == len(COUNTS) * min(COUNTS.values())
    assert s2["retro"] == len(COUNTS) * s2["task_balance"]["retro_per_task"]
    staged = {u for s in m["stages"] for u in uids(tmp_path / "c" / s["name"])}
    total = 2 * sum(COUNTS.values())  # every row trains (no eval share, nothing above the last bin)
    assert m["dropped"]["task_balance"] == total - len(staged)
    assert sum(s["own"] for s in m["stages"]) == len(staged)


def test_a_stage_mostly_thrown_away_by_the_balance_is_warned_about(inputs, tmp_path, caplog):
    """Issue 19: with a one-sample task a stage shrank from 49 to 5 rows without a word."""
    one = tmp_path / "one"
    run_generator(
        "vartrack",
        GENERATORS.get("vartrack").config_cls(length=BINS[0], seed=1),
        get_source("synthetic", options={"num_triplets": 40}),
        RunConfig(out=one, num_samples=1),
    )
    config = CurriculumConfig(bins=BINS[:1], eval_share=0.0, task_balance=True)
    with caplog.at_level("WARNING", logger="curriculum.build"):
        m = build_curriculum([*inputs[:3], one], tmp_path / "c", config)
    assert m["stages"][0]["rows"] == 4 and m["stages"][0]["by_task"]["vartrack"] == 1
    warned = [r.getMessage() for r in caplog.records if "task balance" in r.getMessage()]
    assert len(warned) == 1 and "stage-1" in warned[0] and "keeps 4 of the stage's 40 own rows" in warned[0]
    assert "smallest, vartrack (1)" in warned[0]
    assert m["stages"][0]["task_balance"] == {
        "own_before": 40,
        "smallest_task": "vartrack",
        "retro_per_task": 0,
    }
    caplog.clear()
    with caplog.at_level(
        "WARNING", logger="curriculum.build"
    ):  # a small cut is the balance working: no warning
        build_curriculum(inputs[:3], tmp_path / "d", config)
    assert not [r for r in caplog.records if "task balance" in r.getMessage()]


def test_a_task_without_earlier_rows_leaves_a_balanced_stage_without_retrospective_rows(
    inputs, tmp_path, caplog
):
    """Every task of a stage draws the same number of retrospective rows, so a task that no earlier stage
    had leaves none, and the log says why."""
    config = CurriculumConfig(bins=BINS, eval_share=0.0, retro_share=0.25, task_balance=True)
    with caplog.at_level("WARNING", logger="curriculum.build"):
        m = build_curriculum([inputs[0], inputs[1], *inputs[3:]], tmp_path / "c", config)
    s2 = m["stages"][1]
    assert s2["retro"] == 0 and s2["retro_target"] > 0 and s2["by_task"] == {t: 7 for t in COUNTS}
    assert any(
        "stage-2: no retrospective rows" in r.getMessage() and "needles" in r.getMessage()
        for r in caplog.records
    )
