"""Knowledge-grounding and contextual-robustness filters (QwenLong-L1.5's data filtering).

A long-context sample only trains reading if its question cannot be answered without the context:

- **knowledge grounding**: the question alone (closed book) is put to a model ``k`` times; the share of
  completions whose extracted answer the rule accepts is ``closed_book_pass_rate``. Samples above
  ``max_closed_book`` (by default: any closed-book pass) are dropped, or, with ``action="flag"``, kept
  and marked in ``grounding_flag``.
- **contextual robustness**: the same model answers the full prompt (the question with its long context,
  and for KeyChain the chain to follow) ``k`` times; ``context_pass_rate`` is recorded next to the
  closed-book rate, so that a consumer can see how much the context helps (or distracts).

Generation goes through eval's backends (``hf`` on CPU, ``vllm`` on GPU, ``openai`` for a server) and the
same answer extraction and rule as the reward's (``sub_em`` by default). Rollouts are appended to JSONL
files under ``<out>/grounding/``, so an interrupted run resumes. A sample whose generation failed is never
dropped: its rate is null and the failure is counted in ``stats.json``.

Columns added to (or replaced in) every row:

| column | type | meaning |
|---|---|---|
| ``closed_book_pass_rate`` | float64, nullable | pass rate over k closed-book completions (null: generation failed) |
| ``context_pass_rate`` | float64, nullable | pass rate over k completions with the context (null: not measured or failed) |
| ``grounding_flag`` | string, nullable | ``answerable_closed_book`` when flagged (``action="flag"``), else null |
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from datagen.prompts import answer_format_instruction
from datagen.shards import OutputLock, PartWriter, check_complete, check_output_path, read_table
from eval.data import EvalItem
from eval.metrics import METRICS
from eval.run import GenerateConfig
from longmill.errors import LongmillError
from longmill.rng import stable_id
from longmill.secrets import redact

log = logging.getLogger(__name__)

CLOSED_BOOK_RATE = "closed_book_pass_rate"
CONTEXT_RATE = "context_pass_rate"
FLAG = "grounding_flag"
#: The columns this filter writes, with their Arrow types (all nullable).
GROUNDING_FIELDS = [
    pa.field(
        CLOSED_BOOK_RATE,
        pa.float64(),
        nullable=True,
        metadata={"doc": "pass rate over k closed-book completions (question only); null: generation failed"},
    ),
    pa.field(
        CONTEXT_RATE,
        pa.float64(),
        nullable=True,
        metadata={"doc": "pass rate over k completions of the full prompt; null: not measured or failed"},
    ),
    pa.field(
        FLAG,
        pa.string(),
        nullable=True,
        metadata={"doc": "why the grounding filter would drop the row (action=flag), else null"},
    ),
]
ANSWERABLE = "answerable_closed_book"
ACTIONS = ("drop", "flag")

CLOSED_BOOK_PROMPT = "Answer the following question.\n\nQuestion: {question}\n\n{format}"


def closed_book_messages(question: str) -> list[dict[str, str]]:
    """The question alone, asked in the answer format the reward parses (no documents, no chain)."""
    return [
        {
            "role": "user",
            "content": CLOSED_BOOK_PROMPT.format(question=question, format=answer_format_instruction()),
        }
    ]


@dataclass
class GroundingConfig:
    """What the filter measures and what it does with the result.

    Args:
        k: completions per prompt (closed book, and with the context); use a temperature > 0.
        max_closed_book: keep samples whose closed-book pass rate is at most this (0: any closed-book
            pass marks the sample as answerable without the context).
        action: ``drop`` the answerable samples, or ``flag`` them in ``grounding_flag`` and keep them.
        with_context: also measure ``context_pass_rate`` (contextual robustness); off, it stays null.
        rule: the metric that decides a pass (a name in ``eval.metrics.METRICS``), as the reward does.
        rows_per_part: rows per output Parquet part.
    """

    k: int = 4
    max_closed_book: float = 0.0
    action: str = "drop"
    with_context: bool = True
    rule: str = "sub_em"
    rows_per_part: int = 256

    def __post_init__(self) -> None:
        if self.k < 1:
            raise LongmillError(f"k must be >= 1, got {self.k}")
        if not 0.0 <= self.max_closed_book <= 1.0:
            raise LongmillError(f"max_closed_book must be in [0, 1], got {self.max_closed_book}")
        if self.action not in ACTIONS:
            raise LongmillError(f"action must be one of {', '.join(ACTIONS)}, got {self.action!r}")
        METRICS.get(self.rule)
        if self.rows_per_part < 1:
            raise LongmillError(f"rows_per_part must be >= 1, got {self.rows_per_part}")


def pass_rates(
    items: list[EvalItem],
    gen: GenerateConfig,
    predictions: Path,
    rule: str,
    progress: Callable[[int], None] | None = None,
) -> dict[str, float | None]:
    """``{uid: pass rate or None}`` over ``gen.n`` completions per item (None: generation failed).

    Args:
        items: the prompts, with their accepted answers.
        gen: model, backend and sampling (``gen.n`` completions per prompt).
        predictions: the JSONL file the completions are appended to (resumable).
        rule: the metric that decides a pass.
        progress: called with the number of prompts finished.
    """
    from eval.reward import extract_answer
    from eval.run import generate_predictions
    from eval.scoring import read_predictions

    metric = METRICS.get(rule)
    predictions.parent.mkdir(parents=True, exist_ok=True)
    counts = generate_predictions(items, gen, predictions, progress=progress)
    log.info("%s: %s", predictions.name, counts)
    preds = read_predictions(predictions)
    out: dict[str, float | None] = {}
    for it in items:
        comps = preds.get(it.uid)
        out[it.uid] = (
            sum(metric.fn(extract_answer(c), it.answers) >= 1.0 for c in comps) / len(comps)
            if comps
            else None
        )
    return out


def _items(rows: list[dict[str, Any]], closed_book: bool) -> list[EvalItem]:
    return [
        EvalItem(
            uid=r["uid"],
            data_source=r["data_source"],
            prompt=closed_book_messages(r["question"]) if closed_book else [dict(m) for m in r["prompt"]],
            question=r["question"],
            answers=list(r["answers"]),
            prompt_tokens=r.get("prompt_tokens"),
        )
        for r in rows
    ]


def ground(
    inputs: str | Path,
    out: str | Path,
    config: GroundingConfig,
    gen: GenerateConfig,
    progress_factory: Callable[[int, str], Any] | None = None,
) -> dict[str, Any]:
    """Measure both pass rates for every sample of ``inputs``, filter, and write ``out``.

    Args:
        inputs: a folder of sample shards (or one Parquet file).
        out: the output folder (Parquet parts in the input schema plus :data:`GROUNDING_FIELDS`,
            ``stats.json``, and the rollouts under ``grounding/``).
        config: what to measure and do.
        gen: the model and sampling; its ``n`` is replaced by ``config.k``.
        progress_factory: ``(total, description) -> bar`` with ``update(n)`` and ``close()`` (the CLI's).

    Returns:
        The content of ``stats.json``: counts of rows read, kept, dropped and flagged by reason, failed
        generations, and the distributions of both rates.

    Raises:
        LongmillError: ``out`` is, contains or lies inside ``inputs``; ``inputs`` is a generator run that
            did not finish (no ``stats.json``); another run holds ``out``'s lock; or every generation of
            a pass failed (nothing was measured, so nothing is written but the rollouts).
    """
    out = Path(out)
    check_output_path(out, [inputs])
    check_complete(inputs)
    with OutputLock(out):  # one writer per folder, as the generators and curriculum build
        return _ground(inputs, out, config, gen, progress_factory)


def _ground(
    inputs: str | Path,
    out: Path,
    config: GroundingConfig,
    gen: GenerateConfig,
    progress_factory: Callable[[int, str], Any] | None,
) -> dict[str, Any]:
    table = read_table(inputs)
    missing = [
        c for c in ("uid", "question", "answers", "prompt", "data_source") if c not in table.column_names
    ]
    if missing:
        raise LongmillError(
            f"{inputs}: not a sample shard folder (columns {missing} missing); give the output "
            "of a datagen generator or of curriculum build"
        )
    rows = table.select(
        [
            c
            for c in ("uid", "question", "answers", "prompt", "data_source", "prompt_tokens")
            if c in table.column_names
        ]
    ).to_pylist()
    uids = [r["uid"] for r in rows]
    if len(set(uids)) != len(uids):
        raise LongmillError(f"{inputs}: uids are not unique; ground one run's folder at a time")
    gen = dataclasses.replace(gen, n=config.k)

    def bar(desc: str):
        return progress_factory(len(rows), desc) if progress_factory else None

    work = out / "grounding"
    b = bar("closed book")
    closed = pass_rates(
        _items(rows, True), gen, work / "closed_book.jsonl", config.rule, b.update if b else None
    )
    if b:
        b.close()
    context: dict[str, float | None] = {}
    if config.with_context:
        b = bar("with context")
        context = pass_rates(
            _items(rows, False), gen, work / "context.jsonl", config.rule, b.update if b else None
        )
        if b:
            b.close()

    for name, rates in (("closed book", closed), ("with context", context)):
        if rates and all(v is None for v in rates.values()):
            raise LongmillError(
                f"every {name} generation failed ({len(rates)} of {len(rates)} samples), so nothing was "
                f"measured and {out} is not written; check the backend (see the log), then run the same "
                f"command again (rollouts that succeeded are kept in {work})"
            )
    keep: list[bool] = []
    flags: list[str | None] = []
    dropped: Counter[str] = Counter()
    flagged: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for u in uids:
        cb = closed[u]
        if cb is None:
            failed["closed_book"] += 1  # never dropped for a failure: the rate stays null
        if config.with_context and context.get(u) is None:
            failed["context"] += 1
        answerable = cb is not None and cb > config.max_closed_book
        if answerable and config.action == "drop":
            dropped[ANSWERABLE] += 1
            keep.append(False)
            flags.append(None)
        else:
            if answerable:
                flagged[ANSWERABLE] += 1
            keep.append(True)
            flags.append(ANSWERABLE if answerable else None)

    result = table
    for f, values in zip(
        GROUNDING_FIELDS, ([closed[u] for u in uids], [context.get(u) for u in uids], flags), strict=True
    ):
        col = pa.array(values, type=f.type)
        if f.name in result.column_names:
            result = result.set_column(result.column_names.index(f.name), f, col)
        else:
            result = result.append_column(f, col)
    result = result.replace_schema_metadata(table.schema.metadata).filter(pa.array(keep, type=pa.bool_()))

    fingerprint = stable_id("grounding", dataclasses.asdict(config), redact(gen.summary()), sorted(uids))
    n_parts = max(1, -(-result.num_rows // config.rows_per_part))
    writer = PartWriter(out, fingerprint, n_parts, overwrite=True)
    for p in range(n_parts):
        part = result.slice(p * config.rows_per_part, config.rows_per_part)
        writer.write(p, part, {"written": part.num_rows}, "grounding")

    def dist(values: list[float | None]) -> dict[str, float] | None:
        vals = [v for v in values if v is not None]
        return (
            {
                "mean": round(statistics.fmean(vals), 4),
                "min": min(vals),
                "max": max(vals),
                "zero": sum(v == 0 for v in vals),
                "one": sum(v == 1 for v in vals),
            }
            if vals
            else None
        )

    stats = {
        "artifact": "samples",
        "filter": "grounding",
        "input": str(inputs),
        "read": len(rows),
        "written": result.num_rows,
        "dropped": dict(sorted(dropped.items())),
        "flagged": dict(sorted(flagged.items())),
        "generation_failed": dict(sorted(failed.items())),
        CLOSED_BOOK_RATE: dist([closed[u] for u in uids]),
        CONTEXT_RATE: dist([context.get(u) for u in uids]) if config.with_context else None,
        "config": dataclasses.asdict(config),
        "generation": gen.summary(),  # written with its secrets masked (atomic_write_json)
        "parts": n_parts,
    }
    writer.write_stats(stats)
    log.info(
        "grounding: read %d, wrote %d, dropped %s, flagged %s, failed %s",
        len(rows),
        result.num_rows,
        dict(dropped),
        dict(flagged),
        dict(failed),
    )
    return redact(json.loads(json.dumps(stats)))  # what stats.json holds
