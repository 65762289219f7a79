"""Runs a generator (or a triplet conversion) into a folder of Parquet parts.

Sample ``i`` depends only on (config, corpus, i), and part ``p`` holds samples
``[p*rows_per_part, (p+1)*rows_per_part)``, so any split of the parts over ranks (``num_shards`` /
``shard_index``) or processes (``workers``) writes the same bytes as one process does. Finished parts
have done-markers: a re-run skips them, and ``stats.json`` appears once all parts are done.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datagen.corpus import Corpus
from datagen.generators import GENERATORS, GenConfig, Generator, SkipSample
from datagen.schema import SAMPLE_SCHEMA, SCHEMA_VERSION, TRIPLET_SCHEMA, to_table
from datagen.shards import OutputLock, PartWriter, check_complete, check_output_path
from datagen.sources.base import Source
from longmill.errors import LongmillError
from longmill.rng import check_seed, stable_id
from longmill.stats import Stats
from longmill.types import Progress
from longmill.version import __version__

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    """How a run is laid out and executed (none of this changes a sample's content).

    Args:
        out: the artifact folder.
        num_samples: samples in the whole run (over all shards).
        rows_per_part: samples per Parquet part.
        num_shards: split the parts over this many independent ranks.
        shard_index: which rank this process is (0-based).
        workers: processes used by this rank.
        strict: fail on the first skipped record or sample instead of counting it.
        overwrite: remove parts of a run with other settings instead of refusing.
    """

    out: Path
    num_samples: int = 100
    rows_per_part: int = 256
    num_shards: int = 1
    shard_index: int = 0
    workers: int = 1
    strict: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.num_samples <= 0:
            raise LongmillError(f"--num-samples must be positive, got {self.num_samples}")
        if self.rows_per_part <= 0:
            raise LongmillError(f"--rows-per-part must be positive, got {self.rows_per_part}")
        if self.num_shards < 1:
            raise LongmillError(f"--num-shards must be >= 1, got {self.num_shards}")
        if not 0 <= self.shard_index < self.num_shards:
            raise LongmillError(
                f"--shard-index must be in [0, {self.num_shards}) with --num-shards {self.num_shards}, "
                f"got {self.shard_index}"
            )
        if self.workers < 1:
            raise LongmillError(f"--workers must be >= 1, got {self.workers}")

    @property
    def num_parts(self) -> int:
        return math.ceil(self.num_samples / self.rows_per_part)

    def part_range(self, part: int) -> range:
        return range(part * self.rows_per_part, min(self.num_samples, (part + 1) * self.rows_per_part))

    def my_parts(self) -> list[int]:
        return [p for p in range(self.num_parts) if p % self.num_shards == self.shard_index]


# -- generator runs ---------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}  # set in the parent before forking: the generator and a progress counter


def _make_part(
    gen: Generator, run: RunConfig, part: int, tick: Callable[[], None]
) -> tuple[list[dict], dict]:
    skips = Stats()
    rows: list[dict] = []
    for i in run.part_range(part):
        try:
            rows.append(gen.sample(i, skips).to_row())
        except SkipSample as e:
            if run.strict:
                raise
            skips.add(e.kind)
            log.warning("skipped %s", e)
        tick()
    stats = {
        "written": len(rows),
        "requested": len(run.part_range(part)),
        "skipped": skips.to_dict(),
        "prompt_tokens": [r["prompt_tokens"] for r in rows],
        "num_docs": [r["num_docs"] for r in rows],
        "data_sources": _count_by(r["data_source"] for r in rows),
    }
    return rows, stats


def _count_by(keys: Iterable[str]) -> dict[str, int]:
    by = Stats()
    for k in keys:
        by.add(k)
    return by.to_dict()


def _die_with_parent(parent: int) -> None:
    """Pool initializer: a worker ends when the process that started it does (even when it is killed).

    Linux delivers SIGTERM at the parent's death (``PR_SET_PDEATHSIG``); elsewhere a daemon thread
    watches the parent pid.
    """
    import signal
    import threading

    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="longmill-parent-watch").start()


def _worker_part(part: int) -> int:
    gen, run, counter, write = _WORKER["gen"], _WORKER["run"], _WORKER["counter"], _WORKER["write"]

    def tick() -> None:
        with counter.get_lock():
            counter.value += 1

    rows, stats = _make_part(gen, run, part, tick)
    # The worker writes its own part (atomically, with its done-marker): sending the rows back to the parent
    # would pickle every long prompt through a pipe and serialise the Parquet writing in one process.
    write(part, rows, stats)
    return part


def run_generator(
    generator: str,
    config: GenConfig,
    source: Source,
    run: RunConfig,
    progress: Progress | None = None,
    corpus: Corpus | None = None,
) -> dict[str, Any]:
    """Generate ``run.num_samples`` samples (this rank's parts) into ``run.out``.

    Args:
        generator: a name in :data:`GENERATORS`.
        config: that generator's config (``GENERATORS.get(name).config_cls``).
        source: where the triplets come from.
        run: layout and execution options.
        progress: called with the number of samples just finished (the CLI's progress bar).
        corpus: a corpus already built from ``source`` (skips building it again).

    Returns:
        The run summary: ``stats.json``'s content when all parts are done, else a partial summary.
    """
    check_seed(config.seed)
    check_output_path(run.out, [source.input])
    if source.input:
        check_complete(source.input)
    with OutputLock(run.out, _lock_tag(run)):
        return _run_generator(generator, config, source, run, progress, corpus)


def _lock_tag(run: RunConfig) -> str:
    """Ranks of a sharded run write disjoint parts of one folder, so each holds its own lock."""
    return f"shard-{run.shard_index}-of-{run.num_shards}" if run.num_shards > 1 else ""


def _run_generator(
    generator: str,
    config: GenConfig,
    source: Source,
    run: RunConfig,
    progress: Progress | None,
    corpus: Corpus | None,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    corpus = corpus if corpus is not None else Corpus.from_source(source)
    log.info(
        "corpus: %d triplets, %d documents, %d distinct questions (%.1fs)",
        len(corpus),
        len(corpus.docs),
        len(corpus.questions),
        time.perf_counter() - t0,
    )
    gen_cls = GENERATORS.get(generator)
    gen = gen_cls(config, corpus)
    gen.preflight()
    fingerprint = stable_id(
        gen.params, corpus.fingerprint(), run.num_samples, run.rows_per_part, SCHEMA_VERSION
    )
    summary = f"{generator} {source.name} length={config.length} seed={config.seed} n={run.num_samples}"
    writer = PartWriter(
        run.out, fingerprint, run.num_parts, overwrite=run.overwrite, sharded=run.num_shards > 1
    )
    todo = [p for p in run.my_parts() if not writer.is_done(p)]
    done_before = sum(len(run.part_range(p)) for p in run.my_parts() if p not in todo)
    if done_before and progress:
        progress(done_before)
    if done_before:
        log.info("%d part(s) already done in %s; resuming", len(run.my_parts()) - len(todo), run.out)
    extra = {"source_skipped": source.skips.as_dict(), "source_cleaned": source.cleaned.to_dict(sort=True)}

    def write(part: int, rows: list[dict], stats: dict) -> None:
        writer.write(part, to_table(rows, SAMPLE_SCHEMA), {**stats, **extra}, summary)

    if run.workers == 1 or len(todo) <= 1:
        for part in todo:
            rows, stats = _make_part(gen, run, part, (lambda: progress(1)) if progress else (lambda: None))
            write(part, rows, stats)
    else:
        _run_pool(gen, run, todo, write, progress)
    log.info("docs tokenised: %d (cache misses) in %.1fs", gen.counter.counted, time.perf_counter() - t0)
    return finalize(
        writer,
        run,
        meta={
            "artifact": "samples",
            "generator": generator,
            "source": source.name,
            "length_target": config.length,
            "tokenizer": gen.tokenizer.name,
            "params": json.loads(gen.params),
            "longmill_version": __version__,
        },
    )


def _run_pool(
    gen: Generator, run: RunConfig, todo: list[int], write: Callable, progress: Progress | None
) -> None:
    try:
        ctx = mp.get_context("fork")
    except ValueError as e:  # pragma: no cover - non-POSIX
        raise LongmillError(
            "--workers > 1 needs the 'fork' start method (Linux/macOS); use --workers 1"
        ) from e
    counter = ctx.Value("q", 0)
    _WORKER.update(gen=gen, run=run, counter=counter, write=write)
    seen = 0
    try:
        with ProcessPoolExecutor(
            max_workers=min(run.workers, len(todo)),
            mp_context=ctx,
            initializer=_die_with_parent,
            initargs=(os.getpid(),),
        ) as pool:
            pending = {pool.submit(_worker_part, p) for p in todo}
            while pending:
                finished, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                for f in finished:
                    f.result()  # raises a worker's error here
                if progress:
                    now = counter.value
                    progress(now - seen)
                    seen = now
    finally:
        _WORKER.clear()


def finalize(writer: PartWriter, run: RunConfig, meta: dict[str, Any]) -> dict[str, Any]:
    """Aggregate the parts' stats into ``stats.json`` once every part of the run is done."""
    parts = writer.done_stats()
    merged = Stats(skipped={}, data_sources={}, prompt_tokens=[], num_docs=[])
    for s in parts:
        merged.merge(
            {
                k: s.get(k, v)
                for k, v in (("skipped", {}), ("data_sources", {}), ("prompt_tokens", []), ("num_docs", []))
            }
        )
    agg = merged.to_dict(sort=True)
    stats = {
        **meta,
        "requested": run.num_samples,
        "written": sum(s["written"] for s in parts),
        "skipped": agg["skipped"],
        "source_skipped": parts[0].get("source_skipped", {}) if parts else {},
        "source_cleaned": parts[0].get("source_cleaned", {}) if parts else {},
        "prompt_tokens": agg["prompt_tokens"],
        "num_docs": agg["num_docs"],
        "data_sources": agg["data_sources"],
        "parts": run.num_parts,
        "parts_done": len(parts),
    }
    if writer.all_done():
        writer.write_stats(stats)
        log.info("wrote %s", writer.out / "stats.json")
    else:
        log.info("%d/%d parts done; stats.json is written when the last part is", len(parts), run.num_parts)
    return stats


# -- triplet conversion -----------------------------------------------------------------------------


def run_triplets(
    source: Source, out: Path, rows_per_part: int = 1000, progress: Progress | None = None
) -> dict[str, Any]:
    """Convert a source into triplet shards (``datagen triplets``).

    The source is read once, in order, and each part is written as soon as it fills, so memory holds one
    part at a time. The folder is rewritten from scratch (reading the source is the expensive part, and a
    re-run writes the same bytes), in a staging folder that replaces ``out`` only once the run succeeded.
    """
    out = Path(out)
    check_output_path(out, [source.input])
    if source.input:
        check_complete(source.input)
    with OutputLock(out):
        return _run_triplets(source, out, rows_per_part, progress)


def _run_triplets(source: Source, out: Path, rows_per_part: int, progress: Progress | None) -> dict[str, Any]:
    fingerprint = stable_id(source.name, source.input, sorted(source.options.items()), SCHEMA_VERSION)
    writer = PartWriter(out, fingerprint, num_parts=0, fresh=True)
    try:
        return _convert(source, writer, rows_per_part, progress)
    except BaseException:
        shutil.rmtree(writer.folder, ignore_errors=True)  # the staging folder; ``out`` is untouched
        raise


def _convert(
    source: Source, writer: PartWriter, rows_per_part: int, progress: Progress | None
) -> dict[str, Any]:
    hops, qtypes = Stats(), Stats()
    rows: list[dict] = []
    parts = written = 0

    def flush() -> None:
        nonlocal rows, parts
        writer.write(parts, to_table(rows, TRIPLET_SCHEMA), {"written": len(rows)}, f"triplets {source.name}")
        parts += 1
        rows = []

    for t in source.iter_triplets():
        rows.append(t.to_row())
        hops.add(str(t.hops))
        qtypes.add(t.question_type or "none")
        written += 1
        if len(rows) == rows_per_part:
            flush()
        if progress:
            progress(1)
    if rows:
        flush()
    if not written:
        raise LongmillError(
            f"source '{source.name}' produced no triplets from {source.input}; skipped: {source.skips.as_dict()}"
        )
    stats = {
        "artifact": "triplets",
        "source": source.name,
        "input": source.input,
        "options": {k: str(v) for k, v in sorted(source.options.items())},
        "triplets": written,
        "skipped": source.skips.as_dict(),
        "cleaned": source.cleaned.to_dict(sort=True),
        "hops": dict(sorted(hops.to_dict().items(), key=lambda kv: int(kv[0]))),
        "question_types": qtypes.to_dict(sort=True),
        "parts": parts,
        "longmill_version": __version__,
    }
    writer.write_stats(stats)
    return stats
