"""Typed errors. Every message says what was wrong and what to do about it."""

from __future__ import annotations


class LongmillError(Exception):
    """Base class for errors that are the user's to fix (bad input, bad options)."""


class UnknownNameError(LongmillError, KeyError):
    """A registry lookup failed; the message lists the valid names and a close match."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class RecordError(LongmillError):
    """One input record is malformed.

    Args:
        path: the file the record came from.
        record: the record's position (0-based line or list index) or id.
        field: the offending field, dotted for nested fields (``context[3][1]``).
        reason: what is wrong with it.
    """

    def __init__(self, path: str, record: int | str, field: str, reason: str):
        self.path, self.record, self.field, self.reason = str(path), record, field, reason
        super().__init__(f"{path}: record {record}: field '{field}': {reason}")


class LengthBudgetError(LongmillError):
    """The fixed parts of a sample (instructions, chains, gold documents) do not fit the length.

    Args:
        reason: what does not fit.
        need: the smallest length that holds it, when known; the message then names it.
        advice: what else helps, appended after the length (", or fewer chains/hops").
    """

    def __init__(self, reason: str, need: int | None = None, advice: str = "", made: bool = False):
        self.reason, self.need, self.advice = reason, need, advice
        found = ", the smallest at which sample 0 was made" if made else ""
        super().__init__(
            reason if need is None else f"{reason}; use a larger --length (at least {need}{found}){advice}"
        )

    def with_need(self, need: int) -> LengthBudgetError:
        """The same error naming the length at which a sample was then made."""
        return LengthBudgetError(self.reason, need, self.advice, made=True)


class SourceTooSmallError(LongmillError):
    """The source cannot supply enough distractor documents or decoy questions."""


class LengthFitError(LongmillError):
    """The fitted prompt could not be brought inside [L*(1-tol), L]; a bug or an odd tokenizer."""
