"""Parquet shards: atomic writes, deterministic bytes, done-markers, and reading back.

An artifact is a folder of ``part-00000.parquet``, ``part-00001.parquet``, ... plus ``stats.json``.
Every part is written to a temporary name and renamed into place, and is followed by a done-marker in
``.parts/`` that records the run's fingerprint and the part's own statistics. A re-run skips parts whose
marker matches, so an interrupted run resumes, and ranks of a sharded run (``--num-shards``) never
touch each other's files. ``stats.json`` is written once every part of the run is done: it is the folder's completion marker, and
a folder of longmill's parts without it is refused as an input (:func:`check_complete`).

Output folders are guarded (:class:`OutputLock`, :func:`check_output_path`): a second run into the same
folder fails while the first holds its lock (a lock whose process is gone is taken over), a run that would
replace another complete output writes to a staging folder (``.NAME.staging`` next to it) and swaps it in
only when it has finished (:func:`promote`), and leftover temporary files of a killed run are removed.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from longmill.errors import LongmillError
from longmill.io import (
    _file_mode,
    atomic_write_json,
    write_table_atomic,
)
from longmill.manifest import PART_GLOB

log = logging.getLogger(__name__)

MARKER_DIR = ".parts"
STATS_FILE = "stats.json"
#: A run refuses to start when the disk holding its output has less free space than this.
MIN_FREE_BYTES = 16 * 1024 * 1024


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def list_parts(folder: str | Path) -> list[Path]:
    """The part files of an artifact folder, sorted; a clear error when there are none.

    A single ``.parquet`` file is a one-part artifact, and a folder of artifact folders (e.g.
    ``data/synth`` holding ``keychain-20k/`` and ``longqa-20k/``) stands for all of them, in name order.
    """
    p = Path(folder)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise LongmillError(f"{folder}: no such folder of Parquet shards")
    parts = sorted(p.glob(PART_GLOB)) or sorted(p.glob("*.parquet"))
    if not parts:
        parts = [
            x
            for sub in sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
            for x in sorted(sub.glob(PART_GLOB))
        ]
    if not parts:
        raise LongmillError(f"{folder}: no Parquet shards (part-*.parquet) found, nor folders of them")
    return parts


def read_schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except Exception as e:
        raise LongmillError(f"{path}: not a readable Parquet file ({e})") from e


def iter_rows(
    paths: Iterable[Path], columns: list[str] | None = None, batch_size: int = 256
) -> Iterator[tuple[Path, int, dict]]:
    """Yield ``(path, row_index_in_file, row)`` over Parquet files, a batch at a time."""
    for path in paths:
        try:
            pf = pq.ParquetFile(path)
        except Exception as e:
            raise LongmillError(f"{path}: not a readable Parquet file ({e})") from e
        i = 0
        for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
            for row in batch.to_pylist():
                yield path, i, row
                i += 1


def read_table(folder: str | Path, columns: list[str] | None = None) -> pa.Table:
    """All parts of an artifact as one table; shards with different schemas are an error."""
    parts = list_parts(folder)
    tables = []
    first = None
    for p in parts:
        schema = read_schema(p)
        if first is None:
            first = (p, schema)
        elif not schema.remove_metadata().equals(first[1].remove_metadata()):
            raise LongmillError(
                f"{p} has a different schema from {first[0]}; shards of one artifact must share one schema "
                f"(regenerate the older shards with this version of longmill)"
            )
        tables.append(pq.read_table(p, columns=columns))
    return pa.concat_tables(tables)


# -- output guards -----------------------------------------------------------------------------------


def _sibling(out: Path, suffix: str) -> Path:
    out = Path(out)
    return out.parent / f".{out.name}.{suffix}"


def staging_path(out: str | Path) -> Path:
    """Where a run that replaces a complete output writes until it has finished: ``.NAME.staging``."""
    return _sibling(Path(out), "staging")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    try:  # a zombie has exited; only its parent has not reaped it yet
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class OutputLock:
    """An exclusive lock on an output folder: ``.NAME.lock`` next to it, holding the owner's pid and host.

    A second run into the same folder fails at once with a message naming the holder. A lock left by a
    process that no longer runs (on this host) is taken over with a warning.

    Args:
        out: the output folder.
        tag: distinguishes locks that may be held together (the ranks of a sharded run).
    """

    def __init__(self, out: str | Path, tag: str = ""):
        self.out = Path(out)
        self.path = _sibling(self.out, f"{tag}.lock" if tag else "lock")
        self.held = False

    def acquire(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, _file_mode())
            except FileExistsError:
                try:
                    holder = json.loads(self.path.read_text() or "{}")
                except (OSError, ValueError):
                    holder = {}
                pid, host = holder.get("pid"), holder.get("host")
                if isinstance(pid, int) and (host != me["host"] or _pid_alive(pid)):
                    where = f"pid {pid}" + (f" on {host}" if host != me["host"] else "")
                    raise LongmillError(
                        f"{self.out} is being written by another run ({where}; lock {self.path}); wait for it to "
                        f"finish or choose another --out (delete the lock only if that run is gone)"
                    ) from None
                if not holder and time.time() - self.path.stat().st_mtime < 2:
                    time.sleep(0.2)  # the holder is between creating and filling the lock
                    continue
                log.warning("%s: taking over a stale lock of pid %s, which no longer runs", self.out, pid)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise LongmillError(f"{self.out}: could not take the lock {self.path}; another run keeps taking it")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _input_paths(inp: str | Path) -> list[Path]:
    s = str(inp)
    if glob.has_magic(s):
        return [Path(p) for p in sorted(glob.glob(s))]
    return [Path(s)]


def check_not_own_input(out: str | Path, inputs: Iterable[str | Path | None]) -> None:
    """Refuse an output folder that is one of the inputs, lies inside one, or contains one."""
    o = Path(out).resolve()
    for inp in inputs:
        if inp is None:
            continue
        for p in _input_paths(inp):
            i = p.resolve()
            # Inside an input folder only as its direct child: readers take a folder of artifact folders.
            if o == i or o in i.parents or (o.parent == i and i.is_dir()):
                how = "is" if o == i else "contains" if o in i.parents else "lies inside"
                raise LongmillError(
                    f"--out {out} {how} the input {inp}; writing into one's own input would destroy or mix it; "
                    "choose another --out"
                )


def check_output_path(
    out: str | Path, inputs: Iterable[str | Path | None] = (), min_free: int | None = None
) -> None:
    """Fail before any work when ``out`` cannot be written: a file in the way, no write permission, a full
    disk, or one of the ``inputs``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LongmillError(f"--out {out} exists and is not a folder; remove it or choose another --out")
    anc = out
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise LongmillError(
            f"--out {out}: {anc} is a file, so the folder cannot be created; choose another --out"
        )
    if not os.access(anc, os.W_OK | os.X_OK):
        raise LongmillError(
            f"--out {out}: {anc} is not writable by this user; fix its permissions or choose another --out"
        )
    for sub in (out / MARKER_DIR,) if out.is_dir() else ():
        if sub.exists() and not os.access(sub, os.W_OK | os.X_OK):
            raise LongmillError(f"--out {out}: {sub} is not writable by this user; fix its permissions")
    free = shutil.disk_usage(anc).free
    need = MIN_FREE_BYTES if min_free is None else min_free
    if free < need:
        raise LongmillError(
            f"--out {out}: the disk holding {anc} has only {free // 2**20} MiB free (at least "
            f"{need // 2**20} MiB needed); free some space or choose another --out"
        )
    check_not_own_input(out, inputs)


def check_complete(folder: str | Path) -> None:
    """Refuse a folder written by longmill whose run did not finish (no ``stats.json``).

    A folder of folders (``data/synth``) is checked folder by folder. Folders without longmill's
    done-markers (Parquet files from elsewhere) are not judged.
    """
    p = Path(folder)
    if not p.is_dir():
        return
    dirs = (
        [p]
        if (p / MARKER_DIR).is_dir() or any(p.glob(PART_GLOB))
        else sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
    )
    for d in dirs:
        if (d / MARKER_DIR).is_dir() and not (d / STATS_FILE).exists():
            raise LongmillError(
                f"{d} is incomplete: it has no {STATS_FILE}, the marker written when a run finishes (its run "
                "crashed, was stopped, or other shards are still running); re-run the command that writes it "
                "to finish it, then use it as input"
            )


def clean_temp_files(folder: Path) -> int:
    """Remove temporary files that a killed writer left (``.NAME.*.tmp``); returns how many."""
    n = 0
    for d in (folder, folder / MARKER_DIR):
        for p in d.glob(".*.tmp") if d.is_dir() else ():
            p.unlink(missing_ok=True)
            n += 1
    if n:
        log.info("%s: removed %d leftover temporary file(s)", folder, n)
    return n


def is_part_entry(name: str) -> bool:
    """The entries of a part folder that belong to longmill (what a replacing run may delete)."""
    return (
        (name.startswith("part-") and name.endswith(".parquet"))
        or name in (MARKER_DIR, STATS_FILE)
        or (name.startswith(".") and name.endswith(".tmp"))
    )


def promote(staging: Path, out: Path, owned: Callable[[str], bool], marker: str = STATS_FILE) -> None:
    """Move a finished staging folder's entries into ``out``, replacing ``out``'s entries that ``owned``
    accepts; other entries of ``out`` are kept.

    The completion ``marker`` is removed first and moved in last, so a crash half way leaves a folder that
    reads as incomplete, and the next run finishes the move (:func:`finish_promote`).
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / marker).unlink(missing_ok=True)
    for entry in list(out.iterdir()):
        if owned(entry.name):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    for entry in list(staging.iterdir()):
        if entry.name != marker:
            os.replace(entry, out / entry.name)
    os.replace(staging / marker, out / marker)
    shutil.rmtree(staging, ignore_errors=True)
    log.info("%s: replaced with the finished run", out)


def finish_promote(out: Path, owned: Callable[[str], bool], marker: str = STATS_FILE) -> None:
    """Complete a swap that a killed run left half done (its staging folder holds the completion marker)."""
    staging = staging_path(out)
    if (staging / marker).exists():
        log.warning("%s: finishing the replacement that an interrupted run left half done", out)
        promote(staging, out, owned, marker)


def fresh_staging(out: Path) -> Path:
    """An empty staging folder for ``out`` (what a previous attempt left there is removed)."""
    staging = staging_path(out)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


class PartWriter:
    """Writes the parts of one run into ``folder`` with done-markers, and finalises ``stats.json``.

    When ``folder`` holds the parts of another run (other settings) and ``overwrite`` is set, or when
    ``fresh`` is set, the run is written to a staging folder and replaces ``folder``'s parts only once
    ``stats.json`` is written, so a failing re-run never destroys a good output. The caller holds the
    folder's :class:`OutputLock`.

    Args:
        folder: the artifact folder.
        fingerprint: identifies the run's configuration; a folder holding parts of another
            configuration is an error unless ``overwrite``.
        num_parts: how many parts the whole run has (over all ranks).
        overwrite: replace the parts of a run with other settings (once this run has finished).
        fresh: write every part again, from scratch (the folder's parts are replaced at the end).
        sharded: this is one rank of several writing into the folder (they cannot replace it together).
    """

    def __init__(
        self,
        folder: str | Path,
        fingerprint: str,
        num_parts: int,
        overwrite: bool = False,
        fresh: bool = False,
        sharded: bool = False,
    ):
        self.out = Path(folder)
        self.fingerprint = fingerprint
        self.num_parts = num_parts
        finish_promote(self.out, is_part_entry)
        foreign = self._foreign(self.out)
        if fresh:
            self.folder = fresh_staging(self.out)
        elif foreign:
            if not overwrite:
                raise LongmillError(
                    f"{self.out} holds parts of a run with other settings ({foreign}); use "
                    "another --out folder or pass --overwrite"
                )
            if sharded:
                raise LongmillError(
                    f"{self.out} holds parts of a run with other settings ({foreign}); the ranks of "
                    "a sharded run cannot replace it together: remove it first or use another --out"
                )
            self.folder = staging_path(self.out)
            if self._foreign(self.folder):
                self.folder = fresh_staging(self.out)
            log.info(
                "%s holds another run (%s); writing to %s and replacing it when done",
                self.out,
                foreign,
                self.folder,
            )
        else:
            self.folder = self.out
        self.staged = self.folder != self.out
        self.markers = self.folder / MARKER_DIR
        self.folder.mkdir(parents=True, exist_ok=True)
        self.markers.mkdir(exist_ok=True)
        clean_temp_files(self.folder)
        stray = [
            p.name for p in self.folder.glob(PART_GLOB) if not (self.markers / (p.stem + ".json")).exists()
        ]
        if stray:
            log.info(
                "%s: %d part(s) without a done-marker will be rewritten: %s",
                self.folder,
                len(stray),
                ", ".join(sorted(stray)[:5]),
            )

    def _foreign(self, folder: Path) -> str | None:
        """A description of another run's parts in ``folder``, or None."""
        for m in sorted((folder / MARKER_DIR).glob("*.json")):
            try:
                data = json.loads(m.read_text())
            except (OSError, ValueError):
                return f"{m.name}: unreadable done-marker"
            if data.get("fingerprint") != self.fingerprint:
                return f"{m.name}: {data.get('config_summary', 'unknown')}"
        return None

    def marker_path(self, index: int) -> Path:
        return self.markers / (Path(part_name(index)).stem + ".json")

    def is_done(self, index: int) -> bool:
        m = self.marker_path(index)
        if not m.exists() or not (self.folder / part_name(index)).exists():
            return False
        return json.loads(m.read_text()).get("fingerprint") == self.fingerprint

    def write(
        self, index: int, table: pa.Table, part_stats: dict[str, Any], config_summary: str = ""
    ) -> Path:
        """Write part ``index`` atomically, then its done-marker."""
        path = self.folder / part_name(index)
        write_table_atomic(table, path)
        atomic_write_json(
            self.marker_path(index),
            {
                "fingerprint": self.fingerprint,
                "part": index,
                "config_summary": config_summary,
                "stats": part_stats,
            },
        )
        return path

    def done_stats(self) -> list[dict[str, Any]]:
        """The stats of every finished part, in part order."""
        out = []
        for i in range(self.num_parts):
            if self.is_done(i):
                out.append(json.loads(self.marker_path(i).read_text())["stats"])
        return out

    def all_done(self) -> bool:
        return all(self.is_done(i) for i in range(self.num_parts))

    def write_stats(self, stats: dict[str, Any]) -> Path:
        """Write ``stats.json`` (the run is complete) and, for a staged run, swap it into place."""
        atomic_write_json(self.folder / STATS_FILE, stats)
        if self.staged:
            promote(self.folder, self.out, is_part_entry)
            self.folder, self.staged = self.out, False
            self.markers = self.folder / MARKER_DIR
        return self.out / STATS_FILE
