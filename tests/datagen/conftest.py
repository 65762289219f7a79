from __future__ import annotations

import numpy as np
import pytest

from datagen.corpus import Corpus
from datagen.schema import Document, SupportingFact, Triplet

WORDS = (
    "river mountain city king queen castle film director born year company founded museum "
    "harbour valley bridge tower village painter novel singer album league island forest"
).split()


def toy_triplets(n: int = 200, seed: int = 0, docs_per_triplet: int = 8, sentences: int = 5) -> list[Triplet]:
    """Small triplets with plausible multi-sentence paragraphs (sentence ends followed by a space)."""
    rng = np.random.default_rng(seed)

    def para(k: int) -> str:
        return " ".join(
            " ".join(rng.choice(WORDS, size=int(rng.integers(6, 14)))).capitalize() + "." for _ in range(k)
        )

    out = []
    for i in range(n):
        # the answer is text of the first gold document, as in an extractive source (datagen verify checks it)
        gold = [
            Document.make(
                f"Gold {i}-{j}",
                f"Entity {i}-{j} is notable. " + (f"It is answer {i}. " if j == 0 else "") + para(sentences),
            )
            for j in range(2)
        ]
        dis = [Document.make(f"Other {i}-{j}", para(sentences)) for j in range(docs_per_triplet)]
        out.append(
            Triplet(
                id=f"toy:{i}",
                source="toy",
                split="dev",
                question=f'Which "entity" is number {i}?',
                answers=[f"answer {i}", f"ans {i}"],
                hops=2,
                question_type="bridge",
                gold_docs=gold,
                supporting_facts=[SupportingFact(g.title, 0, g.text.split(". ")[0] + ".") for g in gold],
                distractor_docs=dis,
                # half the toy questions carry a fact identity, as the synthetic world's do; half have none,
                # as real sources' do
                fact_keys=[f"toy:{i}.first", f"toy:{i}.second"] if i % 2 == 0 else None,
            )
        )
    return out


@pytest.fixture(scope="session")
def toy_corpus() -> Corpus:
    return Corpus(toy_triplets(), name="toy")


from datagen.sources.base import Source  # noqa: E402


class ListSource(Source):
    """A source over triplets already in memory (for runner tests)."""

    name = "toy"
    needs_input = False

    def __init__(self, triplets, **kw):
        super().__init__(None, **kw)
        self._triplets = triplets

    def _iter(self):
        yield from self._triplets


@pytest.fixture()
def toy_source():
    return ListSource(toy_triplets())
