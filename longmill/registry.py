"""One small generic registry for sources, generators, tokenizers, metrics and backends.

An unknown name is an error that lists the valid names and suggests the closest one, as
lm-evaluation-harness does.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from longmill.errors import UnknownNameError

T = TypeVar("T")


def did_you_mean(value: str, choices: list[str] | tuple[str, ...]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices``, or ``""``.

    Example:
        >>> did_you_mean("midle", ["uniform", "middle"])
        "; did you mean 'middle'?"
    """
    close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


class Registry(Generic[T]):
    """A name -> object map whose misses say "did you mean ...?".

    Args:
        kind: what the registry holds, used in messages ("source", "generator", ...).

    Example:
        >>> r = Registry("generator")
        >>> @r.register("keychain")
        ... class KeyChain: ...
        >>> r.get("keychian")
        Traceback (most recent call last):
        ...
        longmill.errors.UnknownNameError: unknown generator 'keychian'; did you mean 'keychain'? Valid generators: keychain
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        self.register(name)(obj)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        names = sorted(self._items)
        hint = did_you_mean(name, names)
        return f"unknown {self.kind} '{name}'{hint} Valid {self.kind}s: {', '.join(names)}"

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
