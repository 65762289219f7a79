"""Difficulty: a documented combination of cheap features, or 1 - pass rate of a model over k rollouts.

Feature difficulty (``difficulty_source = "features:v1"``), each term scaled to 0..1:

    0.30 * length        prompt_tokens / the largest bin edge
  + 0.20 * hops          (hops - 1) / 3, clipped          (2 hops: 0.33, 4 hops: 1.0)
  + 0.15 * chains        num_chains / 16, clipped          (KeyChain decoys; 0 for long QA)
  + 0.20 * retrieval     mean BM25 rank percentile of the gold documents (0 = ranked first)
  + 0.10 * middle        1 - 2 * |mean gold depth - 0.5|   (the middle is where models look least)
  + 0.05 * no_shortcut   1 - the answer's word overlap with the question

Model difficulty (``difficulty_source = "pass_rate:<model>:k=<k>:<rule>"``) is 1 - the share of k
sampled completions whose extracted answer the rule accepts (``sub_em`` by default, the rule part of the
training reward), generated through eval's backends (hf on CPU, vllm on GPU, or an OpenAI-compatible
server). Rollouts are appended to a predictions file, so an interrupted scoring run resumes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eval.data import EvalItem
from eval.metrics import METRICS
from eval.reward import extract_answer
from eval.run import GenerateConfig, generate_predictions
from eval.scoring import read_predictions
from longmill.errors import LongmillError

log = logging.getLogger(__name__)

FEATURES_VERSION = "features:v1"
WEIGHTS = {
    "length": 0.30,
    "hops": 0.20,
    "chains": 0.15,
    "retrieval": 0.20,
    "middle": 0.10,
    "no_shortcut": 0.05,
}


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


def feature_difficulty(f: dict[str, Any], max_tokens: int) -> float:
    """The feature difficulty of one feature record (see the module docstring).

    Example:
        >>> f = dict(prompt_tokens=60_000, hops=4, num_chains=16, bm25_rank_pct=1.0, middleness=1.0, answer_overlap=0.0)
        >>> feature_difficulty(f, 60_000)
        1.0
    """
    terms = {
        "length": _clip(f["prompt_tokens"] / max(max_tokens, 1)),
        "hops": _clip((f["hops"] - 1) / 3),
        "chains": _clip(f["num_chains"] / 16),
        "retrieval": _clip(f["bm25_rank_pct"]),
        "middle": _clip(f["middleness"]),
        "no_shortcut": _clip(1.0 - f["answer_overlap"]),
    }
    return round(sum(WEIGHTS[k] * v for k, v in terms.items()), 6)


def pass_rates(
    items: list[EvalItem],
    gen: GenerateConfig,
    predictions: Path,
    rule: str = "sub_em",
    progress: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """``{uid: pass rate}`` over ``gen.n`` rollouts per item, judged by ``rule`` on the extracted answer.

    Args:
        items: the samples to score.
        gen: the model, backend and sampling (``gen.n`` is k).
        predictions: the JSONL file rollouts are appended to (resumable).
        rule: a metric of :data:`eval.metrics.METRICS`; a completion passes when it scores 1.
        progress: called with the number of prompts finished.
    """
    metric = METRICS.get(rule)
    if gen.n < 2:
        raise LongmillError(f"difficulty from a model needs k >= 2 rollouts per sample, got k={gen.n}")
    predictions.parent.mkdir(parents=True, exist_ok=True)
    counts = generate_predictions(items, gen, predictions, progress=progress)
    log.info("difficulty rollouts: %s", counts)
    preds = read_predictions(predictions)
    out: dict[str, float] = {}
    failed = 0
    for it in items:
        comps = preds.get(it.uid)
        if not comps:
            failed += 1
            continue
        passed = sum(metric.fn(extract_answer(c), it.answers) >= 1.0 for c in comps)
        out[it.uid] = passed / len(comps)
    if failed:
        log.warning(
            "%d sample(s) have no rollouts (generation failed); they keep their feature difficulty", failed
        )
    return out
