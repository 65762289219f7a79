"""``synthetic``: longmill's own deterministic multi-hop world, the embedded default source.

The world is a set of fictional entities of seven kinds (people, cities, countries, rivers,
universities, companies and films) whose names are built from syllables. They are linked by
functional relations (born in, located in, founded by, headquartered in, studied at, directed by,
capital of, ...) and carry numeric attributes (birth year, founding year, population, length, ...).
Every entity has one template-written document: its name as the title and 3-8 sentences, each
stating one fact, each ending in "." and separated by one space.

Questions come in two families:

- ``bridge``: follow a relation path from a named entity and ask for the last object or attribute
  ("In which country was the founder of Brightmoor Holdings born?"). The noun phrases are composed
  recursively, one per hop.
- ``comparison``: compare two sides, each a named entity or a bridged noun phrase, by a numeric
  attribute ("Who was born first, A or the director of B?") or by a shared relation object
  ("Were the founders of X and Y born in the same city?", answered yes or no).

``hops`` is the number of gold documents, which is also the number of supporting facts: every fact
on the path is one sentence of the document of its subject, and no document is used twice.

Hard distractors are built in: most entities have a look-alike of the same kind whose name differs
by one letter ("Velora Quint" / "Velora Quind") and whose facts are drawn independently. Each
triplet's ``distractor_docs`` holds the look-alikes of its path entities, then documents of their
graph neighbourhood, then documents of the same kinds (6-12 in all).

The world is unlimited and deterministic: it is organised in independent regions of about 200
entities, each generated from ``(seed, region index)`` alone. Triplet ``i`` lives in region
``i // per_region`` and draws from ``sample_rng(seed, "synthetic", i)``; the only coupling between
triplets is question de-duplication, which only looks at earlier triplets, so generating 100 or
10,000 triplets gives the same first 100.

Public API: :class:`SyntheticWorld` (``SyntheticWorld(seed).region(r)`` gives a :class:`Region` with
its entities, facts and documents), :class:`SyntheticConfig`, :func:`iter_synthetic_triplets`,
:func:`generate_triplets` and the registered source :class:`SyntheticSource`.
"""

from __future__ import annotations

import logging
import math
import re
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np

from datagen.errors import LongmillError
from datagen.rng import sample_rng, stable_hash
from datagen.schema import Document, SupportingFact, Triplet
from datagen.sources.base import SOURCES, Source

log = logging.getLogger(__name__)

T = TypeVar("T")

#: bump when the world or the question logic changes (the output changes with it)
WORLD_VERSION = "2"

PERSON, CITY, COUNTRY, RIVER, UNIVERSITY, COMPANY, FILM = (
    "person", "city", "country", "river", "university", "company", "film",
)  # fmt: skip
KINDS = (PERSON, CITY, COUNTRY, RIVER, UNIVERSITY, COMPANY, FILM)

#: entities per kind in one region (about 200 in all)
REGION_COUNTS = {COUNTRY: 6, CITY: 32, RIVER: 10, UNIVERSITY: 12, COMPANY: 32, PERSON: 80, FILM: 28}
#: share of the entities of a region that come in look-alike pairs
LOOKALIKE_SHARE = 0.7

# --------------------------------------------------------------------------------------------------
# Relations, attributes and their wording
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Relation:
    """A functional relation ``subject -> object``, stated in the subject's document.

    Args:
        key: the relation name (also the fact key in :attr:`Region.fact_sent`).
        subjects: the kinds it is defined on.
        obj: the kind of its object.
        np: noun-phrase templates naming the object from the subject ``{x}``; the first is an
            "of" phrase ("the founder of {x}"), which nests more readably around a long ``{x}``.
        questions: question templates asking for the object of ``{x}``.
    """

    key: str
    subjects: tuple[str, ...]
    obj: str
    np: tuple[str, ...]
    questions: tuple[str, ...]


@dataclass(frozen=True)
class Attribute:
    """A value attribute, stated in the subject's document.

    Args:
        key: the attribute name (also the fact key).
        subjects: the kinds it is defined on.
        questions: question templates asking for the value of ``{x}``.
    """

    key: str
    subjects: tuple[str, ...]
    questions: tuple[str, ...]


RELATIONS: dict[str, Relation] = {
    r.key: r
    for r in (
        Relation("birthplace", (PERSON,), CITY,
                 ("the birthplace of {x}", "the city where {x} was born", "the city in which {x} was born"),
                 ("In which city was {x} born?", "Where was {x} born?", "What is the birthplace of {x}?")),
        Relation("alma_mater", (PERSON,), UNIVERSITY,
                 ("the alma mater of {x}", "the university where {x} studied", "the university that {x} attended"),
                 ("Which university did {x} attend?", "At which university did {x} study?",
                  "What is the alma mater of {x}?")),
        Relation("citizenship", (PERSON,), COUNTRY,
                 ("the country of citizenship of {x}", "the country of which {x} was a citizen",
                  "the country whose citizenship {x} held"),
                 ("Of which country was {x} a citizen?", "Which country's citizenship did {x} hold?")),
        Relation("country", (CITY,), COUNTRY,
                 ("the country of {x}", "the country where {x} is located", "the country in which {x} lies"),
                 ("In which country is {x} located?", "Which country is {x} in?")),
        Relation("river", (CITY,), RIVER,
                 ("the river that flows through {x}", "the river on which {x} lies"),
                 ("Which river flows through {x}?", "On which river does {x} lie?")),
        Relation("source", (RIVER,), COUNTRY,
                 ("the source country of {x}", "the country where {x} rises", "the country in which {x} has its source"),
                 ("In which country does {x} rise?", "Where is the source of {x}?")),
        Relation("capital", (COUNTRY,), CITY,
                 ("the capital of {x}", "the capital city of {x}"),
                 ("What is the capital of {x}?", "Which city is the capital of {x}?")),
        Relation("campus", (UNIVERSITY,), CITY,
                 ("the home city of {x}", "the city where {x} is located", "the city that is home to {x}"),
                 ("In which city is {x} located?", "Which city is home to {x}?")),
        Relation("founder", (UNIVERSITY, COMPANY), PERSON,
                 ("the founder of {x}", "the person who founded {x}"),
                 ("Who founded {x}?", "Who is the founder of {x}?")),
        Relation("hq", (COMPANY,), CITY,
                 ("the headquarters city of {x}", "the city where {x} is headquartered",
                  "the city that hosts the headquarters of {x}"),
                 ("In which city is {x} headquartered?", "Where are the headquarters of {x}?")),
        Relation("director", (FILM,), PERSON,
                 ("the director of {x}", "the person who directed {x}"),
                 ("Who directed {x}?", "Who is the director of {x}?")),
        Relation("studio", (FILM,), COMPANY,
                 ("the production company of {x}", "the company that produced {x}", "the studio behind {x}"),
                 ("Which company produced {x}?", "Which studio made {x}?")),
        Relation("setting", (FILM,), CITY,
                 ("the setting of {x}", "the city where {x} is set", "the city in which {x} takes place"),
                 ("In which city is {x} set?", "Where does {x} take place?")),
    )
}  # fmt: skip

ATTRIBUTES: dict[str, Attribute] = {
    a.key: a
    for a in (
        Attribute("birth_year", (PERSON,),
                  ("In which year was {x} born?", "When was {x} born?", "What is the birth year of {x}?")),
        Attribute("occupation", (PERSON,), ("What was the occupation of {x}?", "What did {x} do for a living?")),
        Attribute("founded", (UNIVERSITY, COMPANY), ("In which year was {x} founded?", "When was {x} established?")),
        Attribute("release_year", (FILM,), ("In which year was {x} released?", "When did {x} come out?")),
        Attribute("population", (CITY, COUNTRY), ("What is the population of {x}?", "How many people live in {x}?")),
        Attribute("length", (RIVER,), ("How long is {x}?", "What is the length of {x}?")),
        Attribute("industry", (COMPANY,), ("In which industry does {x} operate?", "What industry is {x} in?")),
        Attribute("genre", (FILM,), ("What genre of film is {x}?", "What kind of film is {x}?")),
        Attribute("independence", (COUNTRY,), ("In which year did {x} become independent?",)),
    )
}  # fmt: skip

#: two-hop endings worded as one question (the same two facts are still needed)
FUSED_QUESTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("birthplace", "country"): ("In which country was {x} born?",),
    ("hq", "country"): ("In which country is {x} headquartered?",),
    ("campus", "country"): ("In which country is {x} located?",),
    ("setting", "country"): ("In which country is {x} set?",),
}

#: relation pairs that always lead back to where they started (country -> capital -> country)
_LOOPS = {("capital", "country")}

#: numeric comparisons: (attribute, kind) -> [(template, "min" | "max")]
NUMERIC_COMPARISONS: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {
    ("birth_year", PERSON): (("Who was born first, {a} or {b}?", "min"), ("Who was born later, {a} or {b}?", "max"),
                             ("Who is older, {a} or {b}?", "min")),
    ("founded", COMPANY): (("Which company was founded first, {a} or {b}?", "min"),
                           ("Which company was established more recently, {a} or {b}?", "max")),
    ("founded", UNIVERSITY): (("Which university is older, {a} or {b}?", "min"),
                              ("Which university was founded later, {a} or {b}?", "max")),
    ("release_year", FILM): (("Which film was released first, {a} or {b}?", "min"),
                             ("Which film came out later, {a} or {b}?", "max")),
    ("population", CITY): (("Which city has the larger population, {a} or {b}?", "max"),
                           ("Which city has fewer inhabitants, {a} or {b}?", "min")),
    ("population", COUNTRY): (("Which country has more inhabitants, {a} or {b}?", "max"),
                              ("Which country has the smaller population, {a} or {b}?", "min")),
    ("length", RIVER): (("Which river is longer, {a} or {b}?", "max"), ("Which river is shorter, {a} or {b}?", "min")),
}  # fmt: skip

#: same-object comparisons (yes/no): (relation, kind) -> templates; each contains "{a} and {b}"
SAME_COMPARISONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("birthplace", PERSON): ("Were {a} and {b} born in the same city?", "Were {a} and {b} born in the same place?"),
    ("citizenship", PERSON): ("Were {a} and {b} citizens of the same country?",),
    ("alma_mater", PERSON): ("Did {a} and {b} study at the same university?",),
    ("country", CITY): ("Are {a} and {b} located in the same country?", "Are {a} and {b} in the same country?"),
    ("river", CITY): ("Do {a} and {b} lie on the same river?",),
    ("hq", COMPANY): ("Are {a} and {b} headquartered in the same city?",),
    ("founder", COMPANY): ("Were {a} and {b} founded by the same person?",),
    ("campus", UNIVERSITY): ("Are {a} and {b} located in the same city?",),
    ("founder", UNIVERSITY): ("Were {a} and {b} founded by the same person?",),
    ("director", FILM): ("Were {a} and {b} directed by the same person?",),
    ("studio", FILM): ("Were {a} and {b} produced by the same company?",),
    ("setting", FILM): ("Are {a} and {b} set in the same city?",),
    ("source", RIVER): ("Do {a} and {b} rise in the same country?",),
}

#: plural noun phrases for two sides bridged by the same relation ("the founders of X and Y")
PLURAL_NP = {
    "founder": "the founders of {a} and {b}",
    "director": "the directors of {a} and {b}",
    "capital": "the capitals of {a} and {b}",
    "birthplace": "the birthplaces of {a} and {b}",
}

#: fact sentence templates: ``{s}`` the subject, ``{o}`` the object, ``{v}`` a value
FACTS: dict[str, tuple[str, ...]] = {
    # person
    "occupation": ("{s} was {v}.", "{s} worked as {v}.", "{s} is remembered as {v}."),
    "birthplace": ("{s} was born in {o}.", "{s} was born in the city of {o}.", "The birthplace of {s} is {o}."),
    "birth_year": ("{s} was born in {v}.", "{s} was born in the year {v}.", "The year of birth of {s} is {v}."),
    "citizenship": ("{s} was a citizen of {o}.", "{s} held the citizenship of {o}."),
    "alma_mater": ("{s} studied at {o}.", "{s} graduated from {o}.", "{s} earned a degree at {o}."),
    "death_year": ("{s} died in {v}.", "{s} passed away in {v}."),
    "known_for": ("{s} was known for {v}.", "{s} is best remembered for {v}."),
    # city
    "country": ("{s} is a city in {o}.", "{s} is a town in {o}.", "{s} is a city located in {o}."),
    "population": ("{s} has a population of {v}.", "The population of {s} is {v}.", "{s} is home to {v} people."),
    "river": ("{s} lies on {o}.", "{o} flows through {s}.", "{s} lies on the banks of {o}."),
    "city_founded": ("{s} was founded in {v}.", "{s} received its charter in {v}."),
    "landmark": ("{s} is known for its {v}.", "Visitors to {s} come for its {v}."),
    "economy": ("The economy of {s} rests on {v}.", "{s} grew rich on {v}."),
    "climate": ("{s} has {v} climate.", "The climate of {s} is {v} one."),
    # country
    "official_name": ("{s} is a country whose official name is {v}.", "{s}, officially {v}, is a sovereign state."),
    "capital": ("The capital of {s} is {o}.", "{o} is the capital of {s}.", "The capital city of {s} is {o}."),
    "independence": ("{s} became independent in {v}.", "{s} gained its independence in {v}."),
    "currency": ("The currency of {s} is the {v}.", "{s} pays in a currency called the {v}."),
    "language": ("The official language of {s} is {v}.", "Most people in {s} speak {v}."),
    # river
    "source": ("{s} is a river that rises in {o}.", "{s} rises in {o}.", "The source of {s} lies in {o}."),
    "length": ("{s} is {v} kilometres long.", "{s} has a length of {v} kilometres."),
    "mouth": ("{s} flows into the {v}.", "{s} empties into the {v}."),
    "basin": ("The basin of {s} covers {v} square kilometres.",),
    "navigable": ("{s} is navigable for {v} kilometres.", "Boats can travel {v} kilometres up {s}."),
    "tributaries": ("{s} has {v} major tributaries.", "{v} major tributaries feed {s}."),
    # university
    "uni_type": ("{s} is {v} university.", "{s} is {v} institution of higher education."),
    "campus": ("{s} is located in {o}.", "{s} has its main campus in {o}.", "The main campus of {s} is in {o}."),
    "founder": ("{s} was founded by {o}.", "{o} founded {s}.", "{s} was established by {o}."),
    "founded": ("{s} was founded in {v}.", "{s} was established in {v}.", "{s} dates from {v}."),
    "students": ("{s} enrols about {v} students.", "About {v} students attend {s}."),
    "library": ("The library of {s} holds about {v} volumes.", "The library of {s} keeps some {v} books."),
    # company
    "industry": ("{s} is a company in the {v} industry.", "{s} operates in the {v} industry."),
    "hq": ("{s} is headquartered in {o}.", "{s} has its headquarters in {o}.", "The head office of {s} is in {o}."),
    "employees": ("{s} employs about {v} people.", "About {v} people work for {s}."),
    "products": ("{s} is best known for its {v}.", "The best-known products of {s} are its {v}."),
    # film
    "genre": ("{s} is {v} film.", "{s} is {v} picture."),
    "director": ("{s} was directed by {o}.", "{o} directed {s}.", "{s} is a film by director {o}."),
    "release_year": ("{s} was released in {v}.", "{s} premiered in {v}.", "{s} first reached cinemas in {v}."),
    "studio": ("{s} was produced by {o}.", "{o} produced {s}."),
    "setting": ("{s} is set in {o}.", "The story of {s} takes place in {o}."),
    "runtime": ("{s} runs for {v} minutes.", "The running time of {s} is {v} minutes."),
    "reception": ("Critics praised {v} of {s}.", "Reviewers singled out {v} of {s}."),
}

_OCCUPATIONS = ("painter", "physician", "architect", "botanist", "composer", "historian", "sculptor", "chemist",
                "poet", "astronomer", "cartographer", "economist", "novelist", "photographer", "mathematician")
_FOUNDER_OCCUPATIONS = ("industrialist", "entrepreneur", "engineer", "merchant")
_SCHOLAR_OCCUPATIONS = ("scholar", "philanthropist", "theologian", "physician")
_INDUSTRIES = ("shipbuilding", "textile", "publishing", "mining", "brewing", "railway", "insurance", "software",
               "chemical", "glassmaking", "aviation", "pharmaceutical", "film", "steel", "telegraph")
_GENRES = ("drama", "comedy", "thriller", "western", "musical", "documentary", "adventure", "romance", "crime",
           "war", "mystery", "animated")
_UNI_TYPES = ("a public", "a private", "a technical", "an agricultural", "a maritime", "a medical", "a polytechnic")
_KNOWN_FOR = ("a study of tidal mills", "early work on glass lenses", "a map of the northern coast",
              "a series of winter landscapes", "a treatise on river trade", "a collection of folk songs",
              "a survey of mountain flora", "a design for iron bridges", "a long correspondence with other scholars",
              "a reform of the postal service", "a catalogue of double stars", "a history of the salt roads")
_LANDMARKS = ("covered markets", "stone bridges", "spring festival", "old harbour", "clock tower", "botanical garden",
              "salt works", "cathedral", "lighthouse", "opera house", "canal quarter", "hillside vineyards")
_ECONOMIES = ("fishing", "the wool trade", "shipbuilding", "tourism", "printing", "river trade", "salt mining",
              "clockmaking", "timber", "wine growing")
_CLIMATES = ("a mild maritime", "a dry continental", "a cool highland", "a humid subtropical", "a windy coastal")
_PRODUCTS = ("marine engines", "printed atlases", "cotton sails", "signal lamps", "pocket watches", "steel cables",
             "glass bottles", "farm machinery", "radio sets", "travel guides", "paints", "telescopes")
_PRAISED = ("the score", "the photography", "the lead performance", "the screenplay", "the editing", "the costumes")
_COUNTRY_FORMS = ("Republic", "Kingdom", "Federation", "Commonwealth", "Principality", "Grand Duchy")
_SECTORS = ("Holdings", "Industries", "Works", "Group", "Trading", "Company", "Partners", "Enterprises")
_FILM_NOUNS = ("Letters", "Harvest", "Lantern", "Winter", "Crossing", "Orchard", "Tide", "Covenant", "Mirror",
               "Garden", "Engine", "Silence", "Ballad", "Frontier", "Signal", "Promise")
_FILM_PATTERNS = ("The {w} {n}", "{n} of {w}", "{n} over {w}", "The {n} of {w}", "{w} {n}")

_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "pr", "r", "s", "st",
           "t", "th", "tr", "v", "w", "z", "c", "cl", "bl", "fl", "sh")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "i", "o", "a", "e", "o", "ae", "ei", "ou", "y")
_MEDIAL_CODAS = ("", "", "", "", "", "n", "r", "l", "s")
_FINAL_CODAS = ("", "", "n", "r", "l", "s", "th", "m", "k", "nd", "st", "x", "v", "rn")
_STEM_SUFFIXES = {
    CITY: ("", "", "", "vik", "holm", "dale", "mere", "stad", "burgh", "ora", "wick"),
    COUNTRY: ("ia", "ania", "onia", "eria", "ovia", "ara", "esh"),
    COMPANY: ("", "", "moor", "field", "ridge", "stone", "well"),
    PERSON: ("", "", "", "wyn", "dar", "ric", "mont", "holt"),
}
_VOWEL_CHARS = "aeiouy"
_FINAL_CONSONANTS = "nrlsdtmk"


# --------------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------------


class _Draw:
    """Uniform draws from a numpy Generator, buffered (one numpy call per ``chunk`` draws)."""

    def __init__(self, rng: np.random.Generator, chunk: int = 512):
        self._rng = rng
        self._chunk = chunk
        self._buf: list[float] = []
        self._i = 0

    def u(self) -> float:
        if self._i >= len(self._buf):
            self._buf = self._rng.random(self._chunk).tolist()
            self._i = 0
        x = self._buf[self._i]
        self._i += 1
        return x

    def below(self, n: int) -> int:
        return min(int(self.u() * n), n - 1)

    def randint(self, lo: int, hi: int) -> int:
        """Uniform integer in ``[lo, hi]``."""
        return lo + self.below(hi - lo + 1)

    def chance(self, p: float) -> bool:
        return self.u() < p

    def pick(self, seq: Sequence[T]) -> T:
        return seq[self.below(len(seq))]

    def shuffled(self, seq: Sequence[T]) -> list[T]:
        out = list(seq)
        for i in range(len(out) - 1, 0, -1):
            j = self.below(i + 1)
            out[i], out[j] = out[j], out[i]
        return out


#: real place names the syllables could spell; never used (the list cannot be complete, see limitations)
_REAL_NAMES = frozenset("""
india russia syria libya nigeria algeria serbia zambia gambia bolivia latvia armenia romania albania tanzania
estonia slovenia slovakia croatia georgia kenya malta cuba iran iraq chad mali peru togo oman laos fiji samoa
tonga nauru palau cyprus italy spain france china japan korea nepal yemen sudan ghana benin niger gabon congo
angola kosovo canada mexico brazil chile israel jordan qatar bhutan brunei malawi rwanda uganda somalia
eritrea liberia tunisia morocco belarus ukraine moldova austria belgium denmark finland norway sweden poland
hungary greece turkey egypt paris rome lima oslo bern kiev riga sofia doha baku minsk dublin tokyo delhi dhaka
cairo tunis rabat lagos accra dakar quito manila hanoi seoul berlin madrid london vienna prague warsaw athens
lisbon moscow ankara tehran kabul boston denver dallas austin tampa miami omaha salem toledo verona milan turin
genoa pisa siena nice lyon lille nantes geneva zurich basel bergen malmo gent bruges leiden delft hamburg
munich bremen essen bonn dover bath york leeds derby kent devon essex wales mars venus thor odin
""".split())

#: letter runs that read badly: tripled letters, long consonant or vowel runs, doubled a/i/u/y
_UGLY = re.compile(r"(.)\1\1|[^aeiouy]{4}|[aeiouy]{3}|aa|ii|uu|yy|[^aeiouy]{3}$|^[^aeiouy]{3}")


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _article(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _norm_question(q: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", q.lower()).strip()


# --------------------------------------------------------------------------------------------------
# The world
# --------------------------------------------------------------------------------------------------


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
            raise LongmillError(f"region {self.index} of seed {self.seed} has no entity named {name!r}") from None

    def fact(self, idx: int, key: str) -> SupportingFact:
        """The sentence of entity ``idx``'s document that states fact ``key``."""
        j = self.fact_sent[idx][key]
        return SupportingFact(title=self.entities[idx].name, sent_idx=j, text=self.sentences[idx][j])


def _value_text(key: str, v: Any) -> str:
    if key in ("population", "students", "employees", "basin", "library"):
        return f"{v:,}"
    if key in ("occupation", "genre"):
        return _article(v)
    return str(v)


def _value_answers(key: str, v: Any) -> list[str]:
    if key == "population":
        return [f"{v:,}", str(v)]
    if key == "length":
        return [f"{v} kilometres", f"{v} km", f"{v} kilometers", str(v)]
    if key == "occupation":
        return [v, _article(v)]
    if key == "industry":
        return [v, f"{v} industry", f"the {v} industry"]
    if key == "genre":
        return [v, f"{v} film", _article(v) + " film"]
    return [str(v)]


class _RegionBuilder:
    """Draws one region. All randomness comes from the region's own generator."""

    def __init__(self, seed: int, index: int, lookalike_share: float):
        ss = np.random.SeedSequence([int(seed), stable_hash("longmill.synthetic.world", WORLD_VERSION), int(index)])
        self.d = _Draw(np.random.default_rng(ss), chunk=4096)
        self.seed, self.index, self.share = seed, index, lookalike_share
        self.used: set[str] = set()  # lower-cased titles and stems, unique within the region
        self.entities: list[Entity] = []
        self.parts: list[dict[str, str]] = []
        self.rel: dict[str, dict[int, int]] = {k: {} for k in RELATIONS}
        self.attr: dict[str, dict[int, Any]] = {}

    # ---- names ----------------------------------------------------------------------------------

    def _word(self, syllables: int) -> str:
        d = self.d
        while True:
            parts = []
            for j in range(syllables):
                onset = d.pick(_ONSETS) if (j > 0 or d.chance(0.85)) else ""
                coda = d.pick(_FINAL_CODAS) if j == syllables - 1 else d.pick(_MEDIAL_CODAS)
                parts.append(onset + d.pick(_VOWELS) + coda)
            w = "".join(parts)
            if 3 <= len(w) <= 8 and not _UGLY.search(w):
                return w.capitalize()

    def _stem(self, kind: str) -> tuple[str, str]:
        """(word, suffix): a new syllable word and a kind-typical ending, unique in the region."""
        d = self.d
        while True:
            n = d.randint(1, 2) if kind == PERSON else 2
            word, suffix = self._word(n), d.pick(_STEM_SUFFIXES.get(kind, ("",)))
            stem = (word + suffix).lower()
            if len(stem) >= 4 and stem not in self.used and stem not in _REAL_NAMES:
                return word, suffix

    def _parts(self, kind: str) -> dict[str, str]:
        d = self.d
        word, suffix = self._stem(kind)
        p = {"word": word, "suffix": suffix, "stem": word + suffix}
        if kind == PERSON:
            p["given"] = self._word(d.randint(2, 3))
            while p["given"].lower() in _REAL_NAMES:
                p["given"] = self._word(2)
        elif kind == COUNTRY:
            p["form"] = d.pick(_COUNTRY_FORMS)
        elif kind == UNIVERSITY:
            p["form"] = d.pick(("of", "of", "suffix"))
        elif kind == COMPANY:
            p["sector"] = d.pick(_SECTORS)
        elif kind == FILM:
            p["pattern"], p["noun"] = d.pick(_FILM_PATTERNS), d.pick(_FILM_NOUNS)
        return p

    @staticmethod
    def _render(kind: str, p: dict[str, str]) -> tuple[str, str, tuple[str, ...]]:
        s = p["stem"]
        if kind == PERSON:
            name = f"{p['given']} {s}"
            return name, name, (name,)
        if kind == COUNTRY:
            official = f"{p['form']} of {s}"
            return s, s, (s, official, f"the {official}")
        if kind == RIVER:
            name = f"{s} River"
            return name, f"the {name}", (name, s, f"the {name}")
        if kind == UNIVERSITY:
            of, suffix = f"University of {s}", f"{s} University"
            if p["form"] == "of":
                return of, f"the {of}", (of, suffix, f"the {of}")
            return suffix, suffix, (suffix, of)
        if kind == COMPANY:
            name = f"{s} {p['sector']}"
            return name, name, (name,)
        if kind == FILM:
            name = p["pattern"].format(w=s, n=p["noun"])
            return name, name, (name,)
        return s, s, (s,)

    def _mutate(self, word: str) -> str | None:
        """``word`` with one letter of its second half changed: a vowel, or the final consonant."""
        d = self.d
        half = max(3, len(word) // 2)  # keep at least three letters of common prefix
        spots = [j for j in range(half, len(word)) if word[j] in _VOWEL_CHARS]
        if word[-1] in _FINAL_CONSONANTS:
            spots.append(len(word) - 1)
        for _ in range(20 if spots else 0):
            j = d.pick(spots)
            pool = _VOWEL_CHARS if word[j] in _VOWEL_CHARS else _FINAL_CONSONANTS
            out = word[:j] + d.pick([x for x in pool if x != word[j]]) + word[j + 1 :]
            if not _UGLY.search(out.lower()) and out.lower() not in self.used:
                return out
        return None

    def _add(self, kind: str, p: dict[str, str], twin: int | None = None) -> int:
        name, ref, aliases = self._render(kind, p)
        idx = len(self.entities)
        self.entities.append(Entity(idx, kind, name, ref, aliases, twin))
        self.parts.append(p)
        self.used.update({p["stem"].lower(), name.lower()})
        if twin is not None:
            self.entities[twin].twin = idx
        return idx

    def _make_kind(self, kind: str, n: int) -> list[int]:
        pairs = int(round(n * self.share / 2))
        out: list[int] = []
        while len(out) < n:
            p = self._parts(kind)
            if self._render(kind, p)[0].lower() in self.used:
                continue
            a = self._add(kind, p)
            out.append(a)
            if pairs > 0 and len(out) < n:
                word = self._mutate(p["word"])
                twin = {**p, "word": word or "", "stem": (word or "") + p["suffix"]}
                if (word is not None and twin["stem"].lower() not in _REAL_NAMES
                        and self._render(kind, twin)[0].lower() not in self.used):
                    out.append(self._add(kind, twin, twin=a))
                    pairs -= 1
        return out

    # ---- facts ----------------------------------------------------------------------------------

    def _set(self, key: str, idx: int, value: Any) -> None:
        self.attr.setdefault(key, {})[idx] = value

    def build(self) -> Region:
        d = self.d
        ids = {k: self._make_kind(k, REGION_COUNTS[k]) for k in KINDS}
        countries, cities, rivers = ids[COUNTRY], ids[CITY], ids[RIVER]
        persons, unis, companies, films = ids[PERSON], ids[UNIVERSITY], ids[COMPANY], ids[FILM]
        rel, a = self.rel, self._set

        for c in countries:
            a("population", c, int(round(math.exp(d.u() * math.log(60.0) + math.log(1e6)), -3)))
            a("independence", c, d.randint(1650, 1990))
            a("currency", c, self._word(2).lower())
            a("official_name", c, f"the {self.parts[c]['form']} of {self.parts[c]['stem']}")
            a("language", c, self._word(2) + d.pick(("ic", "ish", "ese", "i")))
        for j, c in enumerate(d.shuffled(cities)):
            rel["country"][c] = countries[j] if j < len(countries) else d.pick(countries)
            a("population", c, int(round(math.exp(d.u() * math.log(400.0) + math.log(8e3)), -2)))
            a("city_founded", c, d.randint(700, 1850))
            a("landmark", c, d.pick(_LANDMARKS))
            if d.chance(0.7):
                a("economy", c, d.pick(_ECONOMIES))
            if d.chance(0.5):
                a("climate", c, d.pick(_CLIMATES))
        for c in countries:
            rel["capital"][c] = d.pick([x for x in cities if rel["country"][x] == c])
        for r in rivers:
            rel["source"][r] = d.pick(countries)
            a("length", r, d.randint(40, 2400))
            a("mouth", r, f"{self._word(2)} Sea")
            a("basin", r, d.randint(20, 900) * 100)
            if d.chance(0.6):
                a("navigable", r, d.randint(1, max(1, self.attr["length"][r] // 10)) * 5)
            if d.chance(0.6):
                a("tributaries", r, d.randint(2, 14))
        for c in cities:
            if d.chance(0.6):
                rel["river"][c] = d.pick(rivers)
        for p in persons:
            born = d.pick(cities)
            rel["birthplace"][p] = born
            by = d.randint(1760, 1985)
            a("birth_year", p, by)
            rel["citizenship"][p] = rel["country"][born] if d.chance(0.75) else d.pick(countries)
            if 2023 - by >= 40 and d.chance(0.9 if by + 95 <= 2023 else 0.4):
                a("death_year", p, by + d.randint(40, min(95, 2023 - by)))
            if d.chance(0.5):
                a("known_for", p, d.pick(_KNOWN_FOR))
        by_year = self.attr["birth_year"]
        roles: dict[int, str] = {}
        early = [p for p in persons if by_year[p] <= 1900] or persons
        for u in unis:
            f = d.pick(early)
            rel["founder"][u] = f
            roles.setdefault(f, d.pick(_SCHOLAR_OCCUPATIONS))
            a("founded", u, by_year[f] + d.randint(28, 65))
            rel["campus"][u] = d.pick(cities)
            a("uni_type", u, d.pick(_UNI_TYPES))
            a("students", u, d.randint(8, 400) * 100)
            if d.chance(0.6):
                a("library", u, d.randint(5, 900) * 1000)
        for p in persons:
            options = [u for u in unis if self.attr["founded"][u] <= by_year[p] + 17]
            if options and d.chance(0.85):
                rel["alma_mater"][p] = d.pick(options)
        for c in companies:
            f = d.pick([p for p in persons if by_year[p] <= 1975] or persons)
            rel["founder"][c] = f
            roles.setdefault(f, d.pick(_FOUNDER_OCCUPATIONS))
            a("founded", c, by_year[f] + d.randint(22, 55))
            rel["hq"][c] = d.pick(cities)
            a("industry", c, d.pick(_INDUSTRIES))
            if d.chance(0.6):
                a("employees", c, d.randint(2, 900) * 50)
            if d.chance(0.6):
                a("products", c, d.pick(_PRODUCTS))
        directors = [p for p in persons if 1870 <= by_year[p] <= 1990] or persons
        for f in films:
            p = d.pick(directors)
            rel["director"][f] = p
            roles[p] = "film director"
            year = by_year[p] + d.randint(min(25, 2023 - by_year[p]), max(25, min(70, 2023 - by_year[p])))
            a("release_year", f, year)
            studios = [c for c in companies if self.attr["founded"][c] <= year]
            if studios and d.chance(0.8):
                rel["studio"][f] = d.pick(studios)
            rel["setting"][f] = d.pick(cities)
            a("genre", f, d.pick(_GENRES))
            if d.chance(0.6):
                a("runtime", f, d.randint(70, 190))
            if d.chance(0.5):
                a("reception", f, d.pick(_PRAISED))
        for p in persons:
            a("occupation", p, roles.get(p) or d.pick(_OCCUPATIONS))

        sentences, fact_sent, docs = [], [], []
        for e in self.entities:
            sents, where = self._document(e)
            sentences.append(sents)
            fact_sent.append(where)
            docs.append(Document.make(e.name, " ".join(sents)))
        return Region(self.seed, self.index, self.entities, self.rel, self.attr, sentences, fact_sent, docs)

    # ---- documents ------------------------------------------------------------------------------

    _INTRO = {PERSON: "occupation", CITY: "country", COUNTRY: "official_name", RIVER: "source",
              UNIVERSITY: "uni_type", COMPANY: "industry", FILM: "genre"}  # fmt: skip
    _BODY = {
        PERSON: ("birthplace", "birth_year", "citizenship", "alma_mater", "death_year", "known_for"),
        CITY: ("population", "river", "city_founded", "landmark", "economy", "climate"),
        COUNTRY: ("capital", "population", "independence", "currency", "language"),
        RIVER: ("length", "mouth", "basin", "navigable", "tributaries"),
        UNIVERSITY: ("campus", "founder", "founded", "students", "library"),
        COMPANY: ("founder", "hq", "founded", "employees", "products"),
        FILM: ("director", "release_year", "studio", "setting", "runtime", "reception"),
    }

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
            text = self.d.pick(FACTS[key]).format(s=e.ref, v=_value_text(key, v))
        return _cap(text)

    def _document(self, e: Entity) -> tuple[list[str], dict[str, int]]:
        keys = [self._INTRO[e.kind]] + self.d.shuffled(self._BODY[e.kind])
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
        region = _RegionBuilder(self.seed, index, self.lookalike_share).build()
        log.debug("built synthetic region %d of seed %d (%d entities)", index, self.seed, len(region.entities))
        self._cache[index] = region
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return region


# --------------------------------------------------------------------------------------------------
# Questions
# --------------------------------------------------------------------------------------------------

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
            if chain and (chain[-1][0], key) in _LOOPS:
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
            if chain and (chain[-1][0], key) in _LOOPS:
                continue
            assert obj is not None
            walk(obj, chain + ((key, kind),))

    for k in KINDS:
        walk(k, ())
    return out


_BRIDGE_CHAINS = {h: _bridge_chains(h) for h in (1, 2, 3, 4)}
_SIDE_CHAINS = {(k, dep): _side_chains(k, dep) for k in KINDS for dep in (0, 1, 2)}


@dataclass
class _Draft:
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


def _noun_phrase(region: Region, d: _Draw, entities: Sequence[int], chain: Sequence[Step]) -> str:
    x = region.entities[entities[0]].ref
    for j, (key, _) in enumerate(chain):
        templates = RELATIONS[key].np
        # around an already composed phrase, prefer the "of" form to stacked relative clauses
        template = templates[0] if j > 0 and d.chance(0.75) else d.pick(templates)
        composed = template.format(x=x)
        if _DOUBLED.search(composed):  # "the river on which ... lies lies": take another wording
            composed = next((t.format(x=x) for t in templates if not _DOUBLED.search(t.format(x=x))), composed)
        x = composed
    return x


def _wording(d: _Draw, templates: Sequence[str], x: str) -> str:
    """A question template filled with ``x``, avoiding ones that read "... is located located?"."""
    question = d.pick(templates).format(x=x)
    if _DOUBLED.search(question):
        question = next((q.format(x=x) for q in templates if not _DOUBLED.search(q.format(x=x))), question)
    return question


def _bridge(region: Region, d: _Draw, hops: int) -> _Draft | None:
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
        answers = _value_answers(last_key, value)
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
    return _Draft(question, answers, "bridge", facts, path)


def _split_depths(hops: int, d: _Draw) -> tuple[int, int]:
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


def _comparison(region: Region, d: _Draw, hops: int) -> _Draft | None:
    numeric = d.chance(0.5)
    want_yes = d.chance(0.5)
    for _ in range(20):  # keep the drawn answer (yes or no), so that both come out equally often
        draft = _comparison_once(region, d, hops, numeric, want_yes)
        if draft is not None:
            return draft
    return None


def _comparison_once(region: Region, d: _Draw, hops: int, numeric: bool, want_yes: bool) -> _Draft | None:
    key, kind = d.pick(list(NUMERIC_COMPARISONS if numeric else SAME_COMPARISONS))
    da, db = _split_depths(hops, d)
    chains_a, chains_b = _SIDE_CHAINS[(kind, da)], _SIDE_CHAINS[(kind, db)]
    if not chains_a or not chains_b:
        return None
    ca = d.pick(chains_a)
    start_kind = ca[0][1] if ca else kind
    side_a = _walk(region, d.pick(region.by_kind[start_kind]), ca)
    if side_a is None:
        return None
    ta = side_a[-1]
    values = region.attr[key] if numeric else region.rel[key]
    va = values.get(ta)
    if va is None:
        return None
    side_b = None
    if numeric:
        cb = d.pick(chains_b)
        start_kind = cb[0][1] if cb else kind
        side_b = _walk(region, d.pick(region.by_kind[start_kind]), cb)
    else:
        # the answer is drawn first, then a side b that gives it
        targets = [t for t in region.by_kind[kind] if t != ta and t in values and (values[t] == va) == want_yes]
        for cb in d.shuffled(chains_b):
            starts = _backward(region, targets, cb)
            if starts:
                side_b = _walk(region, d.pick(starts), cb)
                break
    if side_b is None:
        return None
    tb = side_b[-1]
    vb = values.get(tb)
    if vb is None or len(set(side_a + side_b)) != len(side_a) + len(side_b):
        return None
    if d.chance(0.5):  # which side is named first
        side_a, side_b, ca, cb, ta, tb, va, vb = side_b, side_a, cb, ca, tb, ta, vb, va
    a_np = _noun_phrase(region, d, side_a, ca)
    b_np = _noun_phrase(region, d, side_b, cb)
    if numeric:
        if va == vb:
            return None
        template, direction = d.pick(NUMERIC_COMPARISONS[(key, kind)])
        question = template.format(a=a_np, b=b_np)
        winner = ta if (va < vb) == (direction == "min") else tb
        answers = list(region.entities[winner].aliases)
    else:
        template = d.pick(SAME_COMPARISONS[(key, kind)])
        if len(ca) == 1 and len(cb) == 1 and ca[0][0] == cb[0][0] and ca[0][0] in PLURAL_NP and d.chance(0.7):
            ref_a, ref_b = region.entities[side_a[0]].ref, region.entities[side_b[0]].ref
            question = template.replace("{a} and {b}", PLURAL_NP[ca[0][0]].format(a=ref_a, b=ref_b))
        else:
            question = template.format(a=a_np, b=b_np)
            if _DOUBLED.search(question):  # "... is located located in the same country?"
                question = next((t.format(a=a_np, b=b_np) for t in SAME_COMPARISONS[(key, kind)]
                                 if not _DOUBLED.search(t.format(a=a_np, b=b_np))), question)
        answers = ["yes" if va == vb else "no"]
    facts = [(s, k) for s, (k, _) in zip(side_a, ca, strict=False)] + [(ta, key)]
    facts += [(s, k) for s, (k, _) in zip(side_b, cb, strict=False)] + [(tb, key)]
    path = list(side_a) + list(side_b)
    if not numeric:
        path += [values[ta], values[tb]]
    return _Draft(_cap(question), answers, "comparison", facts, path)


# --------------------------------------------------------------------------------------------------
# Triplets
# --------------------------------------------------------------------------------------------------


@dataclass
class SyntheticConfig:
    """What :func:`iter_synthetic_triplets` generates.

    Args:
        num_triplets: how many triplets.
        seed: the world seed (ids are ``synthetic:<seed>-<i>``).
        min_hops: the fewest gold documents per question (1-4; 1 gives single-document lookups, an
            easy option for small models: the default world asks 2-4 hop questions).
        max_hops: the most gold documents per question (1-4, >= ``min_hops``).
        comparison_share: the share of comparison questions (the rest are bridge questions).
        per_region: triplets drawn from each region of about 200 entities (1-500); triplet ``i`` lives
            in region ``i // per_region``.
        min_distractors: the fewest distractor documents per triplet.
        max_distractors: the most distractor documents per triplet.
    """

    num_triplets: int = 2000
    seed: int = 0
    min_hops: int = 2
    max_hops: int = 4
    comparison_share: float = 0.35
    per_region: int = 100
    min_distractors: int = 6
    max_distractors: int = 12

    _INTS: ClassVar[tuple[str, ...]] = (
        "num_triplets", "seed", "min_hops", "max_hops", "per_region", "min_distractors", "max_distractors",
    )  # fmt: skip
    _FLOATS: ClassVar[tuple[str, ...]] = ("comparison_share",)

    def __post_init__(self) -> None:
        for name in self._INTS:
            setattr(self, name, _coerce(name, getattr(self, name), int))
        for name in self._FLOATS:
            setattr(self, name, _coerce(name, getattr(self, name), float))
        if self.num_triplets < 0:
            raise LongmillError(f"synthetic: num_triplets must be >= 0, got {self.num_triplets}")
        if not 1 <= self.min_hops <= self.max_hops <= 4:
            raise LongmillError(
                f"synthetic: need 1 <= min_hops <= max_hops <= 4, got min_hops={self.min_hops}, "
                f"max_hops={self.max_hops}"
            )
        if not 0.0 <= self.comparison_share <= 1.0:
            raise LongmillError(f"synthetic: comparison_share must be in [0, 1], got {self.comparison_share}")
        if not 1 <= self.per_region <= 500:
            raise LongmillError(
                f"synthetic: per_region must be in [1, 500] (a region holds about 200 entities), "
                f"got {self.per_region}"
            )
        if not 0 <= self.min_distractors <= self.max_distractors <= 30:
            raise LongmillError(
                "synthetic: need 0 <= min_distractors <= max_distractors <= 30, got "
                f"min_distractors={self.min_distractors}, max_distractors={self.max_distractors}"
            )

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> SyntheticConfig:
        """A config from source options (strings from the CLI or typed values); unknown keys are an error."""
        names = set(cls.__dataclass_fields__) - {"_INTS", "_FLOATS"}
        unknown = sorted(set(options) - names)
        if unknown:
            raise LongmillError(f"synthetic: unknown option(s) {unknown}; valid options: {', '.join(sorted(names))}")
        return cls(**options)


def _coerce(name: str, value: Any, type_: type) -> Any:
    """``value`` as ``type_`` (int or float), accepting numeric strings; a clear error otherwise."""
    if isinstance(value, bool):
        value = str(value)  # True is an int in Python, but never a meaningful count
    if type_ is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))
            except ValueError:
                pass
        raise LongmillError(
            f"synthetic: option {name}={value!r} is not an integer; pass e.g. --source-opt {name}=4"
        )
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise LongmillError(f"synthetic: option {name}={value!r} is not a number; pass e.g. --source-opt {name}=0.5")


def _distractors(region: Region, d: _Draw, gold: list[int], path: list[int], n: int) -> list[int]:
    """Look-alikes of the path entities, then their neighbours, then entities of the gold kinds."""
    gold_set = set(gold)
    chosen: list[int] = []
    seen = set(gold_set)

    def take(candidates: Sequence[int]) -> None:
        for c in candidates:
            if len(chosen) >= n:
                return
            if c not in seen:
                seen.add(c)
                chosen.append(c)

    take([region.entities[e].twin for e in path if region.entities[e].twin is not None])  # type: ignore[misc]
    take(d.shuffled(sorted({x for e in path for x in region.neighbours[e]})))
    kinds = sorted({region.entities[e].kind for e in gold})
    take(d.shuffled([x for k in kinds for x in region.by_kind[k]]))
    return d.shuffled(chosen)


def _triplet(world: SyntheticWorld, cfg: SyntheticConfig, i: int, seen: set[str]) -> Triplet:
    region = world.region(i // cfg.per_region)
    d = _Draw(sample_rng(cfg.seed, "synthetic", i), chunk=256)
    for attempt in range(600):
        if attempt % 150 == 0:  # family and hops are kept across retries, so their shares hold
            comparison, hops = d.chance(cfg.comparison_share), d.randint(cfg.min_hops, cfg.max_hops)
            comparison = comparison and hops >= 2  # a comparison needs two sides: 1-hop questions are lookups
        draft = _comparison(region, d, hops) if comparison else _bridge(region, d, hops)
        if draft is None:
            continue
        gold = list(dict.fromkeys(e for e, _ in draft.facts))
        if len(gold) != len(draft.facts):
            continue
        twins = [region.entities[g].twin for g in gold]
        if not any(t is not None and t not in gold for t in twins):
            continue  # every triplet gets at least one look-alike of a gold document
        norm = _norm_question(draft.question)
        if norm in seen:
            continue
        seen.add(norm)
        n_distractors = d.randint(cfg.min_distractors, cfg.max_distractors)
        distractors = _distractors(region, d, gold, draft.path, n_distractors)
        return Triplet(
            id=f"synthetic:{cfg.seed}-{i}",
            source="synthetic",
            split="train",
            question=draft.question,
            answers=list(dict.fromkeys(draft.answers)),
            hops=len(gold),
            question_type=draft.qtype,
            gold_docs=[region.documents[g] for g in gold],
            supporting_facts=[region.fact(e, key) for e, key in draft.facts],
            distractor_docs=[region.documents[x] for x in distractors],
        )
    raise LongmillError(
        f"synthetic: could not draw a new question for triplet {i} (region {i // cfg.per_region}); "
        f"lower per_region (now {cfg.per_region}) or widen min_hops/max_hops"
    )


def iter_synthetic_triplets(config: SyntheticConfig | None = None, **options: Any) -> Iterator[Triplet]:
    """Yield the synthetic triplets ``0 .. num_triplets - 1`` in order.

    Triplet ``i`` depends only on the seed, its index and the questions of the triplets before it
    (which it must not repeat), so a longer run extends a shorter one.

    Args:
        config: the configuration; built from ``options`` when omitted.
        **options: :class:`SyntheticConfig` fields (strings are coerced).
    """
    if config is not None and options:
        raise LongmillError(f"synthetic: pass either a config or options, not both (got options {sorted(options)})")
    cfg = config if config is not None else SyntheticConfig.from_options(options)
    world = SyntheticWorld(cfg.seed)
    seen: set[str] = set()
    for i in range(cfg.num_triplets):
        yield _triplet(world, cfg, i, seen)


def generate_triplets(n: int, seed: int = 0, **options: Any) -> list[Triplet]:
    """The first ``n`` synthetic triplets of world ``seed``.

    Args:
        n: how many triplets.
        seed: the world seed.
        **options: other :class:`SyntheticConfig` fields (``min_hops``, ``max_hops``,
            ``comparison_share``, ``per_region``, ``min_distractors``, ``max_distractors``).

    Example:
        >>> ts = generate_triplets(3, seed=1)
        >>> [t.id for t in ts]
        ['synthetic:1-0', 'synthetic:1-1', 'synthetic:1-2']
        >>> all(2 <= t.hops == len(t.gold_docs) <= 4 for t in ts)
        True
    """
    return list(iter_synthetic_triplets(SyntheticConfig.from_options({**options, "num_triplets": n, "seed": seed})))


@SOURCES.register("synthetic")
class SyntheticSource(Source):
    """longmill's own deterministic multi-hop world; needs no input and no network.

    Args:
        input: unused (must be ``None``).
        strict: unused (the world has no malformed records).
        limit: stop after this many triplets.
        options: ``num_triplets`` (default 2000), ``seed`` (0), ``min_hops`` (2), ``max_hops`` (4),
            ``comparison_share`` (0.35), ``per_region`` (100), ``min_distractors`` (6) and
            ``max_distractors`` (12); see :class:`SyntheticConfig`. CLI strings are coerced.
    """

    name = "synthetic"
    needs_input = False
    option_names = (
        "num_triplets", "seed", "min_hops", "max_hops", "comparison_share", "per_region",
        "min_distractors", "max_distractors",
    )  # fmt: skip

    def __init__(self, input: Any = None, **kwargs: Any):
        super().__init__(input, **kwargs)
        if self.input:
            raise LongmillError("source 'synthetic' takes no --input; set its size with --source-opt num_triplets=N")
        self.config = SyntheticConfig.from_options(self.options)

    def _iter(self) -> Iterator[Triplet]:
        log.info(
            "synthetic: %d triplets, seed %d, %d-%d hops", self.config.num_triplets, self.config.seed,
            self.config.min_hops, self.config.max_hops,
        )
        yield from iter_synthetic_triplets(self.config)


__all__ = [
    "ATTRIBUTES", "KINDS", "RELATIONS", "Entity", "Region", "SyntheticConfig", "SyntheticSource",
    "SyntheticWorld", "generate_triplets", "iter_synthetic_triplets",
]  # fmt: skip
