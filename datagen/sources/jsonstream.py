"""Read the elements of a JSON array one at a time, in bounded memory.

HotpotQA's train file is one 540 MB JSON list; ``json.load`` holds the whole text and every parsed record
at once (several GB). :func:`iter_json_array` keeps one read chunk plus the element being decoded, and
decodes each element with the standard library's C decoder (``JSONDecoder.raw_decode``), so it is as
fast as ``json.load`` and needs no extra dependency (ijson's pure-Python backends are several times
slower, and its C backend needs yajl).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from longmill.errors import LongmillError

#: How much text is read at a time (characters).
CHUNK = 1 << 20
_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class _Reader:
    """A window over a text stream: ``buf[pos:]`` is unread; text before ``buf`` is forgotten."""

    def __init__(self, f: TextIO, path: str | Path, chunk: int):
        self.f, self.path, self.chunk = f, path, chunk
        self.buf = f.read(chunk)
        self.pos = 0
        self.eof = not self.buf
        self.lines_before = 0  # newlines in the forgotten text, for error positions

    def more(self) -> bool:
        """Read more text (at least as much as is unread, so a large element is re-scanned O(log n) times)."""
        if self.eof:
            return False
        text = self.f.read(max(self.chunk, len(self.buf) - self.pos))
        if not text:
            self.eof = True
            return False
        self.lines_before += self.buf.count("\n", 0, self.pos)
        self.buf = self.buf[self.pos :] + text
        self.pos = 0
        return True

    def skip_ws(self) -> str:
        """Skip whitespace; the next character, or "" at the end of the input."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return ""

    def error(self, what: str, at: int | None = None) -> LongmillError:
        at = self.pos if at is None else at
        line = self.lines_before + self.buf.count("\n", 0, at) + 1
        col = at - self.buf.rfind("\n", 0, at)
        return LongmillError(
            f"{self.path}: not valid JSON ({what}: line {line} column {col}); expected a JSON list of records"
        )


def iter_json_array(f: TextIO, path: str | Path, chunk: int = CHUNK) -> Iterator[Any]:
    """Yield the elements of the JSON array that ``f`` holds, in order.

    Args:
        f: a text stream positioned at the array (leading whitespace allowed).
        path: the file name, for errors.
        chunk: how many characters to read at a time.

    Raises:
        LongmillError: the text is not a JSON array (naming the line and column), after yielding the
            elements before the fault.
    """
    r = _Reader(f, path, chunk)
    if r.skip_ws() != "[":
        raise r.error("expected '['")
    r.pos += 1
    first = True
    while True:
        c = r.skip_ws()
        if c == "]" and first:
            r.pos += 1
            break
        if not first:
            if c == "]":
                r.pos += 1
                break
            if c != ",":
                raise r.error("expected ',' or ']'" if c else "unterminated array")
            r.pos += 1
            c = r.skip_ws()
        if not c:
            raise r.error("unterminated array")
        while True:
            try:
                obj, end = _DECODER.raw_decode(r.buf, r.pos)
            except json.JSONDecodeError as e:
                if r.more():  # the element may only be cut by the end of the window
                    continue
                raise r.error(e.msg, e.pos) from None
            if end < len(r.buf) or not r.more():  # a number at the window's end may continue
                break
        r.pos = end
        first = False
        yield obj
        if r.pos > r.chunk:  # forget what was read, keeping memory at about one chunk
            r.lines_before += r.buf.count("\n", 0, r.pos)
            r.buf, r.pos = r.buf[r.pos :], 0
    if r.skip_ws():
        raise r.error("extra data after the array")
