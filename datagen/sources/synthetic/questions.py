"""Questions over one region: ``bridge`` questions along a relation path and ``comparison`` questions
between two sides, each written as a :class:`Draft` that names the facts it needs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from datagen.sources.synthetic.draw import Draw
from datagen.sources.synthetic.lexicon import (
    ATTRIBUTES,
    FUSED_QUESTIONS,
    KINDS,
    LOOPS,
    NUMERIC_COMPARISONS,
    PLURAL_NP,
    RELATIONS,
    SAME_COMPARISONS,
    cap,
    value_answers,
)
from datagen.sources.synthetic.world import Region

Step = tuple[str, str]  # (relation or attribute key, subject kind)


def _steps_from(kind: str, relations_only: bool) -> list[tuple[str, str | None]]:
    """(key, object kind or None for attributes) of every step leaving ``kind``."""
    out: list[tuple[str, str | None]] = [(r.key, r.obj) for r in RELATIONS.values() if kind in r.subjects]
    if not relations_only:
        out += [(a.key, None) for a in ATTRIBUTES.values() if kind in a.subjects]
    return out


def _bridge_chains(hops: int) -> list[tuple[Step, ...]]:
    """Every step sequence of ``hops`` steps: ``hops - 1`` relations, then a relation or an attribute."""
    out: list[tuple[Step, ...]] = []

    def walk(kind: str, chain: tuple[Step, ...]) -> None:
        last = len(chain) == hops - 1
        for key, obj in _steps_from(kind, relations_only=not last):
            if chain and (chain[-1][0], key) in LOOPS:
                continue
            nxt = chain + ((key, kind),)
            if last:
                out.append(nxt)
            elif obj is not None:
                walk(obj, nxt)

    for k in KINDS:
        walk(k, ())
    return out


def _side_chains(target: str, depth: int) -> list[tuple[Step, ...]]:
    """Relation sequences of ``depth`` steps that end at an entity of kind ``target``."""
    out: list[tuple[Step, ...]] = []

    def walk(kind: str, chain: tuple[Step, ...]) -> None:
        if len(chain) == depth:
            if kind == target:
                out.append(chain)
            return
        for key, obj in _steps_from(kind, relations_only=True):
            if chain and (chain[-1][0], key) in LOOPS:
                continue
            assert obj is not None
            walk(obj, chain + ((key, kind),))

    for k in KINDS:
        walk(k, ())
    return out


_BRIDGE_CHAINS = {h: _bridge_chains(h) for h in (1, 2, 3, 4)}
_SIDE_CHAINS = {(k, dep): _side_chains(k, dep) for k in KINDS for dep in (0, 1, 2)}


@dataclass
class Draft:
    """A question, its answers and the facts it needs, before it becomes a :class:`Triplet`."""

    question: str
    answers: list[str]
    qtype: str
    facts: list[tuple[int, str]]  # (entity, fact key), in path order
    path: list[int]  # entities whose look-alikes and neighbours make the distractors


def _walk(region: Region, start: int, chain: Sequence[Step]) -> list[int] | None:
    """The entities visited from ``start`` along ``chain`` (start included), or None where a link is missing."""
    out = [start]
    for key, _ in chain:
        nxt = region.rel[key].get(out[-1])
        if nxt is None:
            return None
        out.append(nxt)
    return out


_DOUBLED = re.compile(r"\b(\w+) \1\b", re.IGNORECASE)


def _noun_phrase(region: Region, d: Draw, entities: Sequence[int], chain: Sequence[Step]) -> str:
    x = region.entities[entities[0]].ref
    for j, (key, _) in enumerate(chain):
        templates = RELATIONS[key].np
        # around an already composed phrase, prefer the "of" form to stacked relative clauses
        template = templates[0] if j > 0 and d.chance(0.75) else d.pick(templates)
        composed = template.format(x=x)
        if _DOUBLED.search(composed):  # "the river on which ... lies lies": take another wording
            composed = next(
                (t.format(x=x) for t in templates if not _DOUBLED.search(t.format(x=x))), composed
            )
        x = composed
    return x


def _wording(d: Draw, templates: Sequence[str], x: str) -> str:
    """A question template filled with ``x``, avoiding ones that read "... is located located?"."""
    question = d.pick(templates).format(x=x)
    if _DOUBLED.search(question):
        question = next((q.format(x=x) for q in templates if not _DOUBLED.search(q.format(x=x))), question)
    return question


def bridge(region: Region, d: Draw, hops: int) -> Draft | None:
    """A question along a random ``hops``-step path from a random entity (None where the draw fails)."""
    chain = d.pick(_BRIDGE_CHAINS[hops])
    start_kind = chain[0][1]
    walk = _walk(region, d.pick(region.by_kind[start_kind]), chain[:-1])
    if walk is None:
        return None
    subjects = walk
    if len(set(subjects)) != len(subjects):
        return None
    last_key, last_subject = chain[-1][0], subjects[-1]
    if last_key in RELATIONS:
        target = region.rel[last_key].get(last_subject)
        if target is None or target in subjects:
            return None
        answers = list(region.entities[target].aliases)
        path = subjects + [target]
    else:
        value = region.attr[last_key].get(last_subject)
        if value is None:
            return None
        answers = value_answers(last_key, value)
        path = list(subjects)
    fused = FUSED_QUESTIONS.get((chain[-2][0], last_key)) if hops >= 2 else None
    if fused and d.chance(0.5):
        question = _wording(d, fused, _noun_phrase(region, d, subjects, chain[:-2]))
    else:
        spec = RELATIONS.get(last_key) or ATTRIBUTES[last_key]
        question = _wording(d, spec.questions, _noun_phrase(region, d, subjects, chain[:-1]))
    q_low = question.lower()
    if any(re.search(rf"\b{re.escape(a.lower())}\b", q_low) for a in answers):
        return None  # the answer must not be named in the question
    facts = [(s, key) for s, (key, _) in zip(subjects, chain, strict=True)]
    return Draft(question, answers, "bridge", facts, path)


def _split_depths(hops: int, d: Draw) -> tuple[int, int]:
    options = [(a, hops - 2 - a) for a in range(3) if 0 <= hops - 2 - a <= 2]
    return d.pick(options)


def _backward(region: Region, targets: list[int], chain: Sequence[Step]) -> list[int]:
    """The start entities from which ``chain`` reaches one of ``targets``."""
    current = targets
    for key, kind in reversed(chain):
        nxt: list[int] = []
        for t in current:
            nxt.extend(s for s in region.inv[key].get(t, ()) if region.entities[s].kind == kind)
        current = nxt
    return current


def comparison(region: Region, d: Draw, hops: int) -> Draft | None:
    """A numeric or same-object comparison of two sides needing ``hops`` facts (None where it fails)."""
    numeric = d.chance(0.5)
    want_yes = d.chance(0.5)
    for _ in range(20):  # keep the drawn answer (yes or no), so that both come out equally often
        draft = _comparison_once(region, d, hops, numeric, want_yes)
        if draft is not None:
            return draft
    return None


@dataclass
class _Side:
    """One side of a comparison: the entities from its named start to the compared one, and its value."""

    chain: tuple[Step, ...]
    path: list[int]
    value: Any = None

    @property
    def target(self) -> int:
        return self.path[-1]

    def facts(self, key: str) -> list[tuple[int, str]]:
        return [(s, k) for s, (k, _) in zip(self.path, self.chain, strict=False)] + [(self.target, key)]


def _random_side(region: Region, d: Draw, chains: Sequence[tuple[Step, ...]], kind: str) -> _Side | None:
    """A side along a random chain from a random start (None where a link is missing)."""
    chain = d.pick(chains)
    start_kind = chain[0][1] if chain else kind
    path = _walk(region, d.pick(region.by_kind[start_kind]), chain)
    return None if path is None else _Side(chain, path)


def _matching_side(
    region: Region,
    d: Draw,
    chains: Sequence[tuple[Step, ...]],
    kind: str,
    a: _Side,
    values: dict[int, Any],
    want_yes: bool,
) -> _Side | None:
    """A side whose value equals side ``a``'s (``want_yes``) or differs from it: the answer is drawn first."""
    targets = [
        t
        for t in region.by_kind[kind]
        if t != a.target and t in values and (values[t] == a.value) == want_yes
    ]
    for chain in d.shuffled(chains):
        starts = _backward(region, targets, chain)
        if starts:
            path = _walk(region, d.pick(starts), chain)
            return None if path is None else _Side(chain, path)
    return None


def _numeric_question(
    region: Region, d: Draw, key: str, kind: str, a: _Side, b: _Side, a_np: str, b_np: str
) -> tuple[str, list[str]]:
    """A question like "Who was born first, A or B?", answered by the side whose value wins."""
    template, direction = d.pick(NUMERIC_COMPARISONS[(key, kind)])
    winner = a.target if (a.value < b.value) == (direction == "min") else b.target
    return template.format(a=a_np, b=b_np), list(region.entities[winner].aliases)


def _same_question(
    region: Region, d: Draw, key: str, kind: str, a: _Side, b: _Side, a_np: str, b_np: str
) -> tuple[str, list[str]]:
    """A yes/no question like "Were A and B born in the same city?" (plural where both bridge alike)."""
    templates = SAME_COMPARISONS[(key, kind)]
    template = d.pick(templates)
    ca, cb = a.chain, b.chain
    if len(ca) == 1 and len(cb) == 1 and ca[0][0] == cb[0][0] and ca[0][0] in PLURAL_NP and d.chance(0.7):
        ref_a, ref_b = region.entities[a.path[0]].ref, region.entities[b.path[0]].ref
        question = template.replace("{a} and {b}", PLURAL_NP[ca[0][0]].format(a=ref_a, b=ref_b))
    else:
        question = template.format(a=a_np, b=b_np)
        if _DOUBLED.search(question):  # "... is located located in the same country?"
            question = next(
                (
                    t.format(a=a_np, b=b_np)
                    for t in templates
                    if not _DOUBLED.search(t.format(a=a_np, b=b_np))
                ),
                question,
            )
    return question, ["yes" if a.value == b.value else "no"]


def _comparison_once(region: Region, d: Draw, hops: int, numeric: bool, want_yes: bool) -> Draft | None:
    """One try at a comparison of the drawn family (and answer); None where a side or value is missing."""
    key, kind = d.pick(list(NUMERIC_COMPARISONS if numeric else SAME_COMPARISONS))
    da, db = _split_depths(hops, d)
    chains_a, chains_b = _SIDE_CHAINS[(kind, da)], _SIDE_CHAINS[(kind, db)]
    if not chains_a or not chains_b:
        return None
    a = _random_side(region, d, chains_a, kind)
    if a is None:
        return None
    values = region.attr[key] if numeric else region.rel[key]
    a.value = values.get(a.target)
    if a.value is None:
        return None
    if numeric:
        b = _random_side(region, d, chains_b, kind)
    else:
        b = _matching_side(region, d, chains_b, kind, a, values, want_yes)
    if b is None:
        return None
    b.value = values.get(b.target)
    if b.value is None or len(set(a.path + b.path)) != len(a.path) + len(b.path):
        return None
    if d.chance(0.5):  # which side is named first
        a, b = b, a
    a_np = _noun_phrase(region, d, a.path, a.chain)
    b_np = _noun_phrase(region, d, b.path, b.chain)
    if numeric:
        if a.value == b.value:
            return None
        question, answers = _numeric_question(region, d, key, kind, a, b, a_np, b_np)
    else:
        question, answers = _same_question(region, d, key, kind, a, b, a_np, b_np)
    path = a.path + b.path
    if not numeric:
        path += [a.value, b.value]
    return Draft(cap(question), answers, "comparison", a.facts(key) + b.facts(key), path)


def norm_question(q: str) -> str:
    """``q`` lower-cased with punctuation runs as single spaces: the key of question de-duplication."""
    return re.sub(r"[^a-z0-9]+", " ", q.lower()).strip()
