"""QA metrics: EM, sub-EM, F1/precision/recall (HotpotQA/SQuAD normalisation), judge accuracy,
max(EM, judge), and unbiased pass@k, in a registry that says how each aggregates.

Every metric is scored against every accepted answer and the best score is kept.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from datagen.core.registry import Registry

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = frozenset(string.punctuation)  # ASCII only, as in the official HotpotQA/SQuAD scripts
_SPECIAL = ("yes", "no", "noanswer")


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


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k = 1 - C(n-c, k) / C(n, k) for n samples of which c are correct.

    Computed as a product so that it stays exact for large n.

    Example:
        >>> pass_at_k(10, 3, 1)
        0.3
        >>> round(pass_at_k(10, 3, 5), 4)
        0.9167
        >>> pass_at_k(4, 0, 2), pass_at_k(4, 3, 2)
        (0.0, 1.0)
    """
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"pass@k needs 0 <= c <= n and k >= 1, got n={n}, c={c}, k={k}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per prompt, got {n}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return round(1.0 - prod, 12)


@dataclass(frozen=True)
class Metric:
    """A per-sample metric.

    Args:
        name: the registry name (the key in metrics.json).
        fn: ``(prediction, answers) -> float``.
        higher_is_better: for reports and model selection.
        aggregation: how per-sample values combine (``mean``).
    """

    name: str
    fn: Callable[[str | None, Sequence[str]], float]
    higher_is_better: bool = True
    aggregation: str = "mean"


METRICS: Registry[Metric] = Registry("metric")
for _m in (
    Metric("em", exact_match),
    Metric("sub_em", sub_exact_match),
    Metric("f1", f1),
    Metric("precision", precision),
    Metric("recall", recall),
):
    METRICS.add(_m.name, _m)

#: Metrics that need the judge; means over every sample, a failed judge call counting at its rule score.
JUDGE_METRICS = {
    "judge": "judge accuracy (1 when the judge says the prediction means a gold answer; a failed "
    "judge call counts at the rule's EM)",
    "max_em_judge": "max(EM, judge) per sample, as QwenLong-L1 reports (a failed judge call "
    "counts at the rule's EM)",
    "max_em_judge_bound": "the most max_em_judge could be had every failed judge call been YES",
}


def score_prediction(prediction: str | None, answers: Sequence[str]) -> dict[str, float]:
    """Every registered rule metric for one prediction."""
    return {name: METRICS.get(name).fn(prediction, answers) for name in METRICS.names()}
