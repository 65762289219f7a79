"""``longqa``: the gold documents plus distractors, filled to an exact token budget."""

from __future__ import annotations

import numpy as np

from datagen.generators.base import GENERATORS, GenConfig, Generator
from datagen.prompts import longqa_pieces
from datagen.schema import Sample, Triplet


@GENERATORS.register("longqa")
class LongQA(Generator):
    """Long-context QA: the question is asked directly after the documents (QwenLong-L1's DocQA form)."""

    name = "longqa"
    version = "1"
    config_cls = GenConfig

    def build(self, index: int, triplet: Triplet, rng: np.random.Generator) -> Sample:
        head, tail = longqa_pieces(triplet.question)
        priority = [triplet.distractor_docs[i] for i in rng.permutation(len(triplet.distractor_docs))] \
            if self.config.hard_distractors else []
        fit = self.fit(triplet, rng, head, tail, priority)
        return self.make_sample(index, triplet, fit)
