"""``longqa``: the gold documents plus distractors, filled to an exact token budget."""

from __future__ import annotations

import numpy as np

from datagen.generators.base import GENERATORS, GenConfig, Generator, user_message
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
        priority = (
            [triplet.distractor_docs[i] for i in rng.permutation(len(triplet.distractor_docs))]
            if self.config.hard_distractors
            else []
        )
        fit = self.fit(triplet, rng, head, tail, priority)
        return self.make_sample(index, triplet, fit)

    @classmethod
    def check_row(cls, row: dict) -> list[tuple[str, str]]:
        """A long-QA sample has no chains and no key-value pairs in its text."""
        from datagen.generators.keychain import parse_pairs  # keychain defines the pair syntax

        problems: list[tuple[str, str]] = []
        if row["num_chains"] != 0 or row["chains"]:
            problems.append(("structure", f"a long-QA sample has num_chains {row['num_chains']}"))
        user = user_message(row)
        head, tail = longqa_pieces(row["question"])
        if not user.endswith(tail):
            asked = user.rsplit("Question: ", 1)[-1].split("\n\n", 1)[0] if "Question: " in user else None
            problems.append(
                (
                    "question",
                    f"the text asks {asked!r}, not the question column {row['question']!r}"
                    if asked is not None
                    else "the text does not end with the question and answer format",
                )
            )
        if not user.startswith(head):
            problems.append(("structure", "the user message does not start with the long-QA instructions"))
        text_pairs = parse_pairs(user)
        if text_pairs:
            problems.append(
                ("chain", f"a sample without chains has {len(text_pairs)} key-value pairs in its text")
            )
        return problems
