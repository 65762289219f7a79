"""``longqa``: the gold documents plus distractors, filled to an exact token budget."""

from __future__ import annotations

import numpy as np

from datagen.generators.base import GENERATORS, GenConfig, Generator
from datagen.generators.fit import fit_prompt
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
        fit = fit_prompt(
            tokenizer=self.tokenizer,
            counter=self.counter,
            length=self.config.length,
            tolerance=self.config.tolerance,
            head=head,
            tail=tail,
            gold=triplet.gold_docs,
            candidates=self.corpus.distractors(rng, {d.doc_id for d in triplet.gold_docs},
                                               {d.title for d in triplet.gold_docs}, priority),
            rng=rng,
            placement=self.config.placement,
            system_prompt=self.config.system_prompt,
        )
        return self.make_sample(index, triplet, fit)
