"""The options of the synthetic source, declared once: the fields of :class:`SyntheticConfig`.

A field's type drives the coercion of CLI strings, its ``help`` the docs (the Args of
:class:`SyntheticConfig` and the options of the source), and the field list the valid option names
and the unknown-option error.
"""

from __future__ import annotations

import inspect
import textwrap
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from longmill.errors import LongmillError


def _option(default: Any, help: str) -> Any:
    """A config field that is also a source option, documented by ``help``."""
    return field(default=default, metadata={"help": help})


@dataclass
class SyntheticConfig:
    """What :func:`iter_synthetic_triplets` generates.

    Every field is also a source option (``--source-opt name=value``); strings are coerced to the
    field's type.
    """

    num_triplets: int = _option(2000, "how many triplets.")
    seed: int = _option(0, "the world seed (ids are ``synthetic:<seed>-<i>``).")
    min_hops: int = _option(
        2,
        "the fewest gold documents per question (1-4; 1 gives single-document lookups, an easy option "
        "for small models: the default world asks 2-4 hop questions).",
    )
    max_hops: int = _option(4, "the most gold documents per question (1-4, >= ``min_hops``).")
    comparison_share: float = _option(
        0.35, "the share of comparison questions (the rest are bridge questions)."
    )
    per_region: int = _option(
        100,
        "triplets drawn from each region of about 200 entities (1-500); triplet ``i`` lives in region "
        "``i // per_region``.",
    )
    min_distractors: int = _option(6, "the fewest distractor documents per triplet.")
    max_distractors: int = _option(12, "the most distractor documents per triplet.")

    def __post_init__(self) -> None:
        for f in fields(self):
            setattr(self, f.name, _COERCE[_TYPES[f.name]](f.name, getattr(self, f.name)))
        if self.num_triplets < 0:
            raise LongmillError(f"synthetic: num_triplets must be >= 0, got {self.num_triplets}")
        if not 1 <= self.min_hops <= self.max_hops <= 4:
            raise LongmillError(
                f"synthetic: need 1 <= min_hops <= max_hops <= 4, got min_hops={self.min_hops}, "
                f"max_hops={self.max_hops}"
            )
        if not 0.0 <= self.comparison_share <= 1.0:
            raise LongmillError(f"synthetic: comparison_share must be in [0, 1], got {self.comparison_share}")
        if not 1 <= self.per_region <= 500:
            raise LongmillError(
                f"synthetic: per_region must be in [1, 500] (a region holds about 200 entities), "
                f"got {self.per_region}"
            )
        if not 0 <= self.min_distractors <= self.max_distractors <= 30:
            raise LongmillError(
                "synthetic: need 0 <= min_distractors <= max_distractors <= 30, got "
                f"min_distractors={self.min_distractors}, max_distractors={self.max_distractors}"
            )

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """Every option name, in field order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def options_doc(cls, indent: str = "    ") -> str:
        """One ``name: help (default ...)`` entry per option, for docstrings."""
        out = []
        for f in fields(cls):
            entry = f"{f.name}: {f.metadata['help']} Default: {f.default!r}."
            out.append(textwrap.fill(entry, 104, initial_indent=indent, subsequent_indent=indent + "    "))
        return "\n".join(out)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> SyntheticConfig:
        """A config from source options (strings from the CLI or typed values); unknown keys are an error."""
        names = set(cls.option_names())
        unknown = sorted(set(options) - names)
        if unknown:
            raise LongmillError(
                f"synthetic: unknown option(s) {unknown}; valid options: {', '.join(sorted(names))}"
            )
        return cls(**options)


def _as_int(name: str, value: Any) -> int:
    """``value`` as an int, accepting integral floats and numeric strings ("5_000"); a clear error otherwise."""
    if isinstance(value, bool):
        value = str(value)  # True is an int in Python, but never a meaningful count
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip().replace("_", ""))
        except ValueError:
            pass
    raise LongmillError(
        f"synthetic: option {name}={value!r} is not an integer; pass e.g. --source-opt {name}=4"
    )


def _as_float(name: str, value: Any) -> float:
    """``value`` as a float, accepting numeric strings; a clear error otherwise."""
    if isinstance(value, bool):
        value = str(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise LongmillError(
        f"synthetic: option {name}={value!r} is not a number; pass e.g. --source-opt {name}=0.5"
    )


#: the coercion of each field type
_COERCE: dict[type, Callable[[str, Any], Any]] = {int: _as_int, float: _as_float}
#: each field's type (resolved once: the annotations are strings under ``from __future__ import annotations``)
_TYPES: dict[str, type] = typing.get_type_hints(SyntheticConfig)

SyntheticConfig.__doc__ = (
    f"{inspect.cleandoc(SyntheticConfig.__doc__ or '')}\n\nArgs:\n{SyntheticConfig.options_doc()}\n"
)
