"""Entity names: syllable words, kind-typical forms ("University of Ostrel", "Brightmoor Holdings") and
look-alikes that differ by one letter.

A name is drawn as *parts* (a stem word plus kind-specific pieces such as a given name or a company
sector) and then *rendered*; a look-alike re-renders the same parts around a mutated word.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from datagen.sources.synthetic.draw import Draw
from datagen.sources.synthetic.lexicon import CITY, COMPANY, COUNTRY, FILM, PERSON, RIVER, UNIVERSITY

COUNTRY_FORMS = ("Republic", "Kingdom", "Federation", "Commonwealth", "Principality", "Grand Duchy")
SECTORS = ("Holdings", "Industries", "Works", "Group", "Trading", "Company", "Partners", "Enterprises")
FILM_NOUNS = (
    "Letters",
    "Harvest",
    "Lantern",
    "Winter",
    "Crossing",
    "Orchard",
    "Tide",
    "Covenant",
    "Mirror",
    "Garden",
    "Engine",
    "Silence",
    "Ballad",
    "Frontier",
    "Signal",
    "Promise",
)
FILM_PATTERNS = ("The {w} {n}", "{n} of {w}", "{n} over {w}", "The {n} of {w}", "{w} {n}")

# the syllables name words are built from
ONSETS = (
    "b",
    "br",
    "d",
    "dr",
    "f",
    "g",
    "gr",
    "h",
    "k",
    "kr",
    "l",
    "m",
    "n",
    "p",
    "pr",
    "r",
    "s",
    "st",
    "t",
    "th",
    "tr",
    "v",
    "w",
    "z",
    "c",
    "cl",
    "bl",
    "fl",
    "sh",
)
VOWELS = ("a", "e", "i", "o", "u", "a", "e", "i", "o", "a", "e", "o", "ae", "ei", "ou", "y")
MEDIAL_CODAS = ("", "", "", "", "", "n", "r", "l", "s")
FINAL_CODAS = ("", "", "n", "r", "l", "s", "th", "m", "k", "nd", "st", "x", "v", "rn")
STEM_SUFFIXES = {
    CITY: ("", "", "", "vik", "holm", "dale", "mere", "stad", "burgh", "ora", "wick"),
    COUNTRY: ("ia", "ania", "onia", "eria", "ovia", "ara", "esh"),
    COMPANY: ("", "", "moor", "field", "ridge", "stone", "well"),
    PERSON: ("", "", "", "wyn", "dar", "ric", "mont", "holt"),
}
VOWEL_CHARS = "aeiouy"
FINAL_CONSONANTS = "nrlsdtmk"

#: real place names the syllables could spell; never used (the list cannot be complete, see limitations)
REAL_NAMES = frozenset(
    """
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
""".split()
)

#: letter runs that read badly: tripled letters, long consonant or vowel runs, doubled a/i/u/y
UGLY = re.compile(r"(.)\1\1|[^aeiouy]{4}|[aeiouy]{3}|aa|ii|uu|yy|[^aeiouy]{3}$|^[^aeiouy]{3}")

Parts = dict[str, str]
#: (name, ref, aliases): the title, how running text refers to it, every accepted answer (name first)
Rendered = tuple[str, str, tuple[str, ...]]


def word(d: Draw, syllables: int) -> str:
    """A capitalised pronounceable word of ``syllables`` syllables and 3-8 letters."""
    while True:
        parts = []
        for j in range(syllables):
            onset = d.pick(ONSETS) if (j > 0 or d.chance(0.85)) else ""
            coda = d.pick(FINAL_CODAS) if j == syllables - 1 else d.pick(MEDIAL_CODAS)
            parts.append(onset + d.pick(VOWELS) + coda)
        w = "".join(parts)
        if 3 <= len(w) <= 8 and not UGLY.search(w):
            return w.capitalize()


def _stem(d: Draw, kind: str, used: set[str]) -> tuple[str, str]:
    """(word, suffix): a new syllable word and a kind-typical ending, not in ``used``."""
    while True:
        n = d.randint(1, 2) if kind == PERSON else 2
        w, suffix = word(d, n), d.pick(STEM_SUFFIXES.get(kind, ("",)))
        stem = (w + suffix).lower()
        if len(stem) >= 4 and stem not in used and stem not in REAL_NAMES:
            return w, suffix


def _given_name(d: Draw) -> str:
    given = word(d, d.randint(2, 3))
    while given.lower() in REAL_NAMES:
        given = word(d, 2)
    return given


#: the kind-specific parts of a name, drawn after its stem
_EXTRA_PARTS: dict[str, Callable[[Draw], Parts]] = {
    PERSON: lambda d: {"given": _given_name(d)},
    COUNTRY: lambda d: {"form": d.pick(COUNTRY_FORMS)},
    UNIVERSITY: lambda d: {"form": d.pick(("of", "of", "suffix"))},
    COMPANY: lambda d: {"sector": d.pick(SECTORS)},
    FILM: lambda d: {"pattern": d.pick(FILM_PATTERNS), "noun": d.pick(FILM_NOUNS)},
}


def draw_parts(d: Draw, kind: str, used: set[str]) -> Parts:
    """The parts of a new name of ``kind`` whose stem is not in ``used``."""
    w, suffix = _stem(d, kind, used)
    p = {"word": w, "suffix": suffix, "stem": w + suffix}
    extra = _EXTRA_PARTS.get(kind)
    if extra is not None:
        p.update(extra(d))
    return p


def _one(name: str) -> Rendered:
    return name, name, (name,)


def _country(p: Parts) -> Rendered:
    s = p["stem"]
    official = f"{p['form']} of {s}"
    return s, s, (s, official, f"the {official}")


def _river(p: Parts) -> Rendered:
    s = p["stem"]
    name = f"{s} River"
    return name, f"the {name}", (name, s, f"the {name}")


def _university(p: Parts) -> Rendered:
    s = p["stem"]
    of, suffix = f"University of {s}", f"{s} University"
    if p["form"] == "of":
        return of, f"the {of}", (of, suffix, f"the {of}")
    return suffix, suffix, (suffix, of)


#: how each kind renders its parts (cities use the bare stem)
_RENDER: dict[str, Callable[[Parts], Rendered]] = {
    PERSON: lambda p: _one(f"{p['given']} {p['stem']}"),
    COUNTRY: _country,
    RIVER: _river,
    UNIVERSITY: _university,
    COMPANY: lambda p: _one(f"{p['stem']} {p['sector']}"),
    FILM: lambda p: _one(p["pattern"].format(w=p["stem"], n=p["noun"])),
}


def render(kind: str, p: Parts) -> Rendered:
    """(name, ref, aliases) of an entity of ``kind`` with parts ``p``."""
    render_kind = _RENDER.get(kind)
    return render_kind(p) if render_kind else _one(p["stem"])


def mutate(d: Draw, w: str, used: set[str]) -> str | None:
    """``w`` with one letter of its second half changed (a vowel, or the final consonant), not in ``used``."""
    half = max(3, len(w) // 2)  # keep at least three letters of common prefix
    spots = [j for j in range(half, len(w)) if w[j] in VOWEL_CHARS]
    if w[-1] in FINAL_CONSONANTS:
        spots.append(len(w) - 1)
    for _ in range(20 if spots else 0):
        j = d.pick(spots)
        pool = VOWEL_CHARS if w[j] in VOWEL_CHARS else FINAL_CONSONANTS
        out = w[:j] + d.pick([x for x in pool if x != w[j]]) + w[j + 1 :]
        if not UGLY.search(out.lower()) and out.lower() not in used:
            return out
    return None
