"""A retrieval stress set in the spirit of RULER: ``needles`` (multi-key needles) and ``vartrack``
(variable tracking over chains of assignments), as an eval grid over length x depth.

- ``needles``: ``num_needles`` short notes, each "One of the special magic numbers for <key> is: <value>.",
  with distinct keys and values; the question asks for the value of one key, or of several keys in a given
  order (``num_queries``). The other needles are distractors with the same wording.
- ``vartrack``: ``num_chains`` chains of ``chain_length`` variables each: ``VAR ABCDE = 12345.``, then
  ``VAR FGHIJ = VAR ABCDE.`` and so on; the question asks which variables hold the value of one chain.

Each needle or assignment is its own short document among the source's documents, which fill the context
to the exact length. The queried needles (or the queried chain) are the gold documents, placed by
``--placement`` or, for a grid, by ``--depths`` (sample ``i`` at ``depths[i % len(depths)]``); the other
needles and chains are spread uniformly. Run one command per length for the length axis.

:meth:`check_row` rebuilds the question from ``extra_info.task_data`` (with :func:`needles_question` or
:func:`vartrack_question`, which wrote it) and compares it with the question column and the prompt, checks
that the gold documents are the queried needles (or chain), and re-derives the answer from the prompt
text (every needle or assignment in it), so a question re-pointed at a distractor, extra, missing or
edited needles, and a tampered answer, are caught.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass

import numpy as np

from datagen.generators.base import GENERATORS, GenConfig, Generator, longqa_question_problems
from datagen.generators.fit import FitResult, parse_placement
from datagen.prompts import longqa_pieces
from datagen.schema import Document, Sample, SupportingFact, Triplet
from longmill.errors import LengthBudgetError, LongmillError
from longmill.rng import rng_uuid, stable_id

#: the title of every needle document: the same for all, so that titles give nothing away
NEEDLE_TITLE = "Note"
NEEDLE_TEXT = "One of the special magic numbers for {key} is: {value}."
_NEEDLE = re.compile(r"One of the special magic numbers for ([0-9a-f]{16}) is: (\d+)\.")
VAR_VALUE = "VAR {name} = {value}."
VAR_COPY = "VAR {name} = VAR {source}."
_ASSIGN = re.compile(r"VAR ([A-Z]{5}) = (?:(\d+)|VAR ([A-Z]{5}))\.")


def parse_depths(depths: str | None) -> list[float]:
    """``"0,0.5,1"`` -> ``[0.0, 0.5, 1.0]``; each in [0, 1]."""
    if depths is None or not str(depths).strip():
        return []
    out = []
    for part in str(depths).split(","):
        try:
            d = float(part)
        except ValueError:
            d = -1.0
        if not 0.0 <= d <= 1.0:
            raise LongmillError(
                f"depths must be comma-separated numbers in [0, 1] (e.g. 0,0.25,0.5,0.75,1); got {depths!r}"
            )
        out.append(d)
    return out


@dataclass
class RetrievalConfig(GenConfig):
    """Options shared by the retrieval stress generators, on top of :class:`GenConfig`.

    Args:
        depths: an eval grid over depth: comma-separated depths in [0, 1]; sample i puts its queried
            needles at depths[i % len(depths)] (this overrides placement).
    """

    depths: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_depths(self.depths)

    def placement_for(self, index: int) -> str:
        grid = parse_depths(self.depths)
        return f"depth:{grid[index % len(grid)]}" if grid else self.placement


class _Retrieval(Generator):
    """Shared driver: needle documents among the source's documents, the gold ones placed by depth."""

    config: RetrievalConfig

    def fit_needles(
        self,
        index: int,
        rng: np.random.Generator,
        head: str,
        tail: str,
        gold: list[Document],
        others: list[Document],
    ) -> FitResult:
        """Fill the context: ``gold`` at the sample's depth, ``others`` spread among the distractors.

        Raises:
            LengthBudgetError: the budget cannot hold every needle.
        """
        c = self.config
        placement = c.placement_for(index)
        parse_placement(placement)
        fit = self.fit(
            None,
            rng,
            head,
            tail,
            others,
            gold=gold,
            placement=placement,
            exclude_titles=False,
            required=others,
        )
        placed = {d.doc_id for d in fit.docs}
        if not {d.doc_id for d in others} <= placed:
            raise LengthBudgetError(
                f"length {c.length} cannot hold all {len(gold) + len(others)} needles; "
                "use a larger --length or fewer needles"
            )
        return fit

    def item(
        self, triplet: Triplet, question: str, answers: list[str], gold: list[Document], hops: int, qtype: str
    ) -> Triplet:
        """The sample's own question record (the source triplet only supplies the haystack)."""
        return Triplet(
            id=f"{self.name}:{stable_id(question, [d.doc_id for d in gold])}",
            source=triplet.source,
            split=triplet.split,
            question=question,
            answers=answers,
            hops=hops,
            question_type=qtype,
            gold_docs=gold,
            supporting_facts=[SupportingFact(d.title, 0, d.text) for d in gold],
        )

    @staticmethod
    def task_data(row: dict) -> dict:
        return json.loads((row.get("extra_info") or {}).get("task_data") or "")

    @staticmethod
    def user_text(row: dict) -> str:
        return next((m["content"] for m in reversed(row["prompt"]) if m["role"] == "user"), "")

    @staticmethod
    def compare(name: str, row: dict, answer: str) -> list[tuple[str, str]]:
        truth = list(row["reward_model"]["ground_truth"])
        if not truth or truth[0] != answer:
            return [(name, f"the text gives {answer!r} but the ground truth is {truth[:1]}")]
        if list(row["answers"]) != truth:
            return [(name, "answers and reward_model.ground_truth differ")]
        return []


# -- multi-key needles -----------------------------------------------------------------------------


@dataclass
class NeedlesConfig(RetrievalConfig):
    """Multi-key needle options.

    Args:
        num_needles: needles in the context, each with its own key and value.
        num_queries: how many of them the question asks for (their values, in the order asked).
    """

    num_needles: int = 8
    num_queries: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.num_queries <= self.num_needles <= 1000:
            raise LongmillError(
                f"need 1 <= num_queries <= num_needles <= 1000, got num_queries={self.num_queries}, "
                f"num_needles={self.num_needles}"
            )


def needles_question(keys: list[str]) -> str:
    """The question asking for the values of ``keys``, in that order (written here only: the generator
    writes it with this, and :meth:`Needles.check_row` rebuilds it from ``task_data`` to compare)."""
    if len(keys) == 1:
        return f"What is the special magic number for {keys[0]} mentioned in the provided text?"
    return (
        f"What are the special magic numbers for {', '.join(keys[:-1])} and {keys[-1]} mentioned in "
        "the provided text? Give them in that order, separated by commas."
    )


def needles_answer(values: list[str]) -> list[str]:
    """Accepted answers for values asked in order: "a, b and c" and "a, b, c" (one value: itself)."""
    if len(values) == 1:
        return [values[0]]
    return [", ".join(values), ", ".join(values[:-1]) + " and " + values[-1]]


@GENERATORS.register("needles")
class Needles(_Retrieval):
    """RULER-style multi-key needles: find the magic number(s) of the given key(s) among many."""

    name = "needles"
    version = "1"
    task = "needles"
    ability = "long_context_retrieval"
    config_cls = NeedlesConfig
    config: NeedlesConfig

    def build(self, index: int, triplet: Triplet, rng: np.random.Generator) -> Sample:
        c = self.config
        keys: list[str] = []
        while len(keys) < c.num_needles:
            k = rng_uuid(rng, short=True)
            if k not in keys:
                keys.append(k)
        values = [str(int(v)) for v in rng.choice(9_000_000, size=c.num_needles, replace=False) + 1_000_000]
        docs = [
            Document.make(NEEDLE_TITLE, NEEDLE_TEXT.format(key=k, value=v))
            for k, v in zip(keys, values, strict=True)
        ]
        asked = [int(i) for i in rng.choice(c.num_needles, size=c.num_queries, replace=False)]
        gold = [docs[i] for i in asked]
        others = [d for i, d in enumerate(docs) if i not in set(asked)]
        qkeys, qvalues = [keys[i] for i in asked], [values[i] for i in asked]
        question = needles_question(qkeys)
        answers = needles_answer(qvalues)
        item = self.item(triplet, question, answers, gold, len(gold), "single" if len(gold) == 1 else "multi")
        head, tail = longqa_pieces(question)
        fit = self.fit_needles(index, rng, head, tail, gold, others)
        data = {"queries": qkeys, "num_needles": c.num_needles, "placement": c.placement_for(index)}
        return self.make_sample(index, item, fit, task_data=data)

    @classmethod
    def check_row(cls, row: dict) -> list[tuple[str, str]]:
        """Read every needle back from the text; the queried keys' values must be the answer."""
        try:
            data = cls.task_data(row)
            queries, n = list(data["queries"]), int(data["num_needles"])
        except (ValueError, KeyError, TypeError) as e:
            return [("needles", f"extra_info.task_data is missing or malformed ({e})")]
        found = _NEEDLE.findall(cls.user_text(row))
        table: dict[str, list[str]] = {}
        for k, v in found:
            table.setdefault(k, []).append(v)
        problems = []
        if len(found) != n:
            problems.append(("needles", f"the text has {len(found)} needles, task_data says {n}"))
        if any(len(v) > 1 for v in table.values()):
            problems.append(("needles", "a key has more than one needle in the text"))
        problems += longqa_question_problems("needles", row, needles_question(queries))
        missing = [k for k in queries if k not in table]
        if missing:
            return problems + [("needles", f"no needle in the text for the queried key(s) {missing}")]
        gold = {k for g in row["gold_docs"] for k, _ in _NEEDLE.findall(g["text"])}
        if gold != set(queries):
            problems.append(
                ("needles", f"the gold documents hold the needles of {sorted(gold)}, not of the queried keys")
            )
        return problems + cls.compare("needles", row, needles_answer([table[k][0] for k in queries])[0])


# -- variable tracking -----------------------------------------------------------------------------


@dataclass
class VarTrackConfig(RetrievalConfig):
    """Variable tracking options.

    Args:
        num_chains: chains of assignments in the context (one is asked about, the others are distractors).
        chain_length: variables per chain (the first is assigned a number, each next one the previous).
    """

    num_chains: int = 3
    chain_length: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.num_chains <= 200 or not 2 <= self.chain_length <= 50:
            raise LongmillError(
                f"need 1 <= num_chains <= 200 and 2 <= chain_length <= 50, got "
                f"num_chains={self.num_chains}, chain_length={self.chain_length}"
            )


def resolve_assignments(assignments: list[tuple[str, str, str]]) -> dict[str, str]:
    """``{variable: value}`` from ``(name, number, source)`` triples (one of number/source empty).

    Raises:
        ValueError: a variable is assigned twice, or a chain loops or ends at an unassigned variable.
    """
    table: dict[str, tuple[str, str]] = {}
    for name, number, source in assignments:
        if name in table:
            raise ValueError(f"variable {name} is assigned more than once")
        table[name] = (number, source)
    out: dict[str, str] = {}
    for name in table:
        seen, cur = [], name
        while True:
            if cur not in table:
                raise ValueError(f"variable {name} refers to {cur}, which is never assigned")
            if cur in seen:
                raise ValueError(f"the assignments of {name} loop")
            seen.append(cur)
            number, source = table[cur]
            if number:
                out[name] = number
                break
            cur = source
    return out


def vartrack_question(value: str) -> str:
    """The question asking which variables hold ``value`` (written here only: the generator writes it with
    this, and :meth:`VarTrack.check_row` rebuilds it from ``task_data`` to compare)."""
    return (
        f"Find all variables that are assigned the value {value} in the text above, directly or "
        "through other variables. List them in the order of their assignment chain, separated by "
        "spaces."
    )


@GENERATORS.register("vartrack")
class VarTrack(_Retrieval):
    """RULER-style variable tracking: which variables end up holding a given value."""

    name = "vartrack"
    version = "1"
    task = "vartrack"
    ability = "long_context_retrieval"
    config_cls = VarTrackConfig
    config: VarTrackConfig

    def build(self, index: int, triplet: Triplet, rng: np.random.Generator) -> Sample:
        c = self.config
        letters = np.array(list(string.ascii_uppercase))
        names: list[str] = []
        while len(names) < c.num_chains * c.chain_length:
            v = "".join(rng.choice(letters, size=5))
            if v not in names:
                names.append(v)
        values = [str(int(v)) for v in rng.choice(90_000, size=c.num_chains, replace=False) + 10_000]
        chains = [names[j * c.chain_length : (j + 1) * c.chain_length] for j in range(c.num_chains)]
        docs = []
        for chain, value in zip(chains, values, strict=True):
            texts = [VAR_VALUE.format(name=chain[0], value=value)]
            texts += [VAR_COPY.format(name=chain[i], source=chain[i - 1]) for i in range(1, len(chain))]
            docs.append([Document.make(NEEDLE_TITLE, t) for t in texts])
        gold, others = docs[0], [d for chain_docs in docs[1:] for d in chain_docs]
        question = vartrack_question(values[0])
        head, tail = longqa_pieces(question)
        fit = self.fit_needles(
            index, rng, head, tail, gold, [others[int(i)] for i in rng.permutation(len(others))]
        )
        # The chain's order is the answer; the order in which its assignments appear in the text (which
        # differs, as they are placed independently) is accepted too.
        where = {d.doc_id: i for i, d in enumerate(fit.docs)}
        seen = [v for _, v in sorted(zip((where[d.doc_id] for d in gold), chains[0], strict=True))]
        answers = list(dict.fromkeys([" ".join(chains[0]), " ".join(seen)]))
        item = self.item(triplet, question, answers, gold, c.chain_length, "vartrack")
        data = {
            "value": values[0],
            "num_chains": c.num_chains,
            "chain_length": c.chain_length,
            "placement": c.placement_for(index),
        }
        return self.make_sample(index, item, fit, task_data=data)

    @classmethod
    def check_row(cls, row: dict) -> list[tuple[str, str]]:
        """Resolve every assignment in the text; the variables holding the asked value must be the answer."""
        try:
            data = cls.task_data(row)
            value, chains, length = str(data["value"]), int(data["num_chains"]), int(data["chain_length"])
        except (ValueError, KeyError, TypeError) as e:
            return [("vartrack", f"extra_info.task_data is missing or malformed ({e})")]
        found = _ASSIGN.findall(cls.user_text(row))
        try:
            resolved = resolve_assignments(found)
        except ValueError as e:
            return [("vartrack", str(e))]
        problems = []
        if len(found) != chains * length:
            problems.append(
                (
                    "vartrack",
                    f"the text has {len(found)} assignments, task_data says {chains} chains of {length}",
                )
            )
        problems += longqa_question_problems("vartrack", row, vartrack_question(value))
        holders = {name for name, v in resolved.items() if v == value}
        # the chain order: the variable assigned the number first, then each one that copies the previous
        copies = {source: name for name, number, source in found if source}
        order = [n for n, number, _ in found if number == value]
        while order and order[-1] in copies and len(order) <= len(holders):
            order.append(copies[order[-1]])
        if set(order) != holders:
            return problems + [("vartrack", f"the variables holding {value} do not form one chain")]
        gold = {name for g in row["gold_docs"] for name, _, _ in _ASSIGN.findall(g["text"])}
        if gold != holders:
            problems.append(
                (
                    "vartrack",
                    f"the gold documents are the assignments of {sorted(gold)}, not of the chain of {value}",
                )
            )
        if any(sorted(a.split()) != sorted(holders) for a in row["reward_model"]["ground_truth"]):
            problems.append(("vartrack", f"an accepted answer is not exactly the variables holding {value}"))
        return problems + cls.compare("vartrack", row, " ".join(order))
