"""The words of the synthetic world: entity kinds, relations, attributes and every template that words them.

Everything here is data: what the region builder (:mod:`.world`) draws from and what the question
writer (:mod:`.questions`) phrases with. Changing a table changes the output: bump
:data:`~datagen.sources.synthetic.world.WORLD_VERSION` with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PERSON, CITY, COUNTRY, RIVER, UNIVERSITY, COMPANY, FILM = (
    "person", "city", "country", "river", "university", "company", "film",
)  # fmt: skip
KINDS = (PERSON, CITY, COUNTRY, RIVER, UNIVERSITY, COMPANY, FILM)

#: entities per kind in one region (about 200 in all)
REGION_COUNTS = {COUNTRY: 6, CITY: 32, RIVER: 10, UNIVERSITY: 12, COMPANY: 32, PERSON: 80, FILM: 28}
#: share of the entities of a region that come in look-alike pairs
LOOKALIKE_SHARE = 0.7


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
LOOPS = {("capital", "country")}

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
    ("birthplace", PERSON): (
        "Were {a} and {b} born in the same city?",
        "Were {a} and {b} born in the same place?",
    ),
    ("citizenship", PERSON): ("Were {a} and {b} citizens of the same country?",),
    ("alma_mater", PERSON): ("Did {a} and {b} study at the same university?",),
    ("country", CITY): (
        "Are {a} and {b} located in the same country?",
        "Are {a} and {b} in the same country?",
    ),
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
    "birthplace": (
        "{s} was born in {o}.",
        "{s} was born in the city of {o}.",
        "The birthplace of {s} is {o}.",
    ),
    "birth_year": (
        "{s} was born in {v}.",
        "{s} was born in the year {v}.",
        "The year of birth of {s} is {v}.",
    ),
    "citizenship": ("{s} was a citizen of {o}.", "{s} held the citizenship of {o}."),
    "alma_mater": ("{s} studied at {o}.", "{s} graduated from {o}.", "{s} earned a degree at {o}."),
    "death_year": ("{s} died in {v}.", "{s} passed away in {v}."),
    "known_for": ("{s} was known for {v}.", "{s} is best remembered for {v}."),
    # city
    "country": ("{s} is a city in {o}.", "{s} is a town in {o}.", "{s} is a city located in {o}."),
    "population": (
        "{s} has a population of {v}.",
        "The population of {s} is {v}.",
        "{s} is home to {v} people.",
    ),
    "river": ("{s} lies on {o}.", "{o} flows through {s}.", "{s} lies on the banks of {o}."),
    "city_founded": ("{s} was founded in {v}.", "{s} received its charter in {v}."),
    "landmark": ("{s} is known for its {v}.", "Visitors to {s} come for its {v}."),
    "economy": ("The economy of {s} rests on {v}.", "{s} grew rich on {v}."),
    "climate": ("{s} has {v} climate.", "The climate of {s} is {v} one."),
    # country
    "official_name": (
        "{s} is a country whose official name is {v}.",
        "{s}, officially {v}, is a sovereign state.",
    ),
    "capital": (
        "The capital of {s} is {o}.",
        "{o} is the capital of {s}.",
        "The capital city of {s} is {o}.",
    ),
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
    "campus": (
        "{s} is located in {o}.",
        "{s} has its main campus in {o}.",
        "The main campus of {s} is in {o}.",
    ),
    "founder": ("{s} was founded by {o}.", "{o} founded {s}.", "{s} was established by {o}."),
    "founded": ("{s} was founded in {v}.", "{s} was established in {v}.", "{s} dates from {v}."),
    "students": ("{s} enrols about {v} students.", "About {v} students attend {s}."),
    "library": ("The library of {s} holds about {v} volumes.", "The library of {s} keeps some {v} books."),
    # company
    "industry": ("{s} is a company in the {v} industry.", "{s} operates in the {v} industry."),
    "hq": (
        "{s} is headquartered in {o}.",
        "{s} has its headquarters in {o}.",
        "The head office of {s} is in {o}.",
    ),
    "employees": ("{s} employs about {v} people.", "About {v} people work for {s}."),
    "products": ("{s} is best known for its {v}.", "The best-known products of {s} are its {v}."),
    # film
    "genre": ("{s} is {v} film.", "{s} is {v} picture."),
    "director": ("{s} was directed by {o}.", "{o} directed {s}.", "{s} is a film by director {o}."),
    "release_year": (
        "{s} was released in {v}.",
        "{s} premiered in {v}.",
        "{s} first reached cinemas in {v}.",
    ),
    "studio": ("{s} was produced by {o}.", "{o} produced {s}."),
    "setting": ("{s} is set in {o}.", "The story of {s} takes place in {o}."),
    "runtime": ("{s} runs for {v} minutes.", "The running time of {s} is {v} minutes."),
    "reception": ("Critics praised {v} of {s}.", "Reviewers singled out {v} of {s}."),
}

# value pools the region builder draws attribute values from
OCCUPATIONS = (
    "painter",
    "physician",
    "architect",
    "botanist",
    "composer",
    "historian",
    "sculptor",
    "chemist",
    "poet",
    "astronomer",
    "cartographer",
    "economist",
    "novelist",
    "photographer",
    "mathematician",
)
FOUNDER_OCCUPATIONS = ("industrialist", "entrepreneur", "engineer", "merchant")
SCHOLAR_OCCUPATIONS = ("scholar", "philanthropist", "theologian", "physician")
INDUSTRIES = (
    "shipbuilding",
    "textile",
    "publishing",
    "mining",
    "brewing",
    "railway",
    "insurance",
    "software",
    "chemical",
    "glassmaking",
    "aviation",
    "pharmaceutical",
    "film",
    "steel",
    "telegraph",
)
GENRES = (
    "drama",
    "comedy",
    "thriller",
    "western",
    "musical",
    "documentary",
    "adventure",
    "romance",
    "crime",
    "war",
    "mystery",
    "animated",
)
UNI_TYPES = (
    "a public",
    "a private",
    "a technical",
    "an agricultural",
    "a maritime",
    "a medical",
    "a polytechnic",
)
KNOWN_FOR = (
    "a study of tidal mills",
    "early work on glass lenses",
    "a map of the northern coast",
    "a series of winter landscapes",
    "a treatise on river trade",
    "a collection of folk songs",
    "a survey of mountain flora",
    "a design for iron bridges",
    "a long correspondence with other scholars",
    "a reform of the postal service",
    "a catalogue of double stars",
    "a history of the salt roads",
)
LANDMARKS = (
    "covered markets",
    "stone bridges",
    "spring festival",
    "old harbour",
    "clock tower",
    "botanical garden",
    "salt works",
    "cathedral",
    "lighthouse",
    "opera house",
    "canal quarter",
    "hillside vineyards",
)
ECONOMIES = (
    "fishing",
    "the wool trade",
    "shipbuilding",
    "tourism",
    "printing",
    "river trade",
    "salt mining",
    "clockmaking",
    "timber",
    "wine growing",
)
CLIMATES = (
    "a mild maritime",
    "a dry continental",
    "a cool highland",
    "a humid subtropical",
    "a windy coastal",
)
PRODUCTS = (
    "marine engines",
    "printed atlases",
    "cotton sails",
    "signal lamps",
    "pocket watches",
    "steel cables",
    "glass bottles",
    "farm machinery",
    "radio sets",
    "travel guides",
    "paints",
    "telescopes",
)
PRAISED = (
    "the score",
    "the photography",
    "the lead performance",
    "the screenplay",
    "the editing",
    "the costumes",
)


def cap(s: str) -> str:
    """``s`` with its first letter upper-cased (the rest untouched, unlike :meth:`str.capitalize`)."""
    return s[:1].upper() + s[1:]


def article(word: str) -> str:
    """``word`` behind its indefinite article ("an architect", "a drama")."""
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _thousands(v: Any) -> str:
    return f"{v:,}"


#: how a fact sentence writes an attribute value, by attribute key (others: ``str(v)``)
VALUE_TEXT: dict[str, Callable[[Any], str]] = {
    "population": _thousands,
    "students": _thousands,
    "employees": _thousands,
    "basin": _thousands,
    "library": _thousands,
    "occupation": article,
    "genre": article,
}

#: every accepted answer naming an attribute value, by attribute key (others: ``[str(v)]``)
VALUE_ANSWERS: dict[str, Callable[[Any], list[str]]] = {
    "population": lambda v: [f"{v:,}", str(v)],
    "length": lambda v: [f"{v} kilometres", f"{v} km", f"{v} kilometers", str(v)],
    "occupation": lambda v: [v, article(v)],
    "industry": lambda v: [v, f"{v} industry", f"the {v} industry"],
    "genre": lambda v: [v, f"{v} film", article(v) + " film"],
}


def value_text(key: str, v: Any) -> str:
    """Attribute ``key``'s value ``v`` as a fact sentence states it."""
    return VALUE_TEXT.get(key, str)(v)


def value_answers(key: str, v: Any) -> list[str]:
    """The accepted answers for attribute ``key``'s value ``v``."""
    wording = VALUE_ANSWERS.get(key)
    return wording(v) if wording else [str(v)]
