"""QA metrics in a registry that says how each aggregates: EM, sub-EM, F1/precision/recall and max(EM, judge)
(the rules themselves live in :mod:`eval.reward`, which the training reward and verl's copy share), and
unbiased pass@k.

Every metric is scored against every accepted answer and the best score is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from eval.reward import exact_match, f1, precision, recall, sub_exact_match
from longmill.registry import Registry


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
