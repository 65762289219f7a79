"""Answer extraction from model outputs.

The prompt asks for ``Therefore, the answer is X`` (:data:`datagen.prompts.ANSWER_PREFIX`); models also
write ``The answer is X``, ``\\boxed{X}`` or a final ``Answer: X`` line. Reasoning up to ``</think>`` is
dropped first, and the last answer given wins.
"""

from __future__ import annotations

import re

from datagen.prompts import ANSWER_PREFIX

_THINK_END = "</think>"
# "Therefore, the answer is X" / "The answer is X" / "the final answer is: X": X runs to the end of the
# line or to the next such phrase, whichever comes first.
_KEY = r"\bthe\s+(?:final\s+)?answer\s+is\b\s*:?\s*"
_PHRASE = re.compile(
    r"(?:"
    + re.escape(ANSWER_PREFIX.split(",")[0])
    + r",?\s*)?"
    + _KEY
    + r"(?P<a>(?:(?!"
    + _KEY
    + r")[^\n])*)",
    re.IGNORECASE,
)
_ANSWER_LINE = re.compile(
    r"^\s*(?:[*_#>\s]*)(?:final\s+)?answer\s*[*_]*\s*:\s*[*_]*\s*(?P<a>.+?)\s*$", re.IGNORECASE | re.MULTILINE
)
_EMPHASIS = re.compile(r"^(\*\*|\*|__|_|`)(.+)\1$")
_TRAILING = " \t.,;:!。"


def _boxed(text: str) -> list[tuple[int, str]]:
    """Every ``\\boxed{...}`` with balanced braces, as (position, content)."""
    out = []
    for m in re.finditer(r"\\boxed\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append((m.start(), text[m.end() : i - 1]))
    return out


def clean_answer(a: str) -> str:
    """Strip markdown emphasis, surrounding quotes/brackets and trailing punctuation."""
    a = a.strip()
    for _ in range(3):
        before = a
        a = a.strip().rstrip(_TRAILING).strip()
        m = _EMPHASIS.match(a)
        if m:
            a = m.group(2)
        if (
            len(a) >= 2
            and a[0] in "\"'“("
            and a[-1] in "\"'”)"
            and "\"'“(".index(a[0]) == "\"'”)".index(a[-1])
        ):
            a = a[1:-1]
        a = re.sub(r"^\\text\{(.*)\}$", r"\1", a)
        if a == before:
            break
    return a.strip()


def extract_answer(text: str | None) -> str | None:
    """The final answer in a model output, or None when there is none.

    Args:
        text: the completion (a string; chat-style completions are flattened by the caller).

    Example:
        >>> extract_answer("<think>it is Paris? no</think>So... Therefore, the answer is **Lyon**.")
        'Lyon'
        >>> extract_answer("Answer: 1912\\n")
        '1912'
        >>> extract_answer("The answer is \\\\boxed{42}.")
        '42'
        >>> extract_answer("I am not sure.") is None
        True
    """
    if not text:
        return None
    if _THINK_END in text:
        text = text.rsplit(_THINK_END, 1)[1]
    candidates: list[tuple[int, str]] = []
    for pos, content in _boxed(text):
        candidates.append((pos, content))
    for m in _PHRASE.finditer(text):
        a = m.group("a")
        boxed = _boxed(a)
        candidates.append((m.start(), boxed[-1][1] if boxed else a))
    for m in _ANSWER_LINE.finditer(text):
        candidates.append((m.start(), m.group("a")))
    for _, a in sorted(candidates, key=lambda c: c[0], reverse=True):
        a = clean_answer(a)
        if a and a.lower() not in {"(insert answer here)", "insert answer here"}:
            return a
    return None
