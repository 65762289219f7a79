"""Triplets from the synthetic world, and the registered source ``synthetic``.

Triplet ``i`` lives in region ``i // per_region`` and draws from ``sample_rng(seed, "synthetic", i)``;
the only coupling between triplets is question de-duplication, which only looks at earlier ones.
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from datagen.schema import Triplet
from datagen.sources.base import SOURCES, Source
from datagen.sources.synthetic.config import SyntheticConfig
from datagen.sources.synthetic.draw import Draw
from datagen.sources.synthetic.questions import Draft, bridge, comparison, norm_question
from datagen.sources.synthetic.world import Region, SyntheticWorld
from longmill.errors import LongmillError
from longmill.rng import sample_rng

log = logging.getLogger(__name__)


def _distractors(region: Region, d: Draw, gold: list[int], path: list[int], n: int) -> list[int]:
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


def _gold(region: Region, draft: Draft, seen: set[str]) -> list[int] | str:
    """The gold documents of ``draft``, or why it is rejected; an accepted question joins ``seen``."""
    gold = list(dict.fromkeys(e for e, _ in draft.facts))
    if len(gold) != len(draft.facts):
        return "document used twice"
    twins = [region.entities[g].twin for g in gold]
    if not any(t is not None and t not in gold for t in twins):
        return "no look-alike"  # every triplet gets at least one look-alike of a gold document
    norm = norm_question(draft.question)
    if norm in seen:
        return "repeated question"
    seen.add(norm)
    return gold


def fact_keys(seed: int, region: int, facts: Sequence[tuple[int, str]]) -> list[str]:
    """What a question asks, as data: one key per gold fact (the entity and the relation or attribute),
    sorted, so that two wordings of one question (or a comparison with its sides swapped) get the same keys.

    Example:
        >>> fact_keys(0, 3, [(17, "length"), (4, "river")])
        ['synthetic:0:3:17.length', 'synthetic:0:3:4.river']
    """
    return sorted({f"synthetic:{seed}:{region}:{e}.{key}" for e, key in facts})


def _triplet(world: SyntheticWorld, cfg: SyntheticConfig, i: int, seen: set[str]) -> Triplet:
    region = world.region(i // cfg.per_region)
    d = Draw(sample_rng(cfg.seed, "synthetic", i), chunk=256)
    rejected: Counter[str] = Counter()
    for attempt in range(600):
        if attempt % 150 == 0:  # family and hops are kept across retries, so their shares hold
            is_comparison, hops = d.chance(cfg.comparison_share), d.randint(cfg.min_hops, cfg.max_hops)
            is_comparison = is_comparison and hops >= 2  # a comparison needs two sides; 1 hop is a lookup
        draft = comparison(region, d, hops) if is_comparison else bridge(region, d, hops)
        if draft is None:
            rejected["no well-posed draft"] += 1
            continue
        gold = _gold(region, draft, seen)
        if isinstance(gold, str):
            rejected[gold] += 1
            continue
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
            fact_keys=fact_keys(cfg.seed, region.index, draft.facts),
        )
    raise LongmillError(
        f"synthetic: could not draw a new question for triplet {i} (region {i // cfg.per_region}); "
        f"lower per_region (now {cfg.per_region}) or widen min_hops/max_hops (600 attempts rejected: "
        f"{', '.join(f'{n} {why}' for why, n in rejected.most_common())})"
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
        raise LongmillError(
            f"synthetic: pass either a config or options, not both (got options {sorted(options)})"
        )
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
        **options: the other :class:`SyntheticConfig` fields (strings are coerced).

    Example:
        >>> ts = generate_triplets(3, seed=1)
        >>> [t.id for t in ts]
        ['synthetic:1-0', 'synthetic:1-1', 'synthetic:1-2']
        >>> all(2 <= t.hops == len(t.gold_docs) <= 4 for t in ts)
        True
    """
    return list(
        iter_synthetic_triplets(SyntheticConfig.from_options({**options, "num_triplets": n, "seed": seed}))
    )


@SOURCES.register("synthetic")
class SyntheticSource(Source):
    """longmill's own deterministic multi-hop world; needs no input and no network.

    Args:
        input: unused (must be ``None``).
        strict: unused (the world has no malformed records).
        limit: stop after this many triplets.
        options: the fields of :class:`SyntheticConfig` (listed under Options); CLI strings are coerced.
    """

    name = "synthetic"
    needs_input = False
    option_names = SyntheticConfig.option_names()

    def __init__(self, input: Any = None, **kwargs: Any):
        super().__init__(input, **kwargs)
        if self.input:
            raise LongmillError(
                "source 'synthetic' takes no --input; set its size with --source-opt num_triplets=N"
            )
        self.config = SyntheticConfig.from_options(self.options)

    def _iter(self) -> Iterator[Triplet]:
        log.info(
            "synthetic: %d triplets, seed %d, %d-%d hops",
            self.config.num_triplets,
            self.config.seed,
            self.config.min_hops,
            self.config.max_hops,
        )
        yield from iter_synthetic_triplets(self.config)


SyntheticSource.__doc__ = (
    f"{inspect.cleandoc(SyntheticSource.__doc__ or '')}\n\nOptions:\n{SyntheticConfig.options_doc()}\n"
)
