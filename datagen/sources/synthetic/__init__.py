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
:func:`generate_triplets` and the registered source :class:`SyntheticSource`, all importable from
here. The modules follow the pipeline: :mod:`.lexicon` (kinds, relations, attributes and their
wording), :mod:`.names` (entity names and look-alikes), :mod:`.draw` (buffered random draws),
:mod:`.world` (regions: entities, facts, documents), :mod:`.questions` (bridge and comparison
questions), :mod:`.config` (the options, declared once) and :mod:`.source` (triplets and the source).
"""

from datagen.sources.synthetic.config import SyntheticConfig
from datagen.sources.synthetic.lexicon import (
    ATTRIBUTES,
    CITY,
    COMPANY,
    COUNTRY,
    FACTS,
    FILM,
    FUSED_QUESTIONS,
    KINDS,
    LOOKALIKE_SHARE,
    NUMERIC_COMPARISONS,
    PERSON,
    PLURAL_NP,
    REGION_COUNTS,
    RELATIONS,
    RIVER,
    SAME_COMPARISONS,
    UNIVERSITY,
    Attribute,
    Relation,
)
from datagen.sources.synthetic.questions import Step
from datagen.sources.synthetic.source import SyntheticSource, generate_triplets, iter_synthetic_triplets
from datagen.sources.synthetic.world import WORLD_VERSION, Entity, Region, SyntheticWorld

#: the public API first; the world's vocabulary (kinds, tables) is re-exported for generators that
#: build on the world (e.g. :mod:`datagen.generators.aggregation`)
__all__ = [
    "ATTRIBUTES", "KINDS", "RELATIONS", "Entity", "Region", "SyntheticConfig", "SyntheticSource",
    "SyntheticWorld", "generate_triplets", "iter_synthetic_triplets",
    "CITY", "COMPANY", "COUNTRY", "FILM", "PERSON", "RIVER", "UNIVERSITY", "FACTS", "FUSED_QUESTIONS",
    "LOOKALIKE_SHARE", "NUMERIC_COMPARISONS", "PLURAL_NP", "REGION_COUNTS", "SAME_COMPARISONS",
    "WORLD_VERSION", "Attribute", "Relation", "Step",
]  # fmt: skip
