"""``aggregation``: questions whose answer needs facts scattered over many documents of the context.

The question names N entities of one kind from the synthetic world (:mod:`datagen.sources.synthetic`)
and asks for a count, a sum, the largest or smallest, or the one of them that has a property:

- ``count``: "Consider these 8 people: A, B, ... and H. How many of them were born before 1900?"
- ``sum``: "... What is the combined population of these 6 cities?"
- ``max`` / ``min``: "... Which of them was released most recently?"
- ``select``: "... Which of them is headquartered in Velora?" (exactly one is)

The answer is computed from the world, and each named entity's fact sits only in its own document, so
every one of the N documents must be read: skimming a few fails. The N documents are spread through the
context among distractors (the named entities' look-alikes, whose names differ by one letter, first).

Each row carries, as data in ``extra_info.task_data``, the operation, the property and for each named
entity its document id and the sentence stating the fact; :meth:`Aggregation.check_row` rebuilds the
question from that data with :func:`question_text` (the function that wrote it) and compares it with the
question column and the prompt, finds each sentence inside its document's span of the prompt, reads the
value back from that sentence, recomputes the answer and compares it with the ground truth.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from datagen.generators.base import GENERATORS, GenConfig, Generator, longqa_question_problems
from datagen.prompts import longqa_pieces
from datagen.schema import Sample, SupportingFact, Triplet
from datagen.sources.synthetic import (
    CITY,
    COMPANY,
    COUNTRY,
    FILM,
    PERSON,
    RIVER,
    UNIVERSITY,
    Region,
    SyntheticWorld,
)
from longmill.errors import LongmillError
from longmill.rng import stable_id

OPS = ("count", "sum", "max", "min", "select")
#: samples drawn from one region of the world before moving to the next (regions are built on demand)
PER_REGION = 32
#: attempts at drawing a well-posed question (unique extreme, a count strictly between 0 and N, ...)
MAX_DRAWS = 200

PLURAL = {
    PERSON: "people",
    CITY: "cities",
    COUNTRY: "countries",
    RIVER: "rivers",
    UNIVERSITY: "universities",
    COMPANY: "companies",
    FILM: "films",
}


@dataclass(frozen=True)
class NumericSpec:
    """How questions about a numeric attribute are worded (``{t}`` a threshold, ``{n}`` the count)."""

    less: str
    more: str
    max: str
    min: str
    sum: str | None = None  # a question, or None where a total means nothing (years)
    commas: bool = False  # the documents write the value with thousands separators


NUMERIC: dict[tuple[str, str], NumericSpec] = {
    (PERSON, "birth_year"): NumericSpec(
        "were born before {t}", "were born after {t}", "was born most recently", "was born first"
    ),
    (CITY, "population"): NumericSpec(
        "have fewer than {t} inhabitants",
        "have more than {t} inhabitants",
        "has the largest population",
        "has the smallest population",
        "What is the combined population of these {n} cities?",
        commas=True,
    ),
    (COUNTRY, "population"): NumericSpec(
        "have fewer than {t} inhabitants",
        "have more than {t} inhabitants",
        "has the largest population",
        "has the smallest population",
        "What is the combined population of these {n} countries?",
        commas=True,
    ),
    (RIVER, "length"): NumericSpec(
        "are shorter than {t} kilometres",
        "are longer than {t} kilometres",
        "is the longest",
        "is the shortest",
        "What is the total length of these {n} rivers, in kilometres?",
    ),
    (UNIVERSITY, "founded"): NumericSpec(
        "were founded before {t}", "were founded after {t}", "was founded most recently", "was founded first"
    ),
    (UNIVERSITY, "students"): NumericSpec(
        "enrol fewer than {t} students",
        "enrol more than {t} students",
        "has the most students",
        "has the fewest students",
        "How many students do these {n} universities enrol in total?",
        commas=True,
    ),
    (COMPANY, "founded"): NumericSpec(
        "were founded before {t}", "were founded after {t}", "was founded most recently", "was founded first"
    ),
    (COMPANY, "employees"): NumericSpec(
        "employ fewer than {t} people",
        "employ more than {t} people",
        "employs the most people",
        "employs the fewest people",
        "How many people do these {n} companies employ in total?",
        commas=True,
    ),
    (FILM, "release_year"): NumericSpec(
        "were released before {t}",
        "were released after {t}",
        "was released most recently",
        "was released first",
    ),
    (FILM, "runtime"): NumericSpec(
        "run for less than {t} minutes",
        "run for more than {t} minutes",
        "has the longest running time",
        "has the shortest running time",
        "What is the total running time of these {n} films, in minutes?",
    ),
}

#: (kind, key) -> (plural predicate, singular predicate); ``{o}`` is the object as the documents write it.
#: Relations take the object entity's reference; ``industry`` and ``genre`` take the value.
CATEGORICAL: dict[tuple[str, str], tuple[str, str]] = {
    (PERSON, "birthplace"): ("were born in {o}", "was born in {o}"),
    (PERSON, "citizenship"): ("were citizens of {o}", "was a citizen of {o}"),
    (PERSON, "alma_mater"): ("studied at {o}", "studied at {o}"),
    (CITY, "country"): ("are located in {o}", "is located in {o}"),
    (CITY, "river"): ("lie on {o}", "lies on {o}"),
    (RIVER, "source"): ("rise in {o}", "rises in {o}"),
    (UNIVERSITY, "campus"): ("are located in {o}", "is located in {o}"),
    (COMPANY, "hq"): ("are headquartered in {o}", "is headquartered in {o}"),
    (COMPANY, "industry"): ("operate in the {o} industry", "operates in the {o} industry"),
    (FILM, "director"): ("were directed by {o}", "was directed by {o}"),
    (FILM, "studio"): ("were produced by {o}", "was produced by {o}"),
    (FILM, "setting"): ("are set in {o}", "is set in {o}"),
    (FILM, "genre"): ("are {o} films", "is {a} film"),
}

_NUMBER = re.compile(r"\d[\d,]*\d|\d")
_NUMBER_WORDS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
)


def parse_ops(ops: str) -> tuple[str, ...]:
    """``"count,max"`` -> ``("count", "max")``; an unknown operation is an error that lists the valid ones."""
    out = tuple(o.strip() for o in str(ops).split(",") if o.strip())
    bad = [o for o in out if o not in OPS]
    if not out or bad:
        raise LongmillError(f"ops must be a comma-separated list of {', '.join(OPS)}; got {ops!r}")
    return tuple(dict.fromkeys(out))


def fact_number(sentence: str) -> int:
    """The one number a numeric fact sentence states ("... has a population of 1,234,000." -> 1234000).

    Raises:
        ValueError: the sentence states no number or more than one.
    """
    nums = _NUMBER.findall(sentence)
    if len(nums) != 1:
        raise ValueError(f"expected exactly one number in {sentence!r}, found {len(nums)}")
    return int(nums[0].replace(",", ""))


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _article(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _names(names: list[str]) -> str:
    return ", ".join(names[:-1]) + " and " + names[-1]


def _count_answers(n: int) -> list[str]:
    return [str(n)] + ([_NUMBER_WORDS[n]] if n < len(_NUMBER_WORDS) else [])


def _threshold_text(t: int, commas: bool) -> str:
    return f"{t:,}" if commas else str(t)


def _nice_between(lo: int, hi: int) -> int:
    """A round number in ``(lo, hi]`` (the coarsest power of ten that has one), else ``hi``."""
    for p in (10**k for k in range(9, -1, -1)):
        t = (lo // p + 1) * p
        if lo < t <= hi:
            return t
    return hi


def compute_answer(
    op: str, values: list[Any], names: list[str], direction: str | None, target: Any
) -> tuple[str | None, int | None]:
    """The canonical answer (or None where the question is ill-posed) and, for selections, the winner.

    Args:
        op: one of :data:`OPS`.
        values: each named entity's value (ints for numeric properties, strings otherwise).
        names: the named entities, in the same order.
        direction: ``less`` or ``more`` for threshold counts; None for equality counts.
        target: the threshold (count with a direction) or the value looked for (count, select).

    Returns:
        ``(answer, winner index)``; the index is None for count and sum.
    """
    if op == "sum":
        return f"{sum(values):,}", None
    if op in ("max", "min"):
        best = max(values) if op == "max" else min(values)
        winners = [i for i, v in enumerate(values) if v == best]
        return (names[winners[0]], winners[0]) if len(winners) == 1 else (None, None)
    if op == "count":
        if direction == "less":
            n = sum(v < target for v in values)
        elif direction == "more":
            n = sum(v > target for v in values)
        else:
            n = sum(v == target for v in values)
        return str(n), None
    if op == "select":
        hits = [i for i, v in enumerate(values) if v == target]
        return (names[hits[0]], hits[0]) if len(hits) == 1 else (None, None)
    raise ValueError(f"unknown operation {op!r}")


def question_text(
    op: str, kind: str, key: str, names: list[str], direction: str | None = None, target: Any = None
) -> str:
    """The question, written from its structure: the generator writes it with this, and
    :meth:`Aggregation.check_row` rebuilds it from ``extra_info.task_data`` to compare with the prompt.

    Args:
        op: one of :data:`OPS`.
        kind: the entities' kind (a key of :data:`PLURAL`).
        key: the property asked about (with ``kind`` a key of :data:`NUMERIC` or :data:`CATEGORICAL`).
        names: the named entities, in the order the question lists them.
        direction: ``less`` or ``more`` for threshold counts; None otherwise.
        target: the threshold (count with a direction) or the value looked for (count, select).

    Example:
        >>> question_text("max", "river", "length", ["Ostra River", "Vel River", "Ama River"])
        'Consider these 3 rivers: Ostra River, Vel River and Ama River. Which of them is the longest?'
    """
    n = len(names)
    intro = f"Consider these {n} {PLURAL[kind]}: {_names(names)}."
    if op == "sum":
        ask = (NUMERIC[(kind, key)].sum or "").format(n=n)
    elif op in ("max", "min"):
        ask = f"Which of them {getattr(NUMERIC[(kind, key)], op)}?"
    elif op == "count" and (kind, key) in NUMERIC:
        spec = NUMERIC[(kind, key)]
        ask = f"How many of them {getattr(spec, str(direction)).format(t=_threshold_text(target, spec.commas))}?"
    elif op in ("count", "select"):
        plural, singular = CATEGORICAL[(kind, key)]
        predicate = (singular if op == "select" else plural).format(o=target, a=_article(str(target)))
        ask = f"{'Which' if op == 'select' else 'How many'} of them {predicate}?"
    else:
        raise ValueError(f"unknown operation {op!r}")
    return f"{intro} {ask}"


@dataclass
class AggregationConfig(GenConfig):
    """Aggregation options, on top of :class:`GenConfig`.

    Args:
        num_items: how many entities the question names (the documents that must all be read).
        ops: the operations to draw from, comma-separated: count, sum, max, min, select.
        world_seed: the seed of the synthetic world the questions are drawn from (independent of the
            source, which supplies the distractor documents).
    """

    num_items: int = 8
    ops: str = ",".join(OPS)
    world_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 3 <= self.num_items <= 24:
            raise LongmillError(
                f"num_items must be in [3, 24] (entities of one kind in a world region), got {self.num_items}"
            )
        self.ops = ",".join(parse_ops(self.ops))


@dataclass
class _Question:
    op: str
    kind: str
    key: str
    members: list[int]
    question: str
    answers: list[str]
    direction: str | None = None
    target: Any = None


@GENERATORS.register("aggregation")
class Aggregation(Generator):
    """Aggregation over many documents: count, sum, max/min, or which one of N named entities."""

    name = "aggregation"
    version = "1"
    task = "aggregation"
    config_cls = AggregationConfig
    config: AggregationConfig
    _world: ClassVar[dict[int, SyntheticWorld]] = {}

    def world(self) -> SyntheticWorld:
        seed = int(self.config.world_seed)
        if seed not in self._world:
            self._world[seed] = SyntheticWorld(seed)
        return self._world[seed]

    # -- drawing a question --------------------------------------------------------------------------
    @staticmethod
    def value(region: Region, idx: int, key: str) -> Any:
        """Entity ``idx``'s value of ``key`` as the question logic compares it (None when it has none).

        Relations give the object's reference as the documents write it; attributes give the raw value.
        """
        if key in region.rel:
            o = region.rel[key].get(idx)
            return None if o is None else region.entities[o].ref
        v = region.attr.get(key, {}).get(idx)
        return int(v) if isinstance(v, int | np.integer) else v

    def _draw(self, region: Region, rng: np.random.Generator) -> _Question:
        n = self.config.num_items
        ops = parse_ops(self.config.ops)
        for _ in range(MAX_DRAWS):
            op = ops[int(rng.integers(len(ops)))]
            if op == "sum":
                specs = [k for k, s in NUMERIC.items() if s.sum]
            elif op in ("max", "min"):
                specs = list(NUMERIC)
            elif op == "select":
                specs = list(CATEGORICAL)
            else:
                specs = list(NUMERIC) + list(CATEGORICAL)
            kind, key = specs[int(rng.integers(len(specs)))]
            pool = [e for e in region.by_kind[kind] if self.value(region, e, key) is not None]
            if len(pool) < n:
                continue
            members = [pool[int(i)] for i in rng.choice(len(pool), size=n, replace=False)]
            q = self._word(region, rng, op, kind, key, members)
            if q is not None:
                return q
        raise LongmillError(
            f"aggregation: could not draw a well-posed question with {n} items from region "
            f"{region.index}; use a smaller --num-items"
        )

    def _word(
        self, region: Region, rng: np.random.Generator, op: str, kind: str, key: str, members: list[int]
    ) -> _Question | None:
        n = len(members)
        names = [region.entities[m].name for m in members]
        values = [self.value(region, m, key) for m in members]
        numeric = (kind, key) in NUMERIC
        direction, target = None, None
        if op == "count" and numeric:
            ordered = sorted(set(values))
            if len(ordered) < 2:
                return None
            k = int(rng.integers(1, len(ordered)))
            direction = "less" if rng.random() < 0.5 else "more"
            lo, hi = int(ordered[k - 1]), int(ordered[k])
            # "v < t" splits the values at k for t in (lo, hi]; "v > t" for t in [lo, hi). Years are used as
            # written, other quantities as the roundest number in range.
            if direction == "less":
                target = hi if kind_is_year(key) else _nice_between(lo, hi)
            else:
                target = lo if kind_is_year(key) else _nice_between(lo - 1, hi - 1)
        elif op in ("count", "select"):
            counts: dict[Any, int] = {}
            for v in values:
                counts[v] = counts.get(v, 0) + 1
            if op == "select":
                options = sorted(v for v, c in counts.items() if c == 1)
            else:
                options = sorted(v for v, c in counts.items() if c < n)
            if not options:
                return None
            target = options[int(rng.integers(len(options)))]
        answer, winner = compute_answer(op, values, names, direction, target)
        if answer is None:
            return None
        if op == "count" and not 0 < int(answer) < n:
            return None
        if op == "sum":
            answers = [answer, answer.replace(",", "")]
        elif op == "count":
            answers = _count_answers(int(answer))
        else:
            assert winner is not None
            answers = list(region.entities[members[winner]].aliases)
        question = question_text(op, kind, key, names, direction, target)
        return _Question(op, kind, key, members, question, list(dict.fromkeys(answers)), direction, target)

    # -- the sample ----------------------------------------------------------------------------------
    def build(self, index: int, triplet: Triplet, rng: np.random.Generator) -> Sample:
        c = self.config
        region_index = index // PER_REGION
        region = self.world().region(region_index)
        q = self._draw(region, rng)
        docs = [region.documents[m] for m in q.members]
        facts = [region.fact(m, q.key) for m in q.members]
        twins = [region.entities[m].twin for m in q.members]
        member_set = set(q.members)
        # Hard distractors: the look-alikes of the named entities, then other entities of the same kind.
        hard = [t for t in twins if t is not None and t not in member_set]
        same_kind = [e for e in region.by_kind[q.kind] if e not in member_set and e not in hard]
        priority = [region.documents[e] for e in hard]
        priority += [region.documents[same_kind[int(i)]] for i in rng.permutation(len(same_kind))]
        if not c.hard_distractors:
            priority = []
        world_id = f"synthetic-world:{c.world_seed}-r{region_index}-{stable_id(q.question)}"
        item = Triplet(
            id=world_id,
            source="synthetic",
            split=triplet.split,
            question=q.question,
            answers=q.answers,
            hops=len(docs),
            question_type=q.op,
            gold_docs=docs,
            supporting_facts=[SupportingFact(f.title, f.sent_idx, f.text) for f in facts],
            distractor_docs=priority,
        )
        head, tail = longqa_pieces(q.question)
        fit = self.fit(item, rng, head, tail, priority)
        data = {
            "op": q.op,
            "kind": q.kind,
            "key": q.key,
            "numeric": (q.kind, q.key) in NUMERIC,
            "direction": q.direction,
            "target": q.target,
            "world_seed": c.world_seed,
            "region": region_index,
            "items": [
                {
                    "name": region.entities[m].name,
                    "ref": region.entities[m].ref,
                    "doc_id": d.doc_id,
                    "fact": f.text,
                    "value": None if (q.kind, q.key) in NUMERIC else self.value(region, m, q.key),
                }
                for m, d, f in zip(q.members, docs, facts, strict=True)
            ],
        }
        return self.make_sample(index, item, fit, task_data=data)

    # -- verification ------------------------------------------------------------------------------
    @classmethod
    def check_row(cls, row: dict) -> list[tuple[str, str]]:
        """Re-derive the answer from the named entities' documents as they stand in the prompt."""
        name = "aggregation"
        try:
            data = json.loads((row.get("extra_info") or {}).get("task_data") or "")
            op, items = data["op"], data["items"]
        except (ValueError, KeyError, TypeError) as e:
            return [
                (
                    name,
                    f"extra_info.task_data is missing or malformed ({e}); it carries the question's structure",
                )
            ]
        user = next((m["content"] for m in reversed(row["prompt"]) if m["role"] == "user"), "")
        offsets, pos = list(row["doc_offsets"]), {d: i for i, d in enumerate(row["doc_ids"])}
        problems: list[tuple[str, str]] = []
        values: list[Any] = []
        for it in items:
            i = pos.get(it["doc_id"])
            if i is None or i + 1 >= len(offsets):
                problems.append(
                    (name, f"the document of {it['name']!r} ({it['doc_id']}) is not in the context")
                )
                continue
            span = user[offsets[i] : offsets[i + 1]]
            if it["name"] not in span or it["fact"] not in span:
                problems.append((name, f"the document of {it['name']!r} does not state {it['fact']!r}"))
                continue
            if data["numeric"]:
                try:
                    values.append(fact_number(it["fact"]))
                except ValueError as e:
                    problems.append((name, str(e)))
            else:
                # A sentence that starts with a reference capitalises it ("The Ostra River flows through ...").
                rest = it["fact"].replace(it["ref"], "\0").replace(_cap(it["ref"]), "\0")
                v = it["value"]
                if not isinstance(v, str) or not re.search(
                    r"(?<!\w)(?:" + re.escape(v) + "|" + re.escape(_cap(v)) + r")(?!\w)", rest
                ):
                    problems.append(
                        (name, f"the fact about {it['name']!r} does not say {v!r}: {it['fact']!r}")
                    )
                values.append(v)
        try:
            question = question_text(
                op,
                data["kind"],
                data["key"],
                [it["name"] for it in items],
                data.get("direction"),
                data.get("target"),
            )
        except (KeyError, AttributeError, ValueError) as e:
            return problems + [
                (name, f"extra_info.task_data describes no question ({type(e).__name__}: {e})")
            ]
        problems += longqa_question_problems(name, row, question)
        if problems:
            return problems
        answer, _ = compute_answer(
            op, values, [it["name"] for it in items], data.get("direction"), data.get("target")
        )
        truth = list(row["reward_model"]["ground_truth"])
        if answer is None:
            return [(name, f"the documents do not give one answer to {op} (a tie or no match)")]
        if not truth or truth[0] != answer:
            return [(name, f"the documents give {answer!r} but the ground truth is {truth[:1]}")]
        if list(row["answers"]) != truth:
            return [(name, "answers and reward_model.ground_truth differ")]
        return []


def kind_is_year(key: str) -> bool:
    """Years are compared as written ("born before 1900"), not rounded."""
    return key in ("birth_year", "founded", "release_year")
