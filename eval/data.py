"""Evaluation inputs: longmill sample shards, and LongBench-style JSONL files users already have.

LongBench-style records (``input``, ``context``, ``answers``, ``length``, ``dataset``; e.g. LongBench's
``hotpotqa.jsonl`` or ``2wikimqa.jsonl``) are turned into prompts with longmill's own long-QA template
(:func:`datagen.prompts.longqa_pieces`), so a model sees the same framing and answer format on both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.prompts import longqa_pieces
from datagen.schema import OPTIONAL_COLUMNS, SAMPLE_SCHEMA, schema_kind, task_of
from datagen.shards import iter_rows, list_parts, read_schema
from datagen.sources.base import SkipCounter, iter_json_records
from longmill.errors import LongmillError, RecordError
from longmill.lengths import format_length
from longmill.rng import stable_id

log = logging.getLogger(__name__)

#: Length bins for inputs without a length target (LongBench files): the smallest edge >= the length.
DEFAULT_LENGTH_EDGES = (4_096, 8_192, 16_384, 32_768, 65_536, 131_072)
DEPTH_BINS = 5


@dataclass
class EvalItem:
    """One prompt to evaluate.

    Args:
        uid: unique id (the sample uid, or LongBench's ``_id``).
        data_source: e.g. ``keychain/hotpotqa`` or ``longbench/2wikimqa``.
        prompt: chat messages.
        question: the question (for the judge).
        answers: every accepted answer.
        prompt_tokens: rendered prompt length, when known.
        length_target: the generation budget L, when the input is a longmill shard.
        gold_depth: mean relative depth of the gold documents, when known.
        task: the task family (the sample's task column; the dataset for LongBench files), for per-task
            metrics.
    """

    uid: str
    data_source: str
    prompt: list[dict[str, str]]
    question: str
    answers: list[str]
    prompt_tokens: int | None = None
    length_target: int | None = None
    gold_depth: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    task: str | None = None

    def length_bin(self, edges: tuple[int, ...] = DEFAULT_LENGTH_EDGES) -> int | None:
        """The bin's upper edge in tokens: the length target, else the smallest edge >= prompt_tokens."""
        if self.length_target:
            return int(self.length_target)
        if self.prompt_tokens is None:
            return None
        return next((e for e in edges if self.prompt_tokens <= e), int(self.prompt_tokens))

    def depth_bin(self, bins: int = DEPTH_BINS) -> str:
        if self.gold_depth is None:
            return "n/a"
        k = min(int(self.gold_depth * bins), bins - 1)
        return f"{k / bins:.1f}-{(k + 1) / bins:.1f}"


def length_label(n: int | None) -> str:
    return "n/a" if n is None else format_length(n)


def load_items(
    data: str | Path, *, tokenizer: str = "qwen2.5", limit: int | None = None, strict: bool = False
) -> tuple[list[EvalItem], SkipCounter]:
    """Read evaluation items from longmill shards (a folder or ``.parquet``) or a LongBench ``.jsonl``.

    Args:
        data: the input.
        tokenizer: measures prompt lengths of LongBench records (for length bins).
        limit: read at most this many items.
        strict: fail on the first malformed LongBench record instead of skipping it.
    """
    p = Path(data)
    if p.is_file() and p.suffix in (".jsonl", ".json"):
        return _load_longbench(p, tokenizer, limit, strict)
    return _load_shards(p, limit), SkipCounter()


def _load_shards(path: Path, limit: int | None) -> list[EvalItem]:
    parts = list_parts(path)
    have_task = True
    for part in parts:
        schema = read_schema(part)
        have_task &= "task" in schema.names  # shards written before the task column lack it
        if schema_kind(schema) != "sample" or not set(SAMPLE_SCHEMA.names) - set(OPTIONAL_COLUMNS) <= set(
            schema.names
        ):
            raise LongmillError(
                f"{part} is not a longmill sample shard; pass a folder written by datagen or "
                "curriculum, or a LongBench-style .jsonl file"
            )
    cols = [
        "uid",
        "data_source",
        "prompt",
        "question",
        "answers",
        "prompt_tokens",
        "length_target",
        "gold_doc_depths",
        "source_id",
        "difficulty",
        "generator",
    ] + (["task"] if have_task else [])
    items: list[EvalItem] = []
    seen: set[str] = set()
    for _, _, row in iter_rows(parts, columns=cols):
        if row["uid"] in seen:
            raise LongmillError(f"{path}: uid {row['uid']} appears twice; evaluation needs unique uids")
        seen.add(row["uid"])
        depths = row["gold_doc_depths"] or []
        items.append(
            EvalItem(
                uid=row["uid"],
                data_source=row["data_source"],
                prompt=[dict(m) for m in row["prompt"]],
                question=row["question"],
                answers=list(row["answers"]),
                prompt_tokens=row["prompt_tokens"],
                length_target=row["length_target"],
                gold_depth=(sum(depths) / len(depths)) if depths else None,
                meta={"source_id": row["source_id"], "difficulty": row["difficulty"]},
                task=task_of(row),
            )
        )
        if limit is not None and len(items) >= limit:
            break
    return items


def longbench_prompt(question: str, context: str) -> list[dict[str, str]]:
    """A LongBench record in longmill's long-QA framing (the context as the text to read)."""
    head, tail = longqa_pieces(question.strip())
    return [{"role": "user", "content": head + context.strip() + "\n\n" + tail}]


def _load_longbench(
    path: Path, tokenizer: str, limit: int | None, strict: bool
) -> tuple[list[EvalItem], SkipCounter]:
    """Read a LongBench-style JSONL (or JSON list) file as the datagen sources read theirs: a line that is
    not valid UTF-8 or not JSON, or a record without its fields, is skipped and counted; an ``_id`` given
    twice is an error (predictions are keyed by it)."""
    from datagen.tokenizers import get_tokenizer

    tok = get_tokenizer(tokenizer)
    skips = SkipCounter(strict=strict)
    items: list[EvalItem] = []
    first_seen: dict[str, int] = {}
    for i, rec in iter_json_records(path):
        try:
            if isinstance(rec, RecordError):
                raise rec
            if not isinstance(rec, dict):
                raise RecordError(str(path), i, "<record>", "expected a JSON object")
            for key, typ in (("input", str), ("context", str), ("answers", list)):
                if not isinstance(rec.get(key), typ):
                    raise RecordError(str(path), i, key, f"missing or not a {typ.__name__}")
            answers = [a for a in rec["answers"] if isinstance(a, str) and a.strip()]
            if not answers:
                raise RecordError(str(path), i, "answers", "no non-empty answer")
        except RecordError as e:
            skips.skip(e.path, e.record, e.field, e.reason)
            continue
        dataset = str(rec.get("dataset") or path.stem)
        uid = str(rec.get("_id") or stable_id("longbench", dataset, i))
        if uid in first_seen:
            raise LongmillError(
                f"{path}: record {i}: field '_id': {uid!r} is already the _id of record {first_seen[uid]}; "
                "predictions and scores are keyed by it, so each record needs its own. Remove or rename "
                "the duplicate"
            )
        first_seen[uid] = i
        prompt = longbench_prompt(rec["input"], rec["context"])
        items.append(
            EvalItem(
                uid=uid,
                data_source=f"longbench/{dataset}",
                prompt=prompt,
                question=rec["input"].strip(),
                answers=answers,
                prompt_tokens=tok.count_messages(prompt),
                meta={"length_words": rec.get("length")},
                task=dataset,
            )
        )
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise LongmillError(
            f"{path}: no usable LongBench-style records (input, context, answers); skipped: {skips.as_dict()}"
        )
    return items, skips
