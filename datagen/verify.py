"""``datagen verify``: re-derive every chain from the text alone and re-measure every length.

The checks do not trust the generator's bookkeeping: chains are parsed out of the prompt text, the head
key is read from the instructions, and lengths are measured again with the tokenizer named in the row.
The carried structure (``chains``, ``gold_docs``) is then compared with what the text says.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.generators.fit import lower_bound
from datagen.generators.keychain import KEY_PATTERN, parse_pairs, strip_pairs
from datagen.prompts import HEAD_KEY_PHRASE
from datagen.schema import OPTIONAL_COLUMNS, SAMPLE_SCHEMA, schema_kind
from datagen.shards import iter_rows, list_parts, read_schema
from datagen.tokenizers import get_tokenizer

log = logging.getLogger(__name__)

_HEAD = re.compile(re.escape(HEAD_KEY_PHRASE) + r' "(' + KEY_PATTERN + r')"')
_KEY_RE = re.compile(r"^" + KEY_PATTERN + r"$")


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


def follow_chain(pairs: list[tuple[str, str]], head: str, max_steps: int = 10_000) -> tuple[list[str], str]:
    """Follow ``head`` through ``pairs``; returns (keys visited, the value that is not a key)."""
    table = dict(pairs)
    keys, cur = [], head
    while cur in table:
        if cur in keys or len(keys) > max_steps:
            raise ValueError(f"the chain from {head} loops at {cur}")
        keys.append(cur)
        cur = table[cur]
    if not keys:
        raise ValueError(f"the head key {head} is not a key of any pair in the text")
    return keys, cur


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


def generator_checks(row: dict[str, Any]) -> list[tuple[str, str]]:
    """The row's generator's own checks (:meth:`Generator.check_row`); an unknown generator is a violation."""
    from datagen.generators import GENERATORS

    if row["generator"] not in GENERATORS:
        return [("generator", f"unknown generator {row['generator']!r}; valid: {', '.join(GENERATORS.names())}")]
    try:
        return GENERATORS.get(row["generator"]).check_row(row)
    except (KeyError, IndexError, TypeError, ValueError) as e:  # a malformed row is a violation, not a crash
        return [(row["generator"], f"the generator's check failed on this row: {type(e).__name__}: {e}")]


def check_row(row: dict[str, Any]) -> list[tuple[str, str]]:
    """All problems with one sample row, as (check, message) pairs."""
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

    user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    text_pairs = parse_pairs(user)
    clean = strip_pairs(user, text_pairs)
    for g in row["gold_docs"]:
        if g["text"] not in clean:
            problems.append(("gold", f"gold document {g['title']!r} ({g['doc_id']}) is not in the prompt"))
    if len(row["doc_ids"]) != row["num_docs"]:
        problems.append(("structure", f"num_docs {row['num_docs']} != {len(row['doc_ids'])} doc_ids"))
    problems += _check_offsets(row, user, text_pairs)
    problems += generator_checks(row)

    if row["num_chains"] == 0:
        if text_pairs:
            problems.append(("chain", f"a sample without chains has {len(text_pairs)} key-value pairs in its text"))
        return problems

    # KeyChain: everything below comes from the text, then is compared with the carried data.
    keys = [k for k, _ in text_pairs]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        problems.append(("chain", f"keys appear more than once: {dup[:3]}"))
    heads = _HEAD.findall(user)
    if not heads:
        return problems + [("chain", "the instructions name no head key")]
    head = heads[-1]
    if head != row["chain_head"]:
        problems.append(("chain", f"instructions name head {head} but chain_head is {row['chain_head']}"))
    try:
        visited, end = follow_chain(text_pairs, head)
    except ValueError as e:
        return problems + [("chain", str(e))]
    if end != row["question"]:
        problems.append(("chain", f"the chain from {head} ends at {end!r}, not at the question {row['question']!r}"))
    if len(visited) != row["chain_hops"]:
        problems.append(("chain", f"the true chain has {len(visited)} keys, chain_hops is {row['chain_hops']}"))
    targets = [v for _, v in text_pairs if not _KEY_RE.match(v)]
    if targets.count(row["question"]) != 1:
        problems.append(("chain", f"the question is the end of {targets.count(row['question'])} chains, not exactly 1"))
    if len(set(targets)) != len(targets):
        problems.append(("chain", "two chains end at the same question"))
    if len(targets) != row["num_chains"]:
        problems.append(("chain", f"the text has {len(targets)} chain ends, num_chains is {row['num_chains']}"))
    carried = {(k, (c["keys"][i + 1] if i + 1 < len(c["keys"]) else c["target"]))
               for c in row["chains"] for i, k in enumerate(c["keys"])}
    if carried != set(text_pairs):
        problems.append(("chain", f"the pairs in the text differ from the carried chains "
                                  f"({len(set(text_pairs) - carried)} extra, {len(carried - set(text_pairs))} missing)"))
    return problems


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
        if schema_kind(schema) != "sample" or \
                set(SAMPLE_SCHEMA.names) - set(OPTIONAL_COLUMNS) - set(schema.names) or \
                set(schema.names) - set(SAMPLE_SCHEMA.names):
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
