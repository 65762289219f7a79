"""longmill's reward rules, once: answer extraction, the rule scores, the judge's prompt and verdict, and
verl's ``compute_score``, in one file that needs nothing but the Python standard library.

Everything that scores an answer uses this file: eval's metrics and scorer (:mod:`eval.metrics`,
:mod:`eval.scoring`), the judge (:mod:`eval.judge` builds its prompt and reads its reply here), curriculum
difficulty, the TRL reward (:class:`train.rewards.HybridQAReward`) and OpenRLHF's. verl loads its reward
function by file path inside its own workers, whose environment has verl's pins and usually not longmill,
so ``train verl-config`` copies this file verbatim (as ``longmill_reward.py``) and points
``reward.custom_reward_function`` at the copy. That is why it imports nothing outside the standard library
(``tests/train/test_reward_table.py`` runs the copy with ``python -I -S``).

- Extraction: :func:`extract_answer` (the prompt asks for ``Therefore, the answer is X``,
  :data:`datagen.prompts.ANSWER_PREFIX`; ``The answer is X``, ``\\boxed{X}`` and a final ``Answer: X`` line
  are read too; reasoning up to ``</think>`` is dropped and the last answer given wins).
- Rules, each against every accepted answer, best kept: :func:`exact_match`, :func:`sub_exact_match`,
  :func:`bounded_sub_exact_match`, :func:`f1` (with :func:`precision` and :func:`recall`), and
  :func:`max_em_judge`; :data:`RULES` names those a reward can use (:func:`rule_scorer`).
- The judge: :func:`build_judge_messages` and :func:`parse_verdict` (one word, or QwenLong-L1's
  ``[[YES]]``).
- verl: :func:`compute_score`, which asks an OpenAI-compatible judge over HTTP (``urllib``) when the rule
  misses.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import string
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

# -- extraction --------------------------------------------------------------------------------------------

_THINK_END = "</think>"
# "Therefore, the answer is X" (datagen.prompts.ANSWER_PREFIX) / "The answer is X" / "the final answer is: X":
# X runs to the end of the line or to the next such phrase, whichever comes first.
_KEY = r"\bthe\s+(?:final\s+)?answer\s+is\b\s*:?\s*"
_PHRASE = re.compile(r"(?:Therefore,?\s*)?" + _KEY + r"(?P<a>(?:(?!" + _KEY + r")[^\n])*)", re.IGNORECASE)
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
        text: the completion (a string; see :func:`completion_text` for chat-style completions).

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


def completion_text(completion: Any) -> str:
    """The text of a completion: a string, or a list of chat messages (their contents joined).

    Example:
        >>> completion_text([{"role": "assistant", "content": "Therefore, the answer is Paris."}])
        'Therefore, the answer is Paris.'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence):
        return "".join(m.get("content", "") or "" for m in completion if isinstance(m, dict))
    raise TypeError(f"a completion must be a string or a list of messages, got {type(completion).__name__}")


def as_answer_list(ground_truth: Any) -> list[str]:
    """Accepted answers from a string, a list, or a numpy array (verl passes arrays).

    Example:
        >>> as_answer_list("Paris"), as_answer_list(("Paris", "Lutetia")), as_answer_list(None)
        (['Paris'], ['Paris', 'Lutetia'], [])
    """
    if isinstance(ground_truth, str):
        return [ground_truth]
    if ground_truth is None:
        return []
    return [str(a) for a in list(ground_truth)]


# -- rules ---------------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = frozenset(string.punctuation)  # ASCII only, as in the official HotpotQA/SQuAD scripts
_SPECIAL = ("yes", "no", "noanswer")
#: Words that join alternatives: an answer that adds them hedges between candidates.
HEDGES = frozenset({"or", "and", "either", "both", "maybe", "possibly", "perhaps", "nor"})


def normalize_answer(s: str) -> str:
    """Lower-case, drop ASCII punctuation, drop articles, collapse whitespace (HotpotQA's normalisation).

    Example:
        >>> normalize_answer("The  U.S.A.!")
        'usa'
        >>> normalize_answer("Café au lait")
        'café au lait'
    """
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _best(prediction: str | None, answers: Sequence[str], fn: Callable[[str, str], float]) -> float:
    if prediction is None or not answers:
        return 0.0
    return max(fn(prediction, a) for a in answers)


def exact_match(prediction: str | None, answers: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised accepted answer.

    Example:
        >>> exact_match("the Beatles", ["Beatles", "The Fab Four"])
        1.0
        >>> exact_match(None, ["x"])
        0.0
    """
    return _best(prediction, answers, lambda p, a: float(normalize_answer(p) == normalize_answer(a)))


def _contains(longer: list[str], shorter: list[str]) -> bool:
    n = len(shorter)
    return n > 0 and any(longer[i : i + n] == shorter for i in range(len(longer) - n + 1))


def sub_exact_match(prediction: str | None, answers: Sequence[str]) -> float:
    """1.0 when prediction and an answer contain one another, as whole normalised words.

    Containment is on word boundaries so that "no" does not match inside "nobody"; yes/no answers
    must match exactly, as in F1.

    Example:
        >>> sub_exact_match("It was Marie Curie, in 1903", ["Marie Curie"])
        1.0
        >>> sub_exact_match("no", ["nobody"])
        0.0
    """

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
    """1.0 when the prediction contains an accepted answer (whole normalised words) and adds at most
    ``max_extra_tokens`` other words, none of which hedges ("or", "and", "either", ...).

    Example:
        >>> bounded_sub_exact_match("Ed Wood (the director)", ["Ed Wood"])
        1.0
        >>> bounded_sub_exact_match("Ed Wood, Tim Burton, Johnny Depp", ["Ed Wood"])
        0.0
        >>> bounded_sub_exact_match("Ed Wood or Burton", ["Ed Wood"])
        0.0
    """
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


def f1_precision_recall(prediction: str, answer: str) -> tuple[float, float, float]:
    """Token F1, precision and recall against one answer (HotpotQA's rules for yes/no/noanswer).

    Example:
        >>> f1_precision_recall("Marie Curie", "Curie")
        (0.6666666666666666, 0.5, 1.0)
        >>> f1_precision_recall("yes", "no")
        (0.0, 0.0, 0.0)
    """
    p, a = normalize_answer(prediction), normalize_answer(answer)
    if (p in _SPECIAL or a in _SPECIAL) and p != a:
        return 0.0, 0.0, 0.0
    pt, at = p.split(), a.split()
    same = sum((Counter(pt) & Counter(at)).values())
    if same == 0:
        return 0.0, 0.0, 0.0
    precision, recall = same / len(pt), same / len(at)
    return 2 * precision * recall / (precision + recall), precision, recall


def f1(prediction: str | None, answers: Sequence[str]) -> float:
    """Best token F1 over the accepted answers.

    Example:
        >>> round(f1("Marie Curie", ["Curie", "Marie Skłodowska Curie"]), 3)
        0.8
    """
    return _best(prediction, answers, lambda p, a: f1_precision_recall(p, a)[0])


def precision(prediction: str | None, answers: Sequence[str]) -> float:
    """Best token precision over the accepted answers.

    Example:
        >>> precision("Marie Curie", ["Curie"])
        0.5
    """
    return _best(prediction, answers, lambda p, a: f1_precision_recall(p, a)[1])


def recall(prediction: str | None, answers: Sequence[str]) -> float:
    """Best token recall over the accepted answers.

    Example:
        >>> recall("Curie", ["Marie Curie"])
        0.5
    """
    return _best(prediction, answers, lambda p, a: f1_precision_recall(p, a)[2])


def max_em_judge(em: float, judge: float | None) -> float:
    """max(EM, judge) as QwenLong-L1 reports it; a failed judge call (None) leaves the rule's score.

    A judge failure must never raise a metric: the judge is only asked where EM missed, so leaving
    failed calls out of a mean would drop only wrong answers from it.

    Example:
        >>> max_em_judge(1.0, None), max_em_judge(0.0, 1.0), max_em_judge(0.0, None)
        (1.0, 1.0, 0.0)
    """
    if em >= 1.0:
        return 1.0
    return em if judge is None else max(em, judge)


#: The rule half of the reward, by name: binary scorers ``(prediction, answers) -> 0.0 | 1.0``.
RULES = ("em", "bounded_sub_em", "sub_em")


def rule_scorer(rule: str, max_extra_tokens: int = 2) -> Callable[[str | None, Sequence[str]], float]:
    """The scorer of ``rule`` (see :data:`RULES`); ``max_extra_tokens`` is ``bounded_sub_em``'s tolerance.

    Raises:
        ValueError: an unknown rule, with the closest valid name.

    Example:
        >>> rule_scorer("bounded_sub_em")("Ed Wood (director)", ["Ed Wood"])
        1.0
    """
    if rule == "em":
        return exact_match
    if rule == "sub_em":
        return sub_exact_match
    if rule == "bounded_sub_em":
        return lambda p, a: bounded_sub_exact_match(p, a, max_extra_tokens)
    close = difflib.get_close_matches(rule, RULES, n=1)
    raise ValueError(
        f"unknown reward rule {rule!r}{f'; did you mean {close[0]!r}?' if close else ''} "
        f"Valid: {', '.join(RULES)}"
    )


# -- the judge's prompt and verdict --------------------------------------------------------------------------

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


def _one_line(text: str) -> str:
    # The prompt is line-structured (one field per line), so field values are kept on one line.
    return " ".join(str(text).split())


def build_judge_messages(question: str, prediction: str, golds: Sequence[str]) -> list[dict[str, str]]:
    """The chat messages that ask the judge about one item.

    Args:
        question: the question the prediction answers.
        prediction: the extracted answer to grade.
        golds: every accepted answer (aliases included).

    Example:
        >>> m = build_judge_messages("Capital of France?", "paris", ["Paris"])
        >>> print(m[1]["content"])
        Question: Capital of France?
        Gold answers:
        - Paris
        Prediction: paris
        <BLANKLINE>
        Does the prediction mean the same as any gold answer? Reply with exactly one word: YES or NO.
    """
    gold_lines = "\n".join(f"- {_one_line(g)}" for g in golds)
    user = (
        f"Question: {_one_line(question)}\nGold answers:\n{gold_lines}\n"
        f"Prediction: {_one_line(prediction)}\n\n{JUDGE_QUESTION}"
    )
    return [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": user}]


_VERDICT = re.compile(r"^[\W_]*(?:verdict[\W_]*)?(yes|no)[\W_]*$", re.IGNORECASE)
#: QwenLong-L1's judge style: free text with the verdict in double brackets ("... [[YES]]").
_BRACKETED = re.compile(r"\[\[\s*(yes|no)\s*\]\]", re.IGNORECASE)


def parse_verdict(text: str | None) -> bool | None:
    """Read the judge's one-word reply: True for YES, False for NO, None for anything else.

    Surrounding whitespace, punctuation and markdown are ignored, as is a ``Verdict:`` label and any
    reasoning up to ``</think>``. A verdict in double brackets anywhere in the reply (QwenLong-L1's judge
    style, "They are equivalent. [[YES]]") is read too. A reply that says more, says both, or says
    nothing is None.

    Args:
        text: the judge model's reply.

    Example:
        >>> [parse_verdict(t) for t in ["YES", " no. ", "**Yes**", "Verdict: NO", "yes no", "maybe", ""]]
        [True, False, True, False, None, None, None]
        >>> [parse_verdict(t) for t in ["They are equivalent. [[YES]]", "[[NO]]", "[[YES]] or [[NO]]"]]
        [True, False, None]
    """
    if not text:
        return None
    if _THINK_END in text:
        text = text.rsplit(_THINK_END, 1)[1]
    bracketed = {v.lower() for v in _BRACKETED.findall(text)}
    if bracketed:
        return bracketed == {"yes"} if len(bracketed) == 1 else None
    m = _VERDICT.match(text.strip())
    if m is None:
        return None
    return m.group(1).lower() == "yes"


# -- verl ------------------------------------------------------------------------------------------------------


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
    """The judge's verdict (True/False) from an OpenAI-compatible ``/chat/completions`` (greedy, 8 tokens),
    or None when the endpoint failed or replied something :func:`parse_verdict` cannot read."""
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
    judge_breaker_cooldown: float = 30.0,
    judge_api_key_env: str | None = "OPENAI_API_KEY",
    **_: Any,
) -> dict[str, float]:
    """verl's ``custom_reward_function``: max(rule, judge) for one response.

    The judge is asked only when the rule misses. Every call is bounded (``judge_timeout`` seconds,
    ``judge_max_retries`` retries), and after ``judge_breaker_failures`` failures in a row the judge is
    skipped for ``judge_breaker_cooldown`` seconds, so a judge that is down never stalls training. verl
    cannot skip a sample, so a failed judge call leaves the rule's score and is reported as ``judge_failed``
    in verl's reward metrics (count it before trusting a run).

    Args:
        data_source, solution_str, ground_truth, extra_info: what verl passes (``extra_info["question"]``
            is the question the judge sees).
        rule: em, bounded_sub_em or sub_em; max_extra_tokens: bounded_sub_em's tolerance.
        judge_url: an OpenAI-compatible base URL (``http://host:8001/v1``); None scores with the rule alone.
        judge_model, judge_timeout, judge_max_retries, judge_breaker_failures, judge_breaker_cooldown,
            judge_api_key_env: the judge (``train verl-config`` passes every one from the training config's
            judge, resolved as TRL's reward resolves it; these defaults are :class:`eval.judge.JudgeConfig`'s,
            which ``tests/train/test_reward_table.py`` pins). The key is read from the environment variable
            named by ``judge_api_key_env`` (unset: none is sent).

    Returns:
        ``score`` (what verl's DAPO reward manager shapes with the overlong penalty), ``acc`` (the
        correctness that ``algorithm.filter_groups.metric=acc`` filters on), ``rule`` and ``judge_failed``.

    Example:
        >>> compute_score("keychain/hotpotqa", "Therefore, the answer is Ed Wood.", ["Ed Wood", "Edward Wood"])
        {'score': 1.0, 'acc': 1.0, 'rule': 1.0, 'judge_failed': 0.0}
        >>> compute_score("keychain/hotpotqa", "Therefore, the answer is Ed Wood, Tim Burton.", ["Ed Wood"])["score"]
        0.0
    """
    golds = as_answer_list(ground_truth)
    pred = extract_answer(solution_str)
    rule_value = float(rule_scorer(rule, max_extra_tokens)(pred, golds) >= 1.0)
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
            api_key=os.environ.get(judge_api_key_env or "") or "EMPTY",
        )
        breaker.record(verdict is not None, judge_breaker_failures, judge_breaker_cooldown)
    if verdict is None:
        out["judge_failed"] = 1.0
    elif verdict:
        out["score"] = out["acc"] = 1.0
    return out
