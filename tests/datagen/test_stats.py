"""The one counting helper: merge, thread safety, to_dict, pickling, and its use as the skip counter."""

from __future__ import annotations

import pickle
import threading

import pytest

from datagen.sources.base import SkipCounter
from longmill.stats import Stats, summarize


def test_to_dict_keeps_declared_zeros_and_copies_groups():
    s = Stats(requests=0, failures_by_reason={})
    s.add("requests")
    s.add_to("failures_by_reason", "timeout", 2)
    d = s.to_dict()
    assert d == {"requests": 1, "failures_by_reason": {"timeout": 2}}
    d["failures_by_reason"]["timeout"] = 99  # a snapshot, not a view
    assert s["failures_by_reason"] == {"timeout": 2} and s["never_counted"] == 0


def test_merge_adds_counters_groups_and_values_from_stats_and_dicts():
    a = Stats(skipped={"x": 1}, written=2)
    a.observe("tokens", 10)
    b = Stats(skipped={"x": 1, "y": 3}, written=5, extra=1)
    b.observe("tokens", 30)
    a.merge(b).merge({"skipped": {"z": 1}, "tokens": [20], "written": 1})
    assert a.to_dict(sort=True) == {
        "extra": 1,
        "skipped": {"x": 2, "y": 3, "z": 1},
        "tokens": {"min": 10, "median": 20, "max": 30, "mean": 20.0},
        "written": 8,
    }
    assert list(a.to_dict(sort=True)["skipped"]) == ["x", "y", "z"]
    assert b.to_dict()["written"] == 5  # the merged-in stats are unchanged
    with pytest.raises(TypeError, match="group"):
        a.merge({"written": {"a": 1}})


def test_raw_values_round_trip_through_merge():
    part = Stats(prompt_tokens=[])
    for v in (5, 1, 3):
        part.observe("prompt_tokens", v)
    total = Stats().merge(part.to_dict(raw_values=True))
    assert total.to_dict() == {"prompt_tokens": summarize([1, 3, 5])}
    assert Stats(prompt_tokens=[]).to_dict() == {"prompt_tokens": None}


def test_counts_from_many_threads_are_exact():
    s = Stats(n=0, by={})
    barrier = threading.Barrier(8)

    def work(t: int) -> None:
        barrier.wait()
        for _ in range(2000):
            s.add("n")
            s.add_to("by", f"t{t % 2}")
            s.update({"m": 2})

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert s.to_dict() == {"n": 16000, "by": {"t0": 8000, "t1": 8000}, "m": 32000}


def test_pickles_without_its_lock():
    s = Stats(a=1, g={"k": 2})
    s.observe("v", 3)
    t = pickle.loads(pickle.dumps(s))
    t.add("a")
    assert t.to_dict(raw_values=True) == {"a": 2, "g": {"k": 2}, "v": [3]} and s["a"] == 1


def test_skip_counter_is_a_stats_and_strict_still_raises(tmp_path):
    skips = SkipCounter()
    skips.skip(tmp_path / "f.jsonl", 3, "answers", "empty")
    skips.count("musique:unanswerable", 2)
    assert skips.as_dict() == {"malformed:answers": 1, "musique:unanswerable": 2} and skips.total == 3
    assert "record 3" in skips.examples[0]
    merged = Stats().merge(skips)
    assert merged.to_dict(sort=True) == skips.as_dict()
    with pytest.raises(Exception, match="field 'answers'"):
        SkipCounter(strict=True).skip("f.jsonl", 3, "answers", "empty")
