"""Shard writing: byte-identical re-runs, sharding, workers, resume, and refusing foreign folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datagen.generators import SkipSample
from datagen.generators.keychain import KeyChain, KeyChainConfig
from datagen.runner import RunConfig, run_generator
from longmill.errors import LongmillError

from .conftest import ListSource, toy_triplets

CFG = dict(length=5000, num_chains=3, seed=9)


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*")) if p.is_file()}


def run(out, n=10, **kw):
    return run_generator(
        "keychain",
        KeyChainConfig(**CFG),
        ListSource(toy_triplets()),
        RunConfig(out=out, num_samples=n, rows_per_part=4, **kw),
    )


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
        run_generator(
            "keychain",
            KeyChainConfig(**{**CFG, "seed": 10}),
            ListSource(toy_triplets()),
            RunConfig(out=tmp_path / "x", num_samples=10, rows_per_part=4),
        )
    run_generator(
        "keychain",
        KeyChainConfig(**{**CFG, "seed": 10}),
        ListSource(toy_triplets()),
        RunConfig(out=tmp_path / "x", num_samples=10, rows_per_part=4, overwrite=True),
    )
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


@pytest.mark.parametrize(
    "bad", [dict(num_samples=0), dict(num_shards=2, shard_index=2), dict(workers=0), dict(rows_per_part=0)]
)
def test_bad_run_options(tmp_path, bad):
    with pytest.raises(LongmillError):
        RunConfig(out=tmp_path, **{"num_samples": 5, **bad})


# -- guarded outputs (issue 9, points 6, 7, 8, 11, 12) ---------------------------------------------------

import os  # noqa: E402
import stat  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402
from types import SimpleNamespace  # noqa: E402

from datagen import shards  # noqa: E402
from datagen.runner import run_triplets  # noqa: E402
from datagen.shards import OutputLock, check_complete  # noqa: E402
from datagen.sources import get_source  # noqa: E402


def crash_at(monkeypatch, index):
    real = KeyChain.build

    def build(self, i, triplet, rng):
        if i == index:
            raise KeyboardInterrupt
        return real(self, i, triplet, rng)

    monkeypatch.setattr(KeyChain, "build", build)
    return real


def test_a_failed_rerun_keeps_the_complete_output_it_would_replace(tmp_path, monkeypatch):
    out = tmp_path / "x"
    run(out)
    good = files(out)
    real = crash_at(monkeypatch, 6)
    with pytest.raises(KeyboardInterrupt):
        run_generator(
            "keychain",
            KeyChainConfig(**{**CFG, "seed": 10}),
            ListSource(toy_triplets()),
            RunConfig(out=out, num_samples=10, rows_per_part=4, overwrite=True),
        )
    assert files(out) == good  # nothing of the good output was deleted by the failed run
    assert (out / ".parts").is_dir() and len(list((out / ".parts").glob("*.json"))) == 3
    monkeypatch.setattr(KeyChain, "build", real)
    stats = run_generator(
        "keychain",
        KeyChainConfig(**{**CFG, "seed": 10}),
        ListSource(toy_triplets()),
        RunConfig(out=out, num_samples=10, rows_per_part=4, overwrite=True),
    )
    assert (
        stats["params"]["seed"] == 10 and json.loads((out / "stats.json").read_text())["params"]["seed"] == 10
    )
    assert not shards.staging_path(out).exists() and not list(tmp_path.glob(".x.*"))
    run_generator(
        "keychain",
        KeyChainConfig(**{**CFG, "seed": 10}),
        ListSource(toy_triplets()),
        RunConfig(out=tmp_path / "fresh", num_samples=10, rows_per_part=4),
    )
    assert files(out) == files(tmp_path / "fresh")
    assert sorted(p.name for p in (out / ".parts").iterdir()) == [
        "part-00000.json",
        "part-00001.json",
        "part-00002.json",
    ]


def test_a_rerun_with_fewer_parts_leaves_no_stale_part(tmp_path):
    out = tmp_path / "x"
    run(out, n=10)
    run_generator(
        "keychain",
        KeyChainConfig(**{**CFG, "seed": 10}),
        ListSource(toy_triplets()),
        RunConfig(out=out, num_samples=3, rows_per_part=4, overwrite=True),
    )
    assert sorted(p.name for p in out.glob("part-*")) == ["part-00000.parquet"]


def test_a_killed_swap_is_finished_by_the_next_run(tmp_path):
    out = tmp_path / "x"
    run(out)
    staged = shards.staging_path(out)
    run(staged, n=10)  # a finished staging folder, as a run killed inside the swap leaves it
    for p in out.glob("part-*.parquet"):
        p.unlink()  # the swap had begun deleting the old parts
    (out / "stats.json").unlink()
    with pytest.raises(LongmillError, match="incomplete"):
        check_complete(out)
    run(out)
    assert not staged.exists() and (out / "stats.json").exists() and len(list(out.glob("part-*"))) == 3


def test_writing_into_ones_own_input_is_refused(tmp_path):
    t = tmp_path / "t"
    run_triplets(ListSource(toy_triplets(30)), t, rows_per_part=10)
    before = files(t)
    for out in (t, t / "inner", tmp_path):
        with pytest.raises(LongmillError, match="own input"):
            run_generator(
                "keychain",
                KeyChainConfig(**CFG),
                get_source("triplets", str(t)),
                RunConfig(out=out, num_samples=2),
            )
    with pytest.raises(LongmillError, match="own input"):
        run_triplets(get_source("triplets", str(t)), t)
    assert files(t) == before


def test_an_input_without_its_completion_marker_is_refused(tmp_path):
    t = tmp_path / "t"
    run_triplets(ListSource(toy_triplets(30)), t, rows_per_part=10)
    (t / "stats.json").unlink()
    with pytest.raises(LongmillError, match=r"incomplete: it has no stats.json.*re-run the command"):
        run_generator(
            "keychain",
            KeyChainConfig(**CFG),
            get_source("triplets", str(t)),
            RunConfig(out=tmp_path / "k", num_samples=2),
        )
    assert not (tmp_path / "k").exists()


def test_a_second_run_into_a_locked_folder_fails_and_a_stale_lock_is_taken_over(tmp_path):
    out = tmp_path / "x"
    with OutputLock(out):  # another run (this process, alive) holds the folder
        with pytest.raises(LongmillError, match=r"being written by another run \(pid \d+"):
            run(out)
    assert not (tmp_path / ".x.lock").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".x.lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    stats = run(out)  # the lock's process is gone: taken over
    assert stats["parts_done"] == 3 and not (tmp_path / ".x.lock").exists()


def test_two_processes_into_one_folder_the_second_fails_clearly(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        from datagen.shards import OutputLock
        with OutputLock({str(tmp_path / "x")!r}):
            print("locked", flush=True)
            time.sleep(30)
    """)
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "datagen",
                "keychain",
                "--length",
                "5k",
                "--num-samples",
                "2",
                "--out",
                str(tmp_path / "x"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2 and f"pid {holder.pid}" in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "x").exists()
    finally:
        holder.kill()
        holder.wait()


def test_leftover_temp_files_are_removed_on_resume_and_modes_follow_the_umask(tmp_path, monkeypatch):
    out = tmp_path / "x"
    crash_at(monkeypatch, 6)
    with pytest.raises(KeyboardInterrupt):
        run(out)
    monkeypatch.undo()
    (out / ".part-00001.parquet.abc123.tmp").write_bytes(b"half")
    (out / ".parts" / ".part-00001.json.def456.tmp").write_bytes(b"half")
    old = os.umask(0o022)
    try:
        run(out)
    finally:
        os.umask(old)
    assert not list(out.glob(".*.tmp")) and not list((out / ".parts").glob(".*.tmp"))
    for p in [*out.glob("part-*.parquet"), out / "stats.json", *(out / ".parts").glob("*.json")]:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p


def test_output_path_problems_and_bad_seeds_fail_before_any_work(tmp_path, monkeypatch):
    class Untouchable(ListSource):
        def _iter(self):
            raise AssertionError("the source was read before the options were checked")

    def go(out, **cfg):
        return run_generator(
            "keychain", KeyChainConfig(**{**CFG, **cfg}), Untouchable([]), RunConfig(out=out, num_samples=2)
        )

    (tmp_path / "file").write_text("x")
    with pytest.raises(LongmillError, match="exists and is not a folder"):
        go(tmp_path / "file")
    with pytest.raises(LongmillError, match="is a file, so the folder cannot be created"):
        go(tmp_path / "file" / "sub")
    with pytest.raises(LongmillError, match="--seed must be a whole number >= 0, got -1"):
        go(tmp_path / "o", seed=-1)
    monkeypatch.setattr(
        shards.shutil, "disk_usage", lambda p: SimpleNamespace(free=1024, total=1 << 30, used=0)
    )
    with pytest.raises(LongmillError, match="only 0 MiB free"):
        go(tmp_path / "o")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_fails_before_any_work(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(LongmillError, match="not writable"):
            run(ro / "x")
    finally:
        ro.chmod(0o755)


def test_workers_end_with_their_parent(tmp_path):
    pids = tmp_path / "pids"
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path[:0] = [{str(Path(__file__).parents[2])!r}, {str(Path(__file__).parent)!r}]
        from conftest import ListSource, toy_triplets
        from datagen.generators.keychain import KeyChain, KeyChainConfig
        from datagen.runner import RunConfig, run_generator
        PARENT, real = os.getpid(), KeyChain.build
        def slow(self, i, t, rng):
            if os.getpid() != PARENT:  # a worker: say who it is, then hang
                with open({str(pids)!r}, "a") as f:
                    f.write(f"{{os.getpid()}}\\n")
                time.sleep(120)
            return real(self, i, t, rng)
        KeyChain.build = slow
        run_generator("keychain", KeyChainConfig(length=5000, num_chains=3, seed=9), ListSource(toy_triplets()),
                      RunConfig(out={str(tmp_path / "x")!r}, num_samples=8, rows_per_part=4, workers=2))
    """)
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(set(pids.read_text().split()) if pids.exists() else ()) < 2:
            assert parent.poll() is None, "the run ended early"
            time.sleep(0.2)
        workers = {int(x) for x in pids.read_text().split()}
        assert len(workers) == 2
    finally:
        parent.kill()  # SIGKILL: the parent gets no chance to stop its pool
        parent.wait()
    deadline = time.time() + 15
    while time.time() < deadline and any(shards._pid_alive(w) for w in workers):
        time.sleep(0.2)
    assert not any(shards._pid_alive(w) for w in workers)


def test_a_failed_triplets_rerun_keeps_the_previous_triplets(tmp_path):
    t = tmp_path / "t"
    run_triplets(ListSource(toy_triplets(30)), t, rows_per_part=10)
    before = files(t)

    class Broken(ListSource):
        def _iter(self):
            yield from toy_triplets(15)
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        run_triplets(Broken([]), t, rows_per_part=10)
    assert files(t) == before and len(list((t / ".parts").glob("*.json"))) == 3
    assert not shards.staging_path(t).exists()
    stats = run_triplets(ListSource(toy_triplets(12)), t, rows_per_part=10)
    assert stats["triplets"] == 12 and sorted(p.name for p in t.glob("part-*")) == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]


def test_overwrite_is_refused_for_the_ranks_of_a_sharded_run(tmp_path):
    run(tmp_path / "x")
    with pytest.raises(LongmillError, match="ranks of a sharded run cannot replace it together"):
        run_generator(
            "keychain",
            KeyChainConfig(**{**CFG, "seed": 10}),
            ListSource(toy_triplets()),
            RunConfig(out=tmp_path / "x", num_samples=10, rows_per_part=4, overwrite=True, num_shards=2),
        )


def test_an_unwritable_output_folder_fails_before_any_work(tmp_path, monkeypatch):
    """Root ignores permission bits, so the permission answer is simulated here; see also the test above."""
    real = os.access
    monkeypatch.setattr(shards.os, "access", lambda p, mode: False if Path(p) == tmp_path else real(p, mode))
    with pytest.raises(LongmillError, match=f"{tmp_path} is not writable by this user"):
        run(tmp_path / "x")
