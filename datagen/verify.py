"""``datagen verify``: re-derive every chain from the text alone and re-measure every length.

The checks do not trust the generator's bookkeeping: chains are parsed out of the prompt text, the head
key is read from the instructions, and lengths are measured again with the tokenizer named in the row.
The carried structure (``chains``, ``gold_docs``) is then compared with what the text says.

The checks every sample shares (length, template, gold documents, document offsets, uids) live here;
each generator checks its own structure in its :meth:`Generator.check_row` hook, which :func:`check_row`
calls for the generator named in the row, so a new generator brings its checks with it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.errors import UnknownNameError
from datagen.generators import GENERATORS
from datagen.generators.base import user_message
from datagen.generators.fit import lower_bound
from datagen.generators.keychain import follow_chain, parse_pairs, strip_pairs
from datagen.schema import SAMPLE_SCHEMA, schema_kind
from datagen.shards import iter_rows, list_parts, read_schema
from datagen.tokenizers import get_tokenizer

log = logging.getLogger(__name__)

__all__ = ["VerifyReport", "Violation", "check_row", "follow_chain", "verify"]


@dataclass
class Violation:
    path: str
    row: int
    uid: str
    check: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: row {self.row} (uid {self.uid}): {self.check}: {self.message}"


@dataclass
class VerifyReport:
    files: int = 0
    rows: int = 0
    keychain_rows: int = 0
    violations: list[Violation] = field(default_factory=list)
    checks: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations


def _check_offsets(row: dict[str, Any], user: str, text_pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """doc_offsets are increasing, inside the message, and each gold document lies in its own span."""
    off = list(row["doc_offsets"])
    if len(off) != row["num_docs"] + 1 or any(b <= a for a, b in zip(off, off[1:], strict=False)) or \
            (off and (off[0] < 0 or off[-1] > len(user))):
        return [("structure", f"doc_offsets do not delimit {row['num_docs']} documents in the user message")]
    pos = {d: i for i, d in enumerate(row["doc_ids"])}
    out = []
    for g in row["gold_docs"]:
        i = pos.get(g["doc_id"])
        span = strip_pairs(user[off[i]:off[i + 1]], text_pairs) if i is not None else ""
        if g["text"] not in span:
            out.append(("structure", f"gold document {g['title']!r} is not inside its span doc_offsets[{i}]"))
    return out


def check_row(row: dict[str, Any]) -> list[tuple[str, str]]:
    """All problems with one sample row, as (check, message) pairs: the generic checks, then the
    checks of the row's own generator (:meth:`Generator.check_row`)."""
    problems: list[tuple[str, str]] = []
    params = json.loads(row["params"])
    tok = get_tokenizer(row["tokenizer"])
    if tok.chat_template != row["chat_template"]:
        problems.append(("template", f"row says chat template {row['chat_template']!r}, tokenizer "
                                     f"{row['tokenizer']!r} renders with {tok.chat_template!r}"))
    messages = [dict(m) for m in row["prompt"]]
    measured = tok.count_messages(messages)
    length = int(row["length_target"])
    lo = lower_bound(length, float(params.get("tolerance", 0.01)))
    if measured != row["prompt_tokens"]:
        problems.append(("length", f"stored prompt_tokens {row['prompt_tokens']} but the rendered prompt has {measured}"))
    if not lo <= measured <= length:
        problems.append(("length", f"{measured} tokens is outside [{lo}, {length}]"))

    user = user_message(row)
    text_pairs = parse_pairs(user)
    clean = strip_pairs(user, text_pairs)
    for g in row["gold_docs"]:
        if g["text"] not in clean:
            problems.append(("gold", f"gold document {g['title']!r} ({g['doc_id']}) is not in the prompt"))
    if len(row["doc_ids"]) != row["num_docs"]:
        problems.append(("structure", f"num_docs {row['num_docs']} != {len(row['doc_ids'])} doc_ids"))
    problems += _check_offsets(row, user, text_pairs)

    try:
        gen_cls = GENERATORS.get(str(row["generator"]))
    except UnknownNameError as e:
        return problems + [("generator", str(e))]
    return problems + gen_cls.check_row(row)


def verify(folder: str | Path, progress: Callable[[int], None] | None = None, max_violations: int = 1000) -> VerifyReport:
    """Check every row of every part in ``folder``.

    Args:
        folder: a folder of sample shards (or one Parquet file).
        progress: called with 1 after each row.
        max_violations: stop collecting after this many (the count of rows still completes).
    """
    report = VerifyReport()
    parts = list_parts(folder)
    report.files = len(parts)
    uids: dict[str, str] = {}
    for p in parts:
        schema = read_schema(p)
        if schema_kind(schema) != "sample" or set(schema.names) != set(SAMPLE_SCHEMA.names):
            report.violations.append(Violation(str(p), -1, "-", "schema",
                                               "not a sample shard in longmill's schema (datagen keychain/longqa make them)"))
            continue
    if report.violations:
        return report
    for path, i, row in iter_rows(parts):
        report.rows += 1
        report.keychain_rows += int(row["num_chains"] > 0)
        problems = check_row(row)
        if row["uid"] in uids:
            problems.append(("uid", f"uid also used at {uids[row['uid']]}"))
        uids[row["uid"]] = f"{path.name} row {i}"
        for check, msg in problems:
            report.checks[check] = report.checks.get(check, 0) + 1
            if len(report.violations) < max_violations:
                report.violations.append(Violation(str(path), i, row["uid"], check, msg))
        if progress:
            progress(1)
    return report
