"""Type aliases shared by the packages."""

from __future__ import annotations

from collections.abc import Callable

#: chat messages, ``[{"role": ..., "content": ...}, ...]``
Messages = list[dict[str, str]]
#: a progress callback, called with the number of items just finished
Progress = Callable[[int], None]
