"""``datagen verify``: re-derive every chain from the text alone, re-measure every length, and find every
long-QA and KeyChain answer in its gold documents.

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
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.generators import GENERATORS
from datagen.generators.base import user_message
from datagen.generators.fit import lower_bound
from datagen.generators.keychain import follow_chain, parse_pairs, strip_pairs
from datagen.schema import OPTIONAL_COLUMNS, SAMPLE_SCHEMA, schema_kind, task_of
from datagen.shards import MARKER_DIR, STATS_FILE, iter_rows, list_parts, read_schema
from datagen.sources import SOURCES
from datagen.tokenizers import get_tokenizer
from longmill.errors import LongmillError, UnknownNameError

log = logging.getLogger(__name__)

__all__ = ["VerifyReport", "Violation", "answer_support", "check_row", "follow_chain", "verify"]


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
    #: long-QA and KeyChain rows by answer support (:func:`answer_support`): found, yes_no, not_extractive,
    #: missing (each missing one is also an ``answer`` violation)
    answers: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations


def _check_offsets(
    row: dict[str, Any], user: str, text_pairs: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """doc_offsets are increasing, inside the message, and each gold document lies in its own span."""
    off = list(row["doc_offsets"])
    if (
        len(off) != row["num_docs"] + 1
        or any(b <= a for a, b in zip(off, off[1:], strict=False))
        or (off and (off[0] < 0 or off[-1] > len(user)))
    ):
        return [("structure", f"doc_offsets do not delimit {row['num_docs']} documents in the user message")]
    pos = {d: i for i, d in enumerate(row["doc_ids"])}
    out = []
    for g in row["gold_docs"]:
        i = pos.get(g["doc_id"])
        span = strip_pairs(user[off[i] : off[i + 1]], text_pairs) if i is not None else ""
        if g["text"] not in span:
            out.append(("structure", f"gold document {g['title']!r} is not inside its span doc_offsets[{i}]"))
    return out


def _answer_checks(row: dict[str, Any]) -> list[tuple[str, str]]:
    """The reward's copies of the question and answers agree with the columns (verl reads the copies)."""
    problems = []
    answers = list(row["answers"])
    if not answers or any(not isinstance(a, str) or not a.strip() for a in answers):
        problems.append(("answers", f"answers must be non-empty strings, got {answers!r}"))
    truth = list((row["reward_model"] or {}).get("ground_truth") or [])
    if truth != answers:
        problems.append(("answers", f"reward_model.ground_truth {truth!r} differs from answers {answers!r}"))
    extra = row["extra_info"] or {}
    if list(extra.get("answers") or []) != answers:
        problems.append(
            ("answers", f"extra_info.answers {extra.get('answers')!r} differs from answers {answers!r}")
        )
    if extra.get("question") != row["question"]:
        problems.append(
            ("question", f"extra_info.question {extra.get('question')!r} differs from the question column")
        )
    if extra.get("uid") != row["uid"]:
        problems.append(("structure", f"extra_info.uid {extra.get('uid')!r} differs from uid {row['uid']!r}"))
    return problems


_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
#: the tasks whose answer is a question's answer read from gold documents (others re-derive theirs)
ANSWER_TASKS = ("longqa", "keychain")


def _words(text: str) -> str:
    return " " + _NON_WORD.sub(" ", str(text).casefold()).strip() + " "


def answer_support(row: dict[str, Any]) -> str:
    """Whether a long-QA or KeyChain row's answer is supported by its gold documents.

    Returns ``found`` when an accepted answer (or alias) occurs in a gold document's title or text (as whole
    words, case and punctuation aside), ``yes_no`` for a yes/no answer (a comparison: no span to find),
    ``not_extractive`` when the row's source says its answers need not be text of the documents
    (:attr:`datagen.sources.base.Source.extractive_answers`), else ``missing``. Rows of other tasks get
    ``n/a`` (their generators re-derive the answer in ``check_row``).

    Example:
        >>> gold = [{"title": "Ostra River", "text": "The Ostra River is 1,104 km long."}]
        >>> row = {"task": "longqa", "generator": "longqa", "source": "synthetic", "gold_docs": gold}
        >>> [answer_support({**row, "answers": a}) for a in (["1104 km", "1,104 km"], ["Atlantis"], ["no"])]
        ['found', 'missing', 'yes_no']
    """
    if task_of(row) not in ANSWER_TASKS:
        return "n/a"
    answers = [_words(a) for a in row["answers"] if isinstance(a, str) and a.strip()]
    if answers and all(a.strip() in ("yes", "no") for a in answers):
        return "yes_no"
    gold = " ".join(_words(f"{d['title']} {d['text']}") for d in row["gold_docs"])
    if any(a.strip() and a in gold for a in answers):
        return "found"
    try:
        extractive = SOURCES.get(str(row["source"])).extractive_answers
    except UnknownNameError:  # a source outside the registry (e.g. a test's): held to the strict rule
        extractive = True
    return "missing" if extractive else "not_extractive"


def check_row(row: dict[str, Any], run: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """All problems with one sample row, as (check, message) pairs: the generic checks, then the
    checks of the row's own generator (:meth:`Generator.check_row`).

    Args:
        row: a sample row.
        run: the run's parameters (``stats.json``'s ``params``); the length target and tolerance come
            from here, so a row cannot widen its own tolerance. Without it, the row's own ``params``.
    """
    problems: list[tuple[str, str]] = []
    params = run if run is not None else json.loads(row["params"])
    tok = get_tokenizer(row["tokenizer"])
    if tok.chat_template != row["chat_template"]:
        problems.append(
            (
                "template",
                f"row says chat template {row['chat_template']!r}, tokenizer "
                f"{row['tokenizer']!r} renders with {tok.chat_template!r}",
            )
        )
    messages = [dict(m) for m in row["prompt"]]
    measured = tok.count_messages(messages)
    length = int(params.get("length", row["length_target"]))
    if int(row["length_target"]) != length:
        problems.append(("run", f"length_target {row['length_target']} but the run's length is {length}"))
    lo = lower_bound(length, float(params.get("tolerance", 0.01)))
    if measured != row["prompt_tokens"]:
        problems.append(
            ("length", f"stored prompt_tokens {row['prompt_tokens']} but the rendered prompt has {measured}")
        )
    if not lo <= measured <= length:
        problems.append(("length", f"{measured} tokens is outside [{lo}, {length}]"))
    problems += _answer_checks(row)
    if answer_support(row) == "missing":
        problems.append(
            (
                "answer",
                f"no accepted answer {list(row['answers'])[:3]!r} occurs in the gold documents' text; a row "
                "whose answer its evidence does not contain cannot be verified",
            )
        )

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
    try:
        return problems + gen_cls.check_row(row)
    except (KeyError, IndexError, TypeError, ValueError) as e:  # a malformed row is a violation, not a crash
        return problems + [
            ("malformed", f"the {row['generator']} checks failed on this row: {type(e).__name__}: {e}")
        ]


@dataclass
class _Run:
    """One artifact folder of the input: its parts and what its stats.json says about the run."""

    folder: Path
    parts: list[Path]
    stats: dict[str, Any] | None = None
    params: dict[str, Any] | None = None  # the run's params: stats.json's, else the first row's
    rows: int = 0
    #: a folder written by one generator run (stats.json or done-markers); others (a curriculum stage,
    #: a hand-assembled folder) may hold rows of many runs, each judged by its own parameters
    one_run: bool = False


_PART_NUMBER = re.compile(r"^part-(\d+)\.parquet$")


def _runs(parts: list[Path], single_file: bool) -> list[_Run]:
    runs: dict[Path, _Run] = {}
    for p in parts:
        runs.setdefault(p.parent, _Run(p.parent, [])).parts.append(p)
    out = list(runs.values())
    if single_file:
        return out
    for r in out:
        stats_path = r.folder / STATS_FILE
        r.one_run = stats_path.exists() or any((r.folder / MARKER_DIR).glob("*.json"))
        if stats_path.exists():
            try:
                r.stats = json.loads(stats_path.read_text(encoding="utf-8"))
                if not isinstance(r.stats, dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                r.stats = {"_unreadable": str(e)}
            if isinstance(r.stats.get("params"), dict):
                r.params = r.stats["params"]
    return out


def _run_problems(run: _Run) -> list[tuple[str, str]]:
    """Folder-level checks: every part is there, all parts come from one run, stats.json is complete."""
    problems: list[tuple[str, str]] = []
    if run.stats is not None and "_unreadable" in run.stats:
        return [
            ("run", f"{STATS_FILE} is not readable JSON ({run.stats['_unreadable']}); regenerate the folder")
        ]
    numbers = sorted(int(m.group(1)) for p in run.parts if (m := _PART_NUMBER.match(p.name)))
    expected = run.stats.get("parts") if run.stats else None
    if isinstance(expected, int):
        want = set(range(expected))
    else:
        want = set(range(max(numbers) + 1)) if numbers else set()
    missing = sorted(want - set(numbers))
    if missing:
        names = ", ".join(f"part-{i:05d}.parquet" for i in missing[:5])
        src = (
            f"{STATS_FILE} says {expected} parts"
            if isinstance(expected, int)
            else "the parts are numbered with gaps"
        )
        problems.append(
            (
                "run",
                f"{len(missing)} part(s) missing ({names}); {src}; re-run the command that made "
                f"the folder to rewrite them",
            )
        )
    extra = sorted(set(numbers) - want)
    if extra and isinstance(expected, int):
        problems.append(
            (
                "run",
                f"part(s) beyond the run's {expected}: "
                + ", ".join(f"part-{i:05d}.parquet" for i in extra[:5]),
            )
        )
    fingerprints: dict[str, list[str]] = {}
    markers = sorted((run.folder / MARKER_DIR).glob("*.json"))
    for m in markers:
        try:
            fp = str(json.loads(m.read_text(encoding="utf-8")).get("fingerprint"))
        except (ValueError, AttributeError):
            fp = "unreadable"
        fingerprints.setdefault(fp, []).append(m.stem)
    if len(fingerprints) > 1:
        desc = "; ".join(f"{fp}: {', '.join(v[:3])}" for fp, v in sorted(fingerprints.items()))
        problems.append(
            (
                "run",
                f"the parts come from {len(fingerprints)} different runs (done-marker "
                f"fingerprints {desc}); regenerate the folder with one command",
            )
        )
    if run.stats is None and markers:
        problems.append(
            (
                "run",
                f"the run is not complete: no {STATS_FILE} ({len(markers)} part(s) have "
                f"done-markers); re-run the command that made the folder to finish it",
            )
        )
    return problems


def _count_problems(run: _Run) -> list[tuple[str, str]]:
    if not run.stats or "written" not in run.stats:
        return []
    if run.stats["written"] != run.rows:
        return [
            ("run", f"{STATS_FILE} says {run.stats['written']} rows were written, the parts hold {run.rows}")
        ]
    return []


def _differs(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def verify(
    folder: str | Path, progress: Callable[[int], None] | None = None, max_violations: int = 1000
) -> VerifyReport:
    """Check every row of every part in ``folder``, and the folder as a whole.

    Args:
        folder: a folder of sample shards (or one Parquet file, or a folder of such folders).
        progress: called with 1 after each row.
        max_violations: stop collecting after this many (the counts still complete).
    """
    report = VerifyReport()
    parts = list_parts(folder)
    report.files = len(parts)

    def add(path: Path | str, row: int, uid: str, check: str, msg: str) -> None:
        report.checks[check] = report.checks.get(check, 0) + 1
        if len(report.violations) < max_violations:
            report.violations.append(Violation(str(path), row, uid, check, msg))

    for p in parts:
        try:
            schema = read_schema(p)
        except LongmillError as e:
            add(p, -1, "-", "schema", str(e))
            continue
        names = set(schema.names)
        if (
            schema_kind(schema) != "sample"
            or set(SAMPLE_SCHEMA.names) - set(OPTIONAL_COLUMNS) - names
            or names - set(SAMPLE_SCHEMA.names)
        ):
            add(
                p,
                -1,
                "-",
                "schema",
                "not a sample shard in longmill's schema (datagen keychain/longqa make them)",
            )
    if report.violations:
        return report
    runs = _runs(parts, single_file=Path(folder).is_file())
    uids: dict[str, str] = {}
    for run in runs:
        for check, msg in _run_problems(run):
            add(run.folder, -1, "-", check, msg)
        for path in run.parts:
            try:
                rows = iter_rows([path])
                for _, i, row in rows:
                    _verify_row(run, path, i, row, uids, add, report)
                    if progress:
                        progress(1)
            except LongmillError as e:
                add(path, -1, "-", "schema", str(e))
        for check, msg in _count_problems(run):
            add(run.folder, -1, "-", check, msg)
    return report


#: What a malformed row raises inside the checks (a missing field, a null, a wrong type, bad JSON).
_MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError, LongmillError)


def _verify_row(
    run: _Run,
    path: Path,
    i: int,
    row: dict[str, Any],
    uids: dict[str, str],
    add: Callable[..., None],
    report: VerifyReport,
) -> None:
    report.rows += 1
    run.rows += 1
    uid = str(row.get("uid"))
    problems: list[tuple[str, str]] = []
    try:
        report.keychain_rows += int((row["num_chains"] or 0) > 0)
        support = answer_support(row)
        if support != "n/a":
            report.answers[support] = report.answers.get(support, 0) + 1
        own = json.loads(row["params"])
        if not isinstance(own, dict):
            raise ValueError("params is not a JSON object")
        if not run.one_run:
            problems += check_row(row)
        else:
            if run.params is None:
                run.params = own
            elif own != run.params:
                problems.append(
                    (
                        "run",
                        f"made with other settings than the run (differs in: "
                        f"{', '.join(_differs(own, run.params))}); the folder mixes runs",
                    )
                )
            problems += check_row(row, run.params)
    except _MALFORMED as e:
        problems.append(("malformed", f"the row cannot be checked ({type(e).__name__}: {e}); regenerate it"))
    if uid in uids:
        problems.append(("uid", f"uid also used at {uids[uid]}"))
    uids[uid] = f"{path.name} row {i}"
    for check, msg in problems:
        add(path, i, uid, check, msg)
