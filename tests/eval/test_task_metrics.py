"""Per-task metrics: the task column reaches eval's report as a group-by."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from datagen.generators import GENERATORS
from datagen.runner import RunConfig, run_generator
from datagen.sources import get_source
from eval.data import load_items
from eval.report import build_metrics, write_report
from eval.scoring import score


def make_shards(root):
    src = get_source("synthetic", options={"num_triplets": 30})
    for name, n in (("longqa", 4), ("needles", 3), ("vartrack", 2)):
        run_generator(
            name,
            GENERATORS.get(name).config_cls(length=2000, seed=1),
            src,
            RunConfig(out=root / name, num_samples=n),
        )
    return root


def test_metrics_are_grouped_by_task(tmp_path):
    items, _ = load_items(make_shards(tmp_path / "data"))
    assert [it.task for it in items] == ["longqa"] * 4 + ["needles"] * 3 + ["vartrack"] * 2
    # the retrieval tasks answered right, long QA wrong
    preds = {
        it.uid: [f"Therefore, the answer is {it.answers[0] if it.task != 'longqa' else 'nobody'}."]
        for it in items
    }
    scored = score(items, preds)
    m = build_metrics(scored)
    by_task = {r["task"]: r for r in m["by_task"]}
    assert {k: (v["n"], v["em"]) for k, v in by_task.items()} == {
        "longqa": (4, 0.0),
        "needles": (3, 1.0),
        "vartrack": (2, 1.0),
    }
    assert all("task" in g for g in m["groups"]) and sum(g["n"] for g in m["groups"]) == 9
    assert {(r["task"], r["length_bin"]) for r in m["by_task_length"]} == {
        ("longqa", "2k"),
        ("needles", "2k"),
        ("vartrack", "2k"),
    }
    write_report(scored, tmp_path / "out")
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## By task" in report and "| needles | 3 |" in report


def test_older_shards_fall_back_to_the_generator_name(tmp_path):
    root = make_shards(tmp_path / "data")
    path = next((root / "needles").glob("part-*.parquet"))
    t = pq.read_table(path)
    ei = t.column("extra_info").combine_chunks()
    keep = [f for f in ei.type if f.name not in ("task", "task_data")]
    t = t.drop_columns(["task"]).set_column(
        t.schema.get_field_index("extra_info"),
        "extra_info",
        pa.StructArray.from_arrays([ei.field(f.name) for f in keep], fields=keep),
    )
    pq.write_table(t.replace_schema_metadata(pq.read_schema(path).metadata), path)
    items, _ = load_items(root / "needles")
    assert [it.task for it in items] == ["needles"] * 3


def test_lengths_are_listed_shortest_first(tmp_path):
    """metrics.json lists lengths in one order, shortest first, so two runs of the same data write the same
    file (an unordered group-by gave a different order from run to run)."""
    src = get_source("synthetic", options={"num_triplets": 30})
    lengths = [1200, 1600, 2000, 2500, 3000, 4000]
    for length in reversed(lengths):
        run_generator(
            "longqa",
            GENERATORS.get("longqa").config_cls(length=length, seed=1),
            src,
            RunConfig(out=tmp_path / "data" / f"longqa-{length}", num_samples=2),
        )
    items, _ = load_items(tmp_path / "data")
    scored = score(items, {it.uid: ["Therefore, the answer is nobody."] for it in items})
    m = build_metrics(scored)
    firsts = [r["length_tokens"] for r in m["length_tokens"]]
    assert len(firsts) == len(lengths) and firsts == sorted(firsts)
    bins = [r["length_bin"] for r in m["by_length"]]
    assert bins == [r["length_bin"] for r in m["length_tokens"]]
