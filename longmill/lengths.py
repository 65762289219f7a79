"""Token lengths as users write them: ``60k`` = 60,000, ``64ki`` = 65,536, ``4096`` exact."""

from __future__ import annotations

import re

_LENGTH = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(k|ki|m|mi)?\s*$", re.IGNORECASE)
_MULT = {None: 1, "k": 1000, "ki": 1024, "m": 1_000_000, "mi": 1024 * 1024}
_FORMS = "use a positive token count such as 4096, 60k (=60,000) or 64ki (=65,536)"


def parse_length(value: str | int) -> int:
    """Parse a token length.

    Args:
        value: ``"60k"`` (60,000), ``"64ki"`` (65,536), ``"1.5k"`` (1,500) or a plain integer.

    Returns:
        The length in tokens.

    Raises:
        ValueError: for anything else, with the accepted forms in the message.

    Example:
        >>> parse_length("60k"), parse_length("64ki"), parse_length(4096)
        (60000, 65536, 4096)
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid length {value!r}: {_FORMS}")
    if isinstance(value, int):
        n = value
    else:
        m = _LENGTH.match(str(value))
        if not m:
            raise ValueError(f"invalid length {value!r}: {_FORMS}")
        unit = m.group(2).lower() if m.group(2) else None
        exact = float(m.group(1)) * _MULT[unit]
        n = int(round(exact))
        if abs(exact - n) > 1e-6:
            raise ValueError(f"invalid length {value!r}: not a whole number of tokens; {_FORMS}")
    if n <= 0:
        raise ValueError(f"invalid length {value!r}: {_FORMS}")
    return n


def parse_lengths(value: str) -> list[int]:
    """Parse a comma-separated list of lengths (``"20k,40k,60k"``), sorted and de-duplicated."""
    parts = [p for p in str(value).split(",") if p.strip()]
    if not parts:
        raise ValueError(f"invalid length list {value!r}: give e.g. 20k,40k,60k")
    return sorted({parse_length(p) for p in parts})


def format_length(n: int) -> str:
    """The inverse of :func:`parse_length` for display and paths: 60000 -> ``60k``, 65536 -> ``64ki``."""
    if n % 1000 == 0:
        return f"{n // 1000}k"
    if n % 1024 == 0:
        return f"{n // 1024}ki"
    return str(n)
