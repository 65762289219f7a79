"""Shard writing: byte-identical re-runs, sharding, workers, resume, and refusing foreign folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datagen.errors import LongmillError
from datagen.generators import SkipSample
from datagen.generators.keychain import KeyChain, KeyChainConfig
from datagen.runner import RunConfig, run_generator

from .conftest import ListSource, toy_triplets

CFG = dict(length=5000, num_chains=3, seed=9)


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*")) if p.is_file()}


def run(out, n=10, **kw):
    return run_generator("keychain", KeyChainConfig(**CFG), ListSource(toy_triplets()),
                         RunConfig(out=out, num_samples=n, rows_per_part=4, **kw))


def test_same_seed_gives_byte_identical_shards(tmp_path):
    s1 = run(tmp_path / "a")
    run(tmp_path / "b")
    a, b = files(tmp_path / "a"), files(tmp_path / "b")
    assert list(a) == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet", "stats.json"]
    assert a == b
    assert s1["written"] == 10 and s1["parts_done"] == 3
    stats = json.loads((tmp_path / "a" / "stats.json").read_text())
    assert stats["prompt_tokens"]["max"] <= 5000 and stats["prompt_tokens"]["min"] >= 4950
    assert stats["skipped"] == {} and stats["data_sources"] == {"keychain/toy": 10}


def test_shards_and_workers_write_the_same_bytes(tmp_path):
    run(tmp_path / "single")
    s0 = run(tmp_path / "sharded", num_shards=2, shard_index=0)
    assert s0["parts_done"] == 2 and not (tmp_path / "sharded" / "stats.json").exists()
    run(tmp_path / "sharded", num_shards=2, shard_index=1)
    run(tmp_path / "workers", workers=2)
    assert files(tmp_path / "single") == files(tmp_path / "sharded") == files(tmp_path / "workers")


def test_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    run(tmp_path / "clean")
    real = KeyChain.build
    state = {"calls": 0}

    def crash(self, index, triplet, rng):
        if index == 6:
            raise KeyboardInterrupt  # the process dies in the middle of part 1
        state["calls"] += 1
        return real(self, index, triplet, rng)

    monkeypatch.setattr(KeyChain, "build", crash)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed")
    out = tmp_path / "resumed"
    assert [p.name for p in out.glob("part-*.parquet")] == ["part-00000.parquet"]
    assert not list(out.glob(".*.tmp")) and not (out / "stats.json").exists()
    monkeypatch.setattr(KeyChain, "build", real)
    before = (out / "part-00000.parquet").stat().st_mtime_ns
    run(out)
    assert (out / "part-00000.parquet").stat().st_mtime_ns == before  # finished work is skipped
    assert files(out) == files(tmp_path / "clean")


def test_a_folder_of_another_run_is_refused_unless_overwrite(tmp_path):
    run(tmp_path / "x")
    with pytest.raises(LongmillError, match="--overwrite"):
        run_generator("keychain", KeyChainConfig(**{**CFG, "seed": 10}), ListSource(toy_triplets()),
                      RunConfig(out=tmp_path / "x", num_samples=10, rows_per_part=4))
    run_generator("keychain", KeyChainConfig(**{**CFG, "seed": 10}), ListSource(toy_triplets()),
                  RunConfig(out=tmp_path / "x", num_samples=10, rows_per_part=4, overwrite=True))
    assert json.loads((tmp_path / "x" / "stats.json").read_text())["params"]["seed"] == 10


def test_skips_are_counted_or_fatal_under_strict(tmp_path, monkeypatch):
    real = KeyChain.sample

    def sometimes(self, index, skips):
        if index in (1, 2):
            raise SkipSample("no_triplet_fits", f"sample {index}: nothing fits")
        return real(self, index, skips)

    monkeypatch.setattr(KeyChain, "sample", sometimes)
    stats = run(tmp_path / "skip")
    assert stats["written"] == 8 and stats["skipped"] == {"no_triplet_fits": 2}
    with pytest.raises(SkipSample, match="sample 1"):
        run(tmp_path / "strict", strict=True)


@pytest.mark.parametrize("bad", [dict(num_samples=0), dict(num_shards=2, shard_index=2), dict(workers=0),
                                 dict(rows_per_part=0)])
def test_bad_run_options(tmp_path, bad):
    with pytest.raises(LongmillError):
        RunConfig(out=tmp_path, **{"num_samples": 5, **bad})
