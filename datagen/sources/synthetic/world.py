"""The synthetic world: independent regions of entities, their facts and their documents.

A region is drawn from ``(seed, region index)`` alone by :class:`RegionBuilder`: first the entities
and their names (:mod:`.names`), then the facts kind by kind (:attr:`RegionBuilder.FACT_STEPS`), then
one document per entity whose sentences each state one fact.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datagen.schema import Document, SupportingFact
from datagen.sources.synthetic import names
from datagen.sources.synthetic.draw import Draw
from datagen.sources.synthetic.lexicon import (
    CITY,
    CLIMATES,
    COMPANY,
    COUNTRY,
    ECONOMIES,
    FACTS,
    FILM,
    FOUNDER_OCCUPATIONS,
    GENRES,
    INDUSTRIES,
    KINDS,
    KNOWN_FOR,
    LANDMARKS,
    LOOKALIKE_SHARE,
    OCCUPATIONS,
    PERSON,
    PRAISED,
    PRODUCTS,
    REGION_COUNTS,
    RELATIONS,
    RIVER,
    SCHOLAR_OCCUPATIONS,
    UNI_TYPES,
    UNIVERSITY,
    cap,
    value_text,
)
from longmill.errors import LongmillError
from longmill.rng import stable_hash

log = logging.getLogger(__name__)

#: bump when the world or the question logic changes (the output changes with it)
WORLD_VERSION = "2"

#: the fact each kind's document opens with
DOC_INTRO = {PERSON: "occupation", CITY: "country", COUNTRY: "official_name", RIVER: "source",
             UNIVERSITY: "uni_type", COMPANY: "industry", FILM: "genre"}  # fmt: skip
#: the other facts each kind's document may state, in an order shuffled per document
DOC_BODY = {
    PERSON: ("birthplace", "birth_year", "citizenship", "alma_mater", "death_year", "known_for"),
    CITY: ("population", "river", "city_founded", "landmark", "economy", "climate"),
    COUNTRY: ("capital", "population", "independence", "currency", "language"),
    RIVER: ("length", "mouth", "basin", "navigable", "tributaries"),
    UNIVERSITY: ("campus", "founder", "founded", "students", "library"),
    COMPANY: ("founder", "hq", "founded", "employees", "products"),
    FILM: ("director", "release_year", "studio", "setting", "runtime", "reception"),
}


@dataclass
class Entity:
    """One fictional entity.

    Args:
        idx: its index in :attr:`Region.entities` (and :attr:`Region.documents`).
        kind: one of :data:`KINDS`.
        name: its name, which is also its document's title.
        ref: how running text refers to it ("the University of Ostrel", "the Ostra River").
        aliases: every accepted answer naming it, ``name`` first.
        twin: the index of its look-alike (a same-kind entity whose name differs by one letter), if any.
    """

    idx: int
    kind: str
    name: str
    ref: str
    aliases: tuple[str, ...]
    twin: int | None = None


@dataclass
class Region:
    """One independent region of the world: entities, their facts and their documents.

    Args:
        seed: the world seed.
        index: the region index.
        entities: every entity; ``entities[i].idx == i``.
        rel: relation key -> {subject idx: object idx}.
        attr: attribute key -> {subject idx: raw value}.
        sentences: the sentences of each entity's document.
        fact_sent: for each entity, fact key -> index of the sentence stating it.
        documents: one :class:`Document` per entity (title = name, text = sentences joined by spaces).
    """

    seed: int
    index: int
    entities: list[Entity]
    rel: dict[str, dict[int, int]]
    attr: dict[str, dict[int, Any]]
    sentences: list[list[str]]
    fact_sent: list[dict[str, int]]
    documents: list[Document]
    by_kind: dict[str, list[int]] = field(default_factory=dict)
    inv: dict[str, dict[int, list[int]]] = field(default_factory=dict)
    neighbours: list[list[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.by_kind = {k: [] for k in KINDS}
        for e in self.entities:
            self.by_kind[e.kind].append(e.idx)
        self.inv = {}
        for key, m in self.rel.items():
            inv: dict[int, list[int]] = {}
            for s, o in m.items():
                inv.setdefault(o, []).append(s)
            self.inv[key] = inv
        nb: list[set[int]] = [set() for _ in self.entities]
        for m in self.rel.values():
            for s, o in m.items():
                nb[s].add(o)
                nb[o].add(s)
        self.neighbours = [sorted(x) for x in nb]
        self._by_name = {e.name: e.idx for e in self.entities}

    def entity(self, name: str) -> Entity:
        """The entity called ``name`` (a :class:`LongmillError` if there is none)."""
        try:
            return self.entities[self._by_name[name]]
        except KeyError:
            raise LongmillError(
                f"region {self.index} of seed {self.seed} has no entity named {name!r}"
            ) from None

    def fact(self, idx: int, key: str) -> SupportingFact:
        """The sentence of entity ``idx``'s document that states fact ``key``."""
        j = self.fact_sent[idx][key]
        return SupportingFact(title=self.entities[idx].name, sent_idx=j, text=self.sentences[idx][j])


class RegionBuilder:
    """Draws one region. All randomness comes from the region's own generator.

    The order of the draws is the world: entities kind by kind in :data:`KINDS` order, then the
    facts step by step in :attr:`FACT_STEPS` order (later steps read earlier facts: capitals need
    the cities' countries, founders and directors need birth years), then the documents.

    Args:
        seed: the world seed.
        index: the region index.
        lookalike_share: share of the region's entities that come in look-alike pairs.
    """

    def __init__(self, seed: int, index: int, lookalike_share: float):
        ss = np.random.SeedSequence(
            [int(seed), stable_hash("longmill.synthetic.world", WORLD_VERSION), int(index)]
        )
        self.d = Draw(np.random.default_rng(ss), chunk=4096)
        self.seed, self.index, self.share = seed, index, lookalike_share
        self.used: set[str] = set()  # lower-cased titles and stems, unique within the region
        self.entities: list[Entity] = []
        self.parts: list[names.Parts] = []
        self.ids: dict[str, list[int]] = {}  # kind -> entity indices
        self.roles: dict[int, str] = {}  # person -> occupation implied by what they founded or directed
        self.rel: dict[str, dict[int, int]] = {k: {} for k in RELATIONS}
        self.attr: dict[str, dict[int, Any]] = {}

    def build(self) -> Region:
        self.ids = {k: self._make_kind(k, REGION_COUNTS[k]) for k in KINDS}
        for step in self.FACT_STEPS:
            step(self)
        sentences, fact_sent, docs = [], [], []
        for e in self.entities:
            sents, where = self._document(e)
            sentences.append(sents)
            fact_sent.append(where)
            docs.append(Document.make(e.name, " ".join(sents)))
        return Region(self.seed, self.index, self.entities, self.rel, self.attr, sentences, fact_sent, docs)

    # ---- entities -------------------------------------------------------------------------------

    def _add(self, kind: str, p: names.Parts, twin: int | None = None) -> int:
        name, ref, aliases = names.render(kind, p)
        idx = len(self.entities)
        self.entities.append(Entity(idx, kind, name, ref, aliases, twin))
        self.parts.append(p)
        self.used.update({p["stem"].lower(), name.lower()})
        if twin is not None:
            self.entities[twin].twin = idx
        return idx

    def _make_kind(self, kind: str, n: int) -> list[int]:
        """``n`` new entities of ``kind``, each look-alike right after its original."""
        pairs = int(round(n * self.share / 2))
        out: list[int] = []
        while len(out) < n:
            p = names.draw_parts(self.d, kind, self.used)
            if names.render(kind, p)[0].lower() in self.used:
                continue
            a = self._add(kind, p)
            out.append(a)
            if pairs > 0 and len(out) < n:
                word = names.mutate(self.d, p["word"], self.used)
                twin = {**p, "word": word or "", "stem": (word or "") + p["suffix"]}
                if (
                    word is not None
                    and twin["stem"].lower() not in names.REAL_NAMES
                    and names.render(kind, twin)[0].lower() not in self.used
                ):
                    out.append(self._add(kind, twin, twin=a))
                    pairs -= 1
        return out

    # ---- facts ----------------------------------------------------------------------------------

    def _set(self, key: str, idx: int, value: Any) -> None:
        self.attr.setdefault(key, {})[idx] = value

    def _maybe(self, p: float, key: str, idx: int, value: Callable[[int], Any]) -> None:
        """Set attribute ``key`` of ``idx`` with probability ``p``; ``value(idx)`` is drawn only then."""
        if self.d.chance(p):
            self._set(key, idx, value(idx))

    def _countries(self) -> None:
        d, a = self.d, self._set
        for c in self.ids[COUNTRY]:
            a("population", c, int(round(math.exp(d.u() * math.log(60.0) + math.log(1e6)), -3)))
            a("independence", c, d.randint(1650, 1990))
            a("currency", c, names.word(d, 2).lower())
            a("official_name", c, f"the {self.parts[c]['form']} of {self.parts[c]['stem']}")
            a("language", c, names.word(d, 2) + d.pick(("ic", "ish", "ese", "i")))

    def _cities(self) -> None:
        d, a, countries = self.d, self._set, self.ids[COUNTRY]
        for j, c in enumerate(d.shuffled(self.ids[CITY])):  # every country gets at least one city
            self.rel["country"][c] = countries[j] if j < len(countries) else d.pick(countries)
            a("population", c, int(round(math.exp(d.u() * math.log(400.0) + math.log(8e3)), -2)))
            a("city_founded", c, d.randint(700, 1850))
            a("landmark", c, d.pick(LANDMARKS))
            self._maybe(0.7, "economy", c, lambda _: d.pick(ECONOMIES))
            self._maybe(0.5, "climate", c, lambda _: d.pick(CLIMATES))

    def _capitals(self) -> None:
        country = self.rel["country"]
        for c in self.ids[COUNTRY]:
            self.rel["capital"][c] = self.d.pick([x for x in self.ids[CITY] if country[x] == c])

    def _rivers(self) -> None:
        d, a = self.d, self._set
        for r in self.ids[RIVER]:
            self.rel["source"][r] = d.pick(self.ids[COUNTRY])
            a("length", r, d.randint(40, 2400))
            a("mouth", r, f"{names.word(d, 2)} Sea")
            a("basin", r, d.randint(20, 900) * 100)
            self._maybe(0.6, "navigable", r, lambda r: d.randint(1, max(1, self.attr["length"][r] // 10)) * 5)
            self._maybe(0.6, "tributaries", r, lambda _: d.randint(2, 14))

    def _city_rivers(self) -> None:
        d = self.d
        for c in self.ids[CITY]:
            if d.chance(0.6):
                self.rel["river"][c] = d.pick(self.ids[RIVER])

    def _persons(self) -> None:
        d, a, rel = self.d, self._set, self.rel
        for p in self.ids[PERSON]:
            born = d.pick(self.ids[CITY])
            rel["birthplace"][p] = born
            by = d.randint(1760, 1985)
            a("birth_year", p, by)
            rel["citizenship"][p] = rel["country"][born] if d.chance(0.75) else d.pick(self.ids[COUNTRY])
            if 2023 - by >= 40 and d.chance(0.9 if by + 95 <= 2023 else 0.4):
                a("death_year", p, by + d.randint(40, min(95, 2023 - by)))
            self._maybe(0.5, "known_for", p, lambda _: d.pick(KNOWN_FOR))

    def _universities(self) -> None:
        d, a, rel, by_year = self.d, self._set, self.rel, self.attr["birth_year"]
        persons = self.ids[PERSON]
        early = [p for p in persons if by_year[p] <= 1900] or persons
        for u in self.ids[UNIVERSITY]:
            f = d.pick(early)
            rel["founder"][u] = f
            self.roles.setdefault(f, d.pick(SCHOLAR_OCCUPATIONS))
            a("founded", u, by_year[f] + d.randint(28, 65))
            rel["campus"][u] = d.pick(self.ids[CITY])
            a("uni_type", u, d.pick(UNI_TYPES))
            a("students", u, d.randint(8, 400) * 100)
            self._maybe(0.6, "library", u, lambda _: d.randint(5, 900) * 1000)

    def _alma_maters(self) -> None:
        d, by_year, founded = self.d, self.attr["birth_year"], self.attr["founded"]
        for p in self.ids[PERSON]:
            options = [u for u in self.ids[UNIVERSITY] if founded[u] <= by_year[p] + 17]
            if options and d.chance(0.85):
                self.rel["alma_mater"][p] = d.pick(options)

    def _companies(self) -> None:
        d, a, rel, by_year = self.d, self._set, self.rel, self.attr["birth_year"]
        persons = self.ids[PERSON]
        for c in self.ids[COMPANY]:
            f = d.pick([p for p in persons if by_year[p] <= 1975] or persons)
            rel["founder"][c] = f
            self.roles.setdefault(f, d.pick(FOUNDER_OCCUPATIONS))
            a("founded", c, by_year[f] + d.randint(22, 55))
            rel["hq"][c] = d.pick(self.ids[CITY])
            a("industry", c, d.pick(INDUSTRIES))
            self._maybe(0.6, "employees", c, lambda _: d.randint(2, 900) * 50)
            self._maybe(0.6, "products", c, lambda _: d.pick(PRODUCTS))

    def _films(self) -> None:
        d, a, rel, by_year = self.d, self._set, self.rel, self.attr["birth_year"]
        persons = self.ids[PERSON]
        directors = [p for p in persons if 1870 <= by_year[p] <= 1990] or persons
        for f in self.ids[FILM]:
            p = d.pick(directors)
            rel["director"][f] = p
            self.roles[p] = "film director"
            year = by_year[p] + d.randint(min(25, 2023 - by_year[p]), max(25, min(70, 2023 - by_year[p])))
            a("release_year", f, year)
            studios = [c for c in self.ids[COMPANY] if self.attr["founded"][c] <= year]
            if studios and d.chance(0.8):
                rel["studio"][f] = d.pick(studios)
            rel["setting"][f] = d.pick(self.ids[CITY])
            a("genre", f, d.pick(GENRES))
            self._maybe(0.6, "runtime", f, lambda _: d.randint(70, 190))
            self._maybe(0.5, "reception", f, lambda _: d.pick(PRAISED))

    def _occupations(self) -> None:
        for p in self.ids[PERSON]:
            self._set("occupation", p, self.roles.get(p) or self.d.pick(OCCUPATIONS))

    #: the fact-drawing steps, in draw order (changing it changes the world)
    FACT_STEPS: tuple[Callable[[RegionBuilder], None], ...] = (
        _countries, _cities, _capitals, _rivers, _city_rivers, _persons, _universities, _alma_maters,
        _companies, _films, _occupations,
    )  # fmt: skip

    # ---- documents ------------------------------------------------------------------------------

    def _sentence(self, key: str, e: Entity) -> str | None:
        if key in RELATIONS:
            o = self.rel[key].get(e.idx)
            if o is None:
                return None
            text = self.d.pick(FACTS[key]).format(s=e.ref, o=self.entities[o].ref)
        else:
            v = self.attr.get(key, {}).get(e.idx)
            if v is None:
                return None
            text = self.d.pick(FACTS[key]).format(s=e.ref, v=value_text(key, v))
        return cap(text)

    def _document(self, e: Entity) -> tuple[list[str], dict[str, int]]:
        keys = [DOC_INTRO[e.kind]] + self.d.shuffled(DOC_BODY[e.kind])
        sents: list[str] = []
        where: dict[str, int] = {}
        for key in keys:
            s = self._sentence(key, e)
            if s is not None:
                where[key] = len(sents)
                sents.append(s)
        return sents, where


class SyntheticWorld:
    """The synthetic world of one seed: an unlimited sequence of independent regions.

    Regions are built on demand from ``(seed, index)`` alone and the last few are cached.

    Args:
        seed: the world seed.
        lookalike_share: share of each region's entities that come in look-alike pairs.
        cache_size: how many regions to keep in memory.

    Example:
        >>> region = SyntheticWorld(0).region(3)
        >>> doc = region.documents[0]
        >>> doc.title == region.entities[0].name
        True
    """

    def __init__(self, seed: int = 0, lookalike_share: float = LOOKALIKE_SHARE, cache_size: int = 4):
        self.seed = int(seed)
        self.lookalike_share = float(lookalike_share)
        self._cache: OrderedDict[int, Region] = OrderedDict()
        self._cache_size = max(1, cache_size)

    def region(self, index: int) -> Region:
        """Region ``index`` (any non-negative integer)."""
        if index < 0:
            raise LongmillError(f"region index must be >= 0, got {index}")
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        region = RegionBuilder(self.seed, index, self.lookalike_share).build()
        log.debug(
            "built synthetic region %d of seed %d (%d entities)", index, self.seed, len(region.entities)
        )
        self._cache[index] = region
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return region
