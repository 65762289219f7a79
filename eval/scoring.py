"""Scoring predictions: extraction, rule metrics per completion, the judge where EM misses, pass@k.

A completion whose answer cannot be extracted is wrong (score 0), not unknown. A completion whose judge
call failed keeps its rule score (EM) in every judge metric and every mean: the judge is only asked where
EM missed, so dropping failed calls from a mean would drop only wrong answers and flatter the model.
Failed calls are counted (``judge_failed``, per sample and per group), and ``max_em_judge_bound`` says
how high ``max_em_judge`` could be had every failed call been a YES. A prompt whose generation failed
is not scored at all and is counted separately.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.sources.base import SkipCounter
from eval.data import EvalItem, length_label
from eval.judge import Judge
from eval.metrics import METRICS, pass_at_k, score_prediction
from eval.reward import extract_answer, max_em_judge
from longmill.errors import LongmillError
from longmill.stats import Stats, filter_rows

log = logging.getLogger(__name__)

RULE_METRICS = METRICS.names()


@dataclass
class Scored:
    """Per-sample rows plus the run's counts."""

    rows: list[dict[str, Any]]
    counts: dict[str, Any]
    ks: list[int]
    judged: bool
    metric_names: list[str] = field(default_factory=list)


def default_ks(n: int) -> list[int]:
    """pass@k for k = 1, 2, 4, ... up to n, and n itself."""
    ks = [1]
    while ks[-1] * 2 <= n:
        ks.append(ks[-1] * 2)
    if ks[-1] != n:
        ks.append(n)
    return ks


def read_prediction_records(
    path: str | Path, skips: SkipCounter | None = None
) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` for every line of a predictions.jsonl, validated.

    A torn last line (a killed run) is skipped with a warning. A line that is not valid UTF-8 is skipped
    and counted in ``skips`` (``malformed:<line>``), as the datagen sources count theirs; its prompt then
    has no prediction. A uid that appears twice is an error: which line to believe is not ours to guess
    (a file concatenated twice, or two runs into one file).

    Args:
        path: the predictions file.
        skips: counts the skipped lines (None: a fresh counter, only logged).
    """
    path = Path(path)
    if not path.exists():
        raise LongmillError(f"{path}: no such predictions file")
    skips = skips if skips is not None else SkipCounter()
    out: list[tuple[int, dict[str, Any]]] = []
    first_line: dict[str, int] = {}
    raw_lines = path.read_bytes().splitlines()
    for i, raw in enumerate(raw_lines):
        last = i == len(raw_lines) - 1
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            if last:  # a kill can cut a line inside a character
                log.warning("%s: ignoring a torn last line (an interrupted run)", path)
                continue
            skips.skip(path, i, "<line>", f"not valid UTF-8 (byte {e.start} of the line: {e.reason})")
            continue
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if last:
                log.warning("%s: ignoring a torn last line (an interrupted run)", path)
                continue
            raise LongmillError(f"{path}: line {i + 1}: invalid JSON ({e.msg})") from e
        if not isinstance(rec, dict) or "uid" not in rec or "completions" not in rec:
            raise LongmillError(
                f"{path}: line {i + 1}: field 'uid' or 'completions' missing; expected "
                '{"uid": ..., "completions": [...]}'
            )
        comps = rec["completions"]
        if comps is not None and (not isinstance(comps, list) or not all(isinstance(c, str) for c in comps)):
            raise LongmillError(
                f"{path}: line {i + 1}: field 'completions' must be a list of strings or null"
            )
        uid = str(rec["uid"])
        if uid in first_line:
            raise LongmillError(
                f"{path}: line {i + 1}: uid {uid!r} already has predictions on line "
                f"{first_line[uid]}; each prompt needs exactly one line. Remove the duplicates "
                "(two runs appended into one file?) and score again"
            )
        first_line[uid] = i + 1
        rec["uid"] = uid
        out.append((i + 1, rec))
    if not out:
        log.warning("%s: the predictions file is empty", path)
    return out


def read_predictions(path: str | Path, skips: SkipCounter | None = None) -> dict[str, list[str] | None]:
    """``{uid: completions}`` from a predictions.jsonl (see :func:`read_prediction_records`).

    Each line is ``{"uid": ..., "completions": [k strings]}``; ``"completions": null`` (with an
    ``"error"``) marks a prompt whose generation failed. A duplicate uid is an error; a line that is not
    UTF-8 is skipped and counted in ``skips``.
    """
    return {rec["uid"]: rec["completions"] for _, rec in read_prediction_records(path, skips)}


def _resolve_pass_metric(pass_metric: str | None, judge: Judge | None) -> str:
    pass_metric = pass_metric or ("max_em_judge" if judge else "em")
    if pass_metric not in (*RULE_METRICS, "judge", "max_em_judge"):
        raise LongmillError(
            f"unknown pass metric {pass_metric!r}; use one of {RULE_METRICS + ['judge', 'max_em_judge']}"
        )
    if pass_metric in ("judge", "max_em_judge") and judge is None:
        raise LongmillError(f"pass metric {pass_metric} needs a judge (--judge-url or --judge-backend hf)")
    return pass_metric


def score(
    items: Sequence[EvalItem],
    predictions: dict[str, list[str] | None],
    judge: Judge | None = None,
    progress: Callable[[int], None] | None = None,
    pass_metric: str | None = None,
) -> Scored:
    """Score every item that has predictions.

    The steps take data and return data: items without a scorable prediction are filtered out, each
    under its reason (``missing_predictions``, ``generation_failed``, counted by
    :func:`~longmill.stats.filter_rows`); the rules score the others, the judge is asked where EM
    missed, and each scored item becomes one row.

    Args:
        items: the evaluation items.
        predictions: ``{uid: completions}`` (None = generation failed).
        judge: asked about completions whose EM missed; None scores with rules only.
        progress: called with the number of completions judged.
        pass_metric: which per-completion metric counts as correct for pass@k (default
            ``max_em_judge`` with a judge, else ``em``).
    """
    pass_metric = _resolve_pass_metric(pass_metric, judge)
    known = {it.uid for it in items}
    unknown = [u for u in predictions if u not in known]
    verdicts = [_unscorable(it.uid, predictions) for it in items]
    dropped = Stats()
    scorable = filter_rows(list(items), verdicts, dropped, ["missing_predictions", "generation_failed"])
    missing = [it.uid for it, v in zip(items, verdicts, strict=True) if v == "missing_predictions"]
    _warn_unmatched(missing, unknown, len(items))
    per_item = [_rule_scores(it, predictions[it.uid]) for it in scorable]
    counts: dict[str, Any] = {
        "samples": len(items),
        "predictions": len(predictions),
        "missing_predictions": dropped["missing_predictions"],
        "unknown_uids": len(unknown),
        "generation_failed": dropped["generation_failed"],
        "completions": sum(len(answers) for _, answers, _ in per_item),
        "no_answer_extracted": sum(a is None for _, answers, _ in per_item for a in answers),
    }
    if missing:
        counts["missing_predictions_first"] = missing[:5]
    if unknown:
        counts["unknown_uids_first"] = unknown[:5]
    judged, judge_counts = _judge(per_item, judge, progress)
    counts.update(judge_counts)
    rows, ks = _rows(per_item, judged, judge is not None, pass_metric)
    # Coverage: the share of the items that the metrics are taken over.
    counts["scored"] = len(rows)
    counts["coverage"] = round(len(rows) / len(items), 6) if items else 0.0
    judge_names = ["judge", "max_em_judge", "max_em_judge_bound"] if judge is not None else []
    names = RULE_METRICS + judge_names + [f"pass@{k}" for k in ks]
    counts["pass_metric"] = pass_metric
    return Scored(rows=rows, counts=counts, ks=ks, judged=judge is not None, metric_names=names)


def _unscorable(uid: str, predictions: dict[str, list[str] | None]) -> str | None:
    """Why item ``uid`` cannot be scored, or None when it can."""
    if uid not in predictions:
        return "missing_predictions"
    return "generation_failed" if predictions[uid] is None else None


def _warn_unmatched(missing: list[str], unknown: list[str], n_items: int) -> None:
    if missing:
        log.warning(
            "%d of %d items have no prediction (first: %s); they are not scored",
            len(missing),
            n_items,
            missing[0],
        )
    if unknown:
        log.warning(
            "%d prediction(s) answer uids that are not among the %d items (first: %s); they are ignored. "
            "Are --data and --predictions from the same run (and --limit the same)?",
            len(unknown),
            n_items,
            ", ".join(unknown[:3]),
        )


_PerItem = tuple[EvalItem, list[str | None], list[dict[str, float]]]


def _rule_scores(it: EvalItem, comps: list[str] | None) -> _PerItem:
    """The item, the answer extracted from each completion, and each answer's rule metrics."""
    if not comps:
        raise LongmillError(f"predictions for uid {it.uid} are an empty list; expected k >= 1 completions")
    answers = [extract_answer(c) for c in comps]
    return it, answers, [score_prediction(a, it.answers) for a in answers]


def _judge(
    per_item: list[_PerItem], judge: Judge | None, progress: Callable[[int], None] | None
) -> tuple[dict[tuple[int, int], float | None], dict[str, Any]]:
    """The judge's verdict (None: the call failed) on completion j of item k wherever an answer was
    extracted and EM missed, and the judge's counts (``judge_calls``, ``judge_failed``, ``judge``)."""
    if judge is None:
        return {}, {}
    queue = [
        (k, j, (it.question, a, it.answers))
        for k, (it, answers, rules) in enumerate(per_item)
        for j, (a, r) in enumerate(zip(answers, rules, strict=True))
        if a is not None and r["em"] < 1.0
    ]
    verdicts: dict[tuple[int, int], float | None] = {}
    counts: dict[str, Any] = {}
    if queue:
        results = judge.judge_many([q for _, _, q in queue], progress=progress)
        for (k, j, _), r in zip(queue, results, strict=True):
            verdicts[(k, j)] = None if r.failed else float(bool(r.verdict))
        counts = {"judge_calls": len(queue), "judge_failed": sum(v is None for v in verdicts.values())}
    counts["judge"] = judge.stats
    return verdicts, counts


def _completion_scores(
    k: int, per_item: _PerItem, verdicts: dict[tuple[int, int], float | None], judged: bool
) -> tuple[list[dict[str, float]], int]:
    """Every metric of each completion of item ``k``, and how many of its judge calls failed."""
    _, answers, rules = per_item
    per_comp: list[dict[str, float]] = []
    failed = 0
    for j, r in enumerate(rules):
        c: dict[str, float] = dict(r)
        if judged:
            jv = 1.0 if r["em"] >= 1.0 else (0.0 if answers[j] is None else verdicts.get((k, j)))
            failed += jv is None
            c["judge"] = r["em"] if jv is None else jv  # a failed call keeps the rule's score
            c["max_em_judge"] = max_em_judge(r["em"], jv)
            c["max_em_judge_bound"] = 1.0 if jv is None else c["max_em_judge"]
        per_comp.append(c)
    return per_comp, failed


def _rows(
    per_item: list[_PerItem], verdicts: dict[tuple[int, int], float | None], judged: bool, pass_metric: str
) -> tuple[list[dict[str, Any]], list[int]]:
    """One row per scored item: its group keys, every metric averaged over completions, and pass@k; and
    the ks of pass@k."""
    n_values = {len(a) for _, a, _ in per_item}
    ks = default_ks(min(n_values)) if n_values else [1]
    rows = []
    for k, (it, answers, rules) in enumerate(per_item):
        row: dict[str, Any] = {
            "uid": it.uid,
            "data_source": it.data_source,
            "task": it.task or "n/a",
            "length_bin": length_label(it.length_bin()),
            "length_tokens": it.length_bin(),
            "depth_bin": it.depth_bin(),
            "prompt_tokens": it.prompt_tokens,
            "n": len(answers),
            "prediction": answers[0],
        }
        per_comp, failed = _completion_scores(k, (it, answers, rules), verdicts, judged)
        for name in per_comp[0]:
            row[name] = sum(c[name] for c in per_comp) / len(per_comp)
        if judged:
            row["judge_failed"] = failed
        correct = sum(c[pass_metric] >= 1.0 for c in per_comp)
        for kk in ks:
            row[f"pass@{kk}"] = pass_at_k(len(per_comp), correct, kk) if len(per_comp) >= kk else None
        rows.append(row)
    return rows, ks
