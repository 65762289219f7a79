"""longmill's reward for verl, in one file that needs nothing but the Python standard library.

verl loads ``custom_reward_function.path`` by file path inside its own workers, whose environment has verl's
pins (transformers < 5.11 for verl 0.9.1) and usually not longmill. So this file imports nothing from
longmill: ``train verl-config`` copies it next to the generated commands, and verl's
``reward.custom_reward_function`` points at the copy. It mirrors longmill's reward exactly, and
``tests/train/test_verl.py`` pins it to the originals:

- answer extraction: :func:`eval.extract.extract_answer`;
- the rule: ``em``, ``bounded_sub_em`` and ``sub_em`` (:mod:`eval.metrics`, :func:`train.rewards.rule_scorer`);
- the judge prompt and verdict parsing: :func:`eval.judge.build_judge_messages`, :func:`eval.judge.parse_verdict`.

The judge is asked (an OpenAI-compatible ``/chat/completions``, greedy, 8 tokens) only when the rule misses.
Every call is bounded (``judge_timeout`` seconds, ``judge_max_retries`` retries), and after
``judge_breaker_failures`` failures in a row the judge is skipped for ``judge_breaker_cooldown`` seconds, so a
judge that is down never stalls training. verl cannot skip a sample, so a failed judge leaves the rule's
score and is reported as ``judge_failed`` in verl's reward metrics.

Returned keys: ``score`` (what verl's DAPO reward manager shapes with the overlong penalty), ``acc`` (the
correctness that ``algorithm.filter_groups.metric=acc`` filters on), ``rule`` and ``judge_failed``.
"""

from __future__ import annotations

import json
import re
import string
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

ANSWER_PREFIX = "Therefore, the answer is"  # datagen.prompts.ANSWER_PREFIX

# -- extraction (eval/extract.py) ------------------------------------------------------------------------
_THINK_END = "</think>"
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
    """The final answer in a model output, or None.

    Example:
        >>> extract_answer("<think>Paris?</think>Therefore, the answer is **Lyon**.")
        'Lyon'
    """
    if not text:
        return None
    if _THINK_END in text:
        text = text.rsplit(_THINK_END, 1)[1]
    candidates: list[tuple[int, str]] = list(_boxed(text))
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


# -- rules (eval/metrics.py, train/rewards.py) -----------------------------------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = frozenset(string.punctuation)
_SPECIAL = ("yes", "no", "noanswer")
HEDGES = frozenset({"or", "and", "either", "both", "maybe", "possibly", "perhaps", "nor"})


def normalize_answer(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _best(prediction: str | None, answers: Sequence[str], fn: Callable[[str, str], float]) -> float:
    if prediction is None or not answers:
        return 0.0
    return max(fn(prediction, a) for a in answers)


def exact_match(prediction: str | None, answers: Sequence[str]) -> float:
    return _best(prediction, answers, lambda p, a: float(normalize_answer(p) == normalize_answer(a)))


def _contains(longer: list[str], shorter: list[str]) -> bool:
    n = len(shorter)
    return n > 0 and any(longer[i : i + n] == shorter for i in range(len(longer) - n + 1))


def sub_exact_match(prediction: str | None, answers: Sequence[str]) -> float:
    def one(p: str, a: str) -> float:
        np_, na = normalize_answer(p), normalize_answer(a)
        if na in _SPECIAL or np_ in _SPECIAL:
            return float(np_ == na)
        pt, at = np_.split(), na.split()
        return float(_contains(pt, at) or _contains(at, pt))

    return _best(prediction, answers, one)


def bounded_sub_exact_match(
    prediction: str | None, answers: Sequence[str], max_extra_tokens: int = 2
) -> float:
    if prediction is None:
        return 0.0
    words = normalize_answer(prediction).split()
    for a in answers:
        gold = normalize_answer(a).split()
        n = len(gold)
        for i in range(len(words) - n + 1 if n else 0):
            if words[i : i + n] == gold:
                extra = words[:i] + words[i + n :]
                if len(extra) <= max_extra_tokens and not HEDGES.intersection(extra):
                    return 1.0
    return 0.0


RULES = ("em", "bounded_sub_em", "sub_em")


def rule_score(rule: str, prediction: str | None, answers: Sequence[str], max_extra_tokens: int = 2) -> float:
    if rule == "em":
        return exact_match(prediction, answers)
    if rule == "sub_em":
        return sub_exact_match(prediction, answers)
    if rule == "bounded_sub_em":
        return bounded_sub_exact_match(prediction, answers, max_extra_tokens)
    raise ValueError(f"unknown reward rule {rule!r}; valid: {', '.join(RULES)}")


# -- judge (eval/judge.py) -------------------------------------------------------------------------------
JUDGE_SYSTEM_PROMPT = (
    "You are a strict grader of short answers. You are given a question, one or more gold answers, and a "
    "predicted answer. Decide whether the prediction means the same as at least one gold answer, as an "
    "answer to this question. Differences in capitalisation, articles, punctuation, word order, "
    "abbreviations, or extra words that do not change the answer are acceptable. A prediction that is "
    "vaguer, names a different entity or value, hedges between several answers, or contradicts the gold "
    "answers is wrong. Reply with exactly one word: YES or NO."
)
JUDGE_QUESTION = (
    "Does the prediction mean the same as any gold answer? Reply with exactly one word: YES or NO."
)
_VERDICT = re.compile(r"^[\W_]*(?:verdict[\W_]*)?(yes|no)[\W_]*$", re.IGNORECASE)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def build_judge_messages(question: str, prediction: str, golds: Sequence[str]) -> list[dict[str, str]]:
    gold_lines = "\n".join(f"- {_one_line(g)}" for g in golds)
    user = (
        f"Question: {_one_line(question)}\nGold answers:\n{gold_lines}\n"
        f"Prediction: {_one_line(prediction)}\n\n{JUDGE_QUESTION}"
    )
    return [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_verdict(text: str | None) -> bool | None:
    if not text:
        return None
    if _THINK_END in text:
        text = text.rsplit(_THINK_END, 1)[1]
    m = _VERDICT.match(text.strip())
    if m is None:
        return None
    return m.group(1).lower() == "yes"


class _Breaker:
    """Opens after ``limit`` failures in a row; while open (``cooldown`` seconds) the judge is not called."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.failures = 0
        self.open_until = 0.0

    def is_open(self) -> bool:
        with self.lock:
            return time.monotonic() < self.open_until

    def record(self, ok: bool, limit: int, cooldown: float) -> None:
        with self.lock:
            if ok:
                self.failures = 0
                return
            self.failures += 1
            if self.failures >= limit:
                self.open_until = time.monotonic() + cooldown
                self.failures = 0


_BREAKERS: dict[str, _Breaker] = {}


def ask_judge(
    url: str,
    model: str,
    question: str,
    prediction: str,
    golds: Sequence[str],
    *,
    timeout: float = 30.0,
    max_retries: int = 2,
    api_key: str = "EMPTY",
) -> bool | None:
    """The judge's verdict (True/False), or None when the endpoint failed or replied something unreadable."""
    body = json.dumps(
        {
            "model": model,
            "messages": build_judge_messages(question, prediction, golds),
            "temperature": 0.0,
            "top_p": 1.0,
            "max_tokens": 8,
            "n": 1,
            "seed": 0,
        }
    ).encode()
    endpoint = url.rstrip("/") + "/chat/completions"
    for attempt in range(max_retries + 1):
        req = urllib.request.Request(
            endpoint,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                reply = json.loads(resp.read().decode())["choices"][0]["message"]["content"]
            return parse_verdict(reply)
        except (urllib.error.URLError, TimeoutError, OSError, ValueError, KeyError, IndexError, TypeError):
            if attempt < max_retries:
                time.sleep(min(2.0**attempt, 8.0))
    return None


def _answers(ground_truth: Any) -> list[str]:
    if isinstance(ground_truth, str):
        return [ground_truth]
    if ground_truth is None:
        return []
    return [str(a) for a in list(ground_truth)]  # verl passes numpy arrays


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    rule: str = "em",
    max_extra_tokens: int = 2,
    judge_url: str | None = None,
    judge_model: str = "Qwen/Qwen2.5-1.5B-Instruct",
    judge_timeout: float = 30.0,
    judge_max_retries: int = 2,
    judge_breaker_failures: int = 5,
    judge_breaker_cooldown: float = 60.0,
    **_: Any,
) -> dict[str, float]:
    """verl's ``custom_reward_function``: max(rule, judge) for one response.

    Args:
        data_source, solution_str, ground_truth, extra_info: what verl passes (``extra_info["question"]``
            is the question the judge sees).
        rule: em, bounded_sub_em or sub_em; max_extra_tokens: bounded_sub_em's tolerance.
        judge_url: an OpenAI-compatible base URL (``http://host:8001/v1``); None scores with the rule alone.
        judge_model, judge_timeout, judge_max_retries, judge_breaker_failures, judge_breaker_cooldown: the judge.

    Example:
        >>> compute_score("keychain/hotpotqa", "Therefore, the answer is Ed Wood.", ["Ed Wood", "Edward Wood"])
        {'score': 1.0, 'acc': 1.0, 'rule': 1.0, 'judge_failed': 0.0}
        >>> compute_score("keychain/hotpotqa", "Therefore, the answer is Ed Wood, Tim Burton.", ["Ed Wood"])["score"]
        0.0
    """
    golds = _answers(ground_truth)
    pred = extract_answer(solution_str)
    rule_value = float(rule_score(rule, pred, golds, max_extra_tokens) >= 1.0)
    out = {"score": rule_value, "acc": rule_value, "rule": rule_value, "judge_failed": 0.0}
    if rule_value == 1.0 or pred is None or not judge_url:
        return out
    breaker = _BREAKERS.setdefault(judge_url, _Breaker())
    verdict = None
    if not breaker.is_open():
        question = str((extra_info or {}).get("question", ""))
        verdict = ask_judge(
            judge_url,
            judge_model,
            question,
            pred,
            golds,
            timeout=judge_timeout,
            max_retries=judge_max_retries,
        )
        breaker.record(verdict is not None, judge_breaker_failures, judge_breaker_cooldown)
    if verdict is None:
        out["judge_failed"] = 1.0
    elif verdict:
        out["score"] = out["acc"] = 1.0
    return out
