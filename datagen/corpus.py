"""The corpus a generator draws from: the triplets, the document pool and the question pool.

The distractor pool is every document of the source (gold and distractor documents of all triplets,
deduplicated by content); the question pool is every distinct question of the source.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from datagen.schema import Document, Triplet
from datagen.sources.base import Source
from longmill.manifest import normalize_question
from longmill.rng import stable_id

log = logging.getLogger(__name__)


class Corpus:
    """Triplets plus the pools derived from them.

    Args:
        triplets: the source's triplets, in source order (the order is part of determinism).
        name: the source name, for messages.
    """

    def __init__(self, triplets: Sequence[Triplet], name: str = ""):
        self.name = name
        self.triplets = list(triplets)
        docs: dict[str, Document] = {}
        for t in self.triplets:
            for d in (*t.gold_docs, *t.distractor_docs):
                docs.setdefault(d.doc_id, d)
        self.docs: list[Document] = list(docs.values())
        self.doc_titles: list[str] = [d.title for d in self.docs]
        # One entry per distinct question; the triplet index lets KeyChain pull a decoy's gold docs.
        self.questions: list[str] = []
        self.question_triplet: list[int] = []
        seen: set[str] = set()
        for i, t in enumerate(self.triplets):
            key = normalize_question(t.question)
            if key not in seen:
                seen.add(key)
                self.questions.append(t.question)
                self.question_triplet.append(i)
        self._fingerprint: str | None = None

    @classmethod
    def from_source(cls, source: Source) -> Corpus:
        return cls(list(source.iter_triplets()), name=source.name)

    def __len__(self) -> int:
        return len(self.triplets)

    def fingerprint(self) -> str:
        """Changes when the triplets change (ids, questions, answers or documents)."""
        if self._fingerprint is None:
            self._fingerprint = stable_id(
                [
                    (
                        t.id,
                        t.question,
                        t.answers,
                        [d.doc_id for d in t.gold_docs],
                        [d.doc_id for d in t.distractor_docs],
                    )
                    for t in self.triplets
                ]
            )
        return self._fingerprint

    def order(self, rng: np.random.Generator) -> np.ndarray:
        """A permutation of the triplet indices (which triplet sample ``i`` starts from)."""
        return rng.permutation(len(self.triplets))

    def distractors(
        self,
        rng: np.random.Generator,
        exclude_ids: set[str],
        exclude_titles: set[str],
        priority: Iterable[Document] = (),
    ) -> Iterator[Document]:
        """Distractor candidates: ``priority`` documents first, then the pool in a random order.

        Documents whose id or title is excluded (the sample's gold documents) are never yielded, and no
        document is yielded twice.
        """
        seen = set(exclude_ids)
        for d in priority:
            if d.doc_id not in seen and d.title not in exclude_titles:
                seen.add(d.doc_id)
                yield d
        n = len(self.docs)
        if n == 0:
            return
        # Blocks of a random permutation: cheap even for pools of a million documents.
        for i in rng.permutation(n):
            d = self.docs[i]
            if d.doc_id not in seen and d.title not in exclude_titles:
                seen.add(d.doc_id)
                yield d

    def decoy_questions(self, rng: np.random.Generator, question: str, k: int) -> list[int]:
        """``k`` distinct indices into :attr:`questions`, none equal to ``question`` (normalised)."""
        own = normalize_question(question)
        out: list[int] = []
        n = len(self.questions)
        if k <= 0:
            return out
        # Draw a few more than needed so that skipping the question itself rarely needs a second draw.
        for j in (
            rng.permutation(n) if n <= 4 * k + 16 else rng.choice(n, size=min(n, 2 * k + 8), replace=False)
        ):
            if normalize_question(self.questions[j]) != own:
                out.append(int(j))
                if len(out) == k:
                    return out
        if len(out) < k:  # the quick draw was unlucky: fall back to a full pass
            taken = set(out)
            for j in rng.permutation(n):
                if int(j) not in taken and normalize_question(self.questions[j]) != own:
                    out.append(int(j))
                    taken.add(int(j))
                    if len(out) == k:
                        break
        return out
