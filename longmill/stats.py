"""One counting mechanism for every package (as datatrove's ``Stats``), and the base of every filter step.

A :class:`Stats` holds named counters (``requests``, ``skipped``...) and named groups of counters
(``failures_by_reason``), and optionally lists of observed values summarised as min / median / max / mean.
Every update takes a lock, so many threads may count at once; :meth:`to_dict` is a consistent snapshot
that goes straight into ``stats.json``; :meth:`merge` adds another :class:`Stats` (or a dict written by
one) into this one, which is how per-part and per-worker counts are combined.

:func:`filter_rows` is what datatrove's ``BaseFilter.run`` is to its filters: a step answers, for each row
it is given, None (keep) or the reason to drop it, and the base counts the reasons, so no step counts its
own drops by hand.
"""

from __future__ import annotations

import statistics
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

Number = int | float
Rows = TypeVar("Rows")


def summarize(values: Iterable[Number]) -> dict[str, Number] | None:
    """``{min, median, max, mean}`` of ``values`` (mean rounded to 2 places), or None for none.

    Example:
        >>> summarize([3, 1, 2])
        {'min': 1, 'median': 2, 'max': 3, 'mean': 2.0}
    """
    vals = list(values)
    if not vals:
        return None
    return {
        "min": min(vals),
        "median": statistics.median(vals),
        "max": max(vals),
        "mean": round(statistics.fmean(vals), 2),
    }


class Stats:
    """Named counters, groups of counters and value summaries, safe to update from many threads.

    Args:
        initial: counters (numbers) and groups (dicts of numbers) to start from; a key given here is
            always present in :meth:`to_dict`, even at zero. Other keys appear once counted.

    Example:
        >>> s = Stats(requests=0, failures_by_reason={})
        >>> s.add("requests", 2)
        >>> s.add_to("failures_by_reason", "timeout")
        >>> s["requests"], s["retries"]
        (2, 0)
        >>> t = Stats(requests=1, failures_by_reason={"timeout": 1, "http_500": 1})
        >>> s.merge(t).to_dict()
        {'requests': 3, 'failures_by_reason': {'timeout': 2, 'http_500': 1}}
        >>> s.observe("tokens", 10); s.observe("tokens", 30)
        >>> s.to_dict()["tokens"]
        {'min': 10, 'median': 20.0, 'max': 30, 'mean': 20.0}
    """

    def __init__(self, initial: Mapping[str, Any] | None = None, /, **counters: Any):
        self._lock = threading.Lock()
        self._data: dict[str, Any] = {}
        self._values: dict[str, list[Number]] = {}
        self.merge({**(initial or {}), **counters})

    # -- updates -----------------------------------------------------------------------------------
    def add(self, key: str, n: Number = 1) -> None:
        """Add ``n`` to counter ``key`` (created at 0)."""
        with self._lock:
            self._data[key] = self._data.get(key, 0) + n

    def add_to(self, group: str, key: str, n: Number = 1) -> None:
        """Add ``n`` to ``key`` inside the group ``group`` (``failures_by_reason``...)."""
        with self._lock:
            by = self._data.setdefault(group, {})
            by[key] = by.get(key, 0) + n

    def update(self, counts: Mapping[str, Number]) -> None:
        """Add several counters at once (one lock), e.g. ``update({"items": 3, "cache_hits": 1})``."""
        with self._lock:
            for key, n in counts.items():
                self._data[key] = self._data.get(key, 0) + n

    def observe(self, key: str, value: Number) -> None:
        """Record one value of ``key``; :meth:`to_dict` reports their :func:`summarize`."""
        with self._lock:
            self._values.setdefault(key, []).append(value)

    def merge(self, other: Stats | Mapping[str, Any]) -> Stats:
        """Add ``other``'s counters, groups and observed values into this one; returns ``self``.

        A plain mapping is read the way :meth:`to_dict` writes it: numbers are counters, dicts are
        groups, and lists are observed values.
        """
        if isinstance(other, Stats):
            data, values = other._snapshot()
        else:
            data = {k: v for k, v in other.items() if not isinstance(v, list)}
            values = {k: list(v) for k, v in other.items() if isinstance(v, list)}
        with self._lock:
            for key, v in data.items():
                if isinstance(v, Mapping):
                    by = self._data.setdefault(key, {})
                    if not isinstance(by, dict):
                        raise TypeError(f"stats key '{key}' is a counter here and a group in the other stats")
                    for k, n in v.items():
                        by[k] = by.get(k, 0) + n
                else:
                    if isinstance(self._data.get(key), dict):
                        raise TypeError(f"stats key '{key}' is a group here and a counter in the other stats")
                    self._data[key] = self._data.get(key, 0) + v
            for key, vals in values.items():
                self._values.setdefault(key, []).extend(vals)
        return self

    # -- reading -----------------------------------------------------------------------------------
    def _snapshot(self) -> tuple[dict[str, Any], dict[str, list[Number]]]:
        with self._lock:
            data = {k: dict(v) if isinstance(v, dict) else v for k, v in self._data.items()}
            return data, {k: list(v) for k, v in self._values.items()}

    def to_dict(self, *, sort: bool = False, raw_values: bool = False) -> dict[str, Any]:
        """A consistent snapshot: counters, groups (as dicts) and value summaries.

        Args:
            sort: sort the keys (and each group's keys), as ``stats.json`` files list them.
            raw_values: give observed values as lists (to :meth:`merge` later) instead of summaries.
        """
        data, values = self._snapshot()
        if sort:
            data = {k: dict(sorted(v.items())) if isinstance(v, dict) else v for k, v in sorted(data.items())}
        out: dict[str, Any] = dict(data)
        for key, vals in values.items():
            out[key] = vals if raw_values else summarize(vals)
        return dict(sorted(out.items())) if sort else out

    @property
    def total(self) -> Number:
        """The sum of the plain counters (groups and values left out)."""
        with self._lock:
            return sum(v for v in self._data.values() if not isinstance(v, dict))

    def __getitem__(self, key: str) -> Any:
        """A counter's value (0 when never counted) or a copy of a group."""
        with self._lock:
            v = self._data.get(key, 0)
            return dict(v) if isinstance(v, dict) else v

    def __setitem__(self, key: str, value: Number) -> None:
        # ``stats[k] += 1`` works as on a Counter (read and write are separate steps: use add() when
        # several threads count the same key).
        with self._lock:
            self._data[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            v = self._data.get(key, default)
            return dict(v) if isinstance(v, dict) else v

    def __contains__(self, key: object) -> bool:
        return key in self._data or key in self._values

    def __len__(self) -> int:
        return len(self._data) + len(self._values)

    def __iter__(self):
        return iter(self.to_dict())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Stats):
            return self.to_dict(raw_values=True) == other.to_dict(raw_values=True)
        if isinstance(other, Mapping):
            return self.to_dict() == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Stats({self.to_dict()!r})"

    # Pickling (TRL may ship a reward and its stats to worker processes): the lock is not picklable.
    def __getstate__(self) -> dict[str, Any]:
        data, values = self._snapshot()
        return {"_data": data, "_values": values}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._lock = threading.Lock()
        self._data = state["_data"]
        self._values = state["_values"]


def filter_rows(
    rows: Rows, verdicts: Sequence[str | None], stats: Stats, declared: Iterable[str] = ()
) -> Rows:
    """The rows whose verdict is None; every other row's verdict is its drop reason, counted in ``stats``.

    Args:
        rows: a list, or a numpy array of row indices (which stays one).
        verdicts: one per row: None to keep it, else why it is dropped (``above_last_bin``...).
        stats: where each reason is counted (``stats[reason]`` += dropped rows).
        declared: reasons that appear in ``stats`` even when nothing was dropped for them.

    Example:
        >>> drops = Stats()
        >>> filter_rows(["a", "b", "c"], [None, "too_long", None], drops, declared=["empty"])
        ['a', 'c']
        >>> drops.to_dict()
        {'empty': 0, 'too_long': 1}
    """
    stats.update({reason: 0 for reason in declared})
    stats.update(Counter(v for v in verdicts if v is not None))
    keep = [v is None for v in verdicts]
    if isinstance(rows, list):
        return [r for r, k in zip(rows, keep, strict=True) if k]  # type: ignore[return-value]
    return rows[keep] if len(keep) else rows  # type: ignore[index]
