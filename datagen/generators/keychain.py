"""``keychain``: LoongRL's KeyChain task.

The true question is hidden at the end of a chain of UUID key-value pairs; other chains lead to decoy
questions of the same source. The pairs are written as JSON objects (``{"<key>": "<value>"}.``) after
sentence ends, in random places, and the instructions name the head key of the true chain.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np

from datagen.errors import LongmillError, SourceTooSmallError
from datagen.generators.base import GENERATORS, GenConfig, Generator
from datagen.generators.fit import inline_pair, loose_pair
from datagen.prompts import keychain_pieces
from datagen.registry import did_you_mean
from datagen.rng import rng_uuid
from datagen.schema import Chain, Sample, Triplet

UUID_FORMATS = ("full", "short")


def default_num_chains(length: int) -> int:
    """Chains scale with the context: one per ~6k tokens, between 2 and 16 (20k: 3, 60k: 10)."""
    return max(2, min(16, round(length / 6000)))


def pair_text(key: str, value: str) -> str:
    """One key-value pair as a JSON object; JSON escaping keeps quotes in questions unambiguous."""
    return json.dumps({key: value}, ensure_ascii=False)


#: A key as this generator writes it: a full UUID or 16 hex digits.
KEY_PATTERN = r"(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{16})"
_PAIR_START = re.compile(r'\{"(' + KEY_PATTERN + r')": ')
_KEY_ONLY = re.compile(r"^" + KEY_PATTERN + r"$")
_DECODER = json.JSONDecoder()


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """Every ``{"<key>": "<value>"}`` JSON object in ``text``, in order of appearance.

    Example:
        >>> parse_pairs('Text. {"0123456789abcdef": "Who won?"}. More.')
        [('0123456789abcdef', 'Who won?')]
    """
    out = []
    for m in _PAIR_START.finditer(text):
        try:
            obj, _ = _DECODER.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and len(obj) == 1:
            (k, v), = obj.items()
            if isinstance(v, str) and _KEY_ONLY.match(k):
                out.append((k, v))
    return out


def strip_pairs(text: str, pairs: list[tuple[str, str]] | None = None) -> str:
    """``text`` with the key-value pairs taken out again (as they were inserted)."""
    for k, v in parse_pairs(text) if pairs is None else pairs:
        p = pair_text(k, v)
        text = text.replace(inline_pair(p), "").replace(loose_pair(p), "")
    return text


@dataclass
class KeyChainConfig(GenConfig):
    """KeyChain options, on top of :class:`GenConfig`.

    Args:
        hops: keys per chain (the true chain has ``hops`` pairs, the last pointing at the question).
        num_chains: chains in total (1 true + decoys); default scales with the length.
        uuid_format: ``full`` (36-character UUIDs) or ``short`` (16 hex digits).
    """

    hops: int = 4
    num_chains: int | None = None
    uuid_format: str = "full"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hops < 1:
            raise LongmillError(f"hops must be >= 1, got {self.hops}")
        if self.num_chains is None:
            self.num_chains = default_num_chains(self.length)
        if self.num_chains < 1:
            raise LongmillError(f"num_chains must be >= 1, got {self.num_chains}")
        if self.uuid_format not in UUID_FORMATS:
            raise LongmillError(f"uuid_format must be one of {', '.join(UUID_FORMATS)}, got {self.uuid_format!r}"
                                f"{did_you_mean(self.uuid_format, list(UUID_FORMATS))}")


@GENERATORS.register("keychain")
class KeyChain(Generator):
    """Multi-hop QA buried in distractors, its question hidden behind a UUID chain."""

    name = "keychain"
    version = "1"
    config_cls = KeyChainConfig
    config: KeyChainConfig

    def preflight(self) -> None:
        need = self.config.num_chains - 1
        if len(self.corpus.questions) - 1 < need:
            raise SourceTooSmallError(
                f"source '{self.corpus.name}' has {len(self.corpus.questions)} distinct questions, but "
                f"{self.config.num_chains} chains need {need} decoy questions besides the true one; "
                f"use fewer --num-chains or a larger source"
            )
        super().preflight()

    def _keys(self, rng: np.random.Generator, n: int) -> list[str]:
        short = self.config.uuid_format == "short"
        keys: list[str] = []
        seen: set[str] = set()
        while len(keys) < n:
            k = rng_uuid(rng, short=short)
            if k not in seen:  # collisions are astronomically rare, but keys must be unique
                seen.add(k)
                keys.append(k)
        return keys

    def build(self, index: int, triplet: Triplet, rng: np.random.Generator) -> Sample:
        c = self.config
        hops, n_chains = c.hops, int(c.num_chains or 1)
        decoys = self.corpus.decoy_questions(rng, triplet.question, n_chains - 1)
        keys = self._keys(rng, hops * n_chains)
        chains = [Chain(keys=keys[:hops], target=triplet.question, is_true=True)]
        for j, q in enumerate(decoys):
            chains.append(Chain(keys=keys[(j + 1) * hops:(j + 2) * hops], target=self.corpus.questions[q],
                                is_true=False))
        pairs = [pair_text(ch.keys[i], ch.keys[i + 1] if i + 1 < hops else ch.target)
                 for ch in chains for i in range(hops)]

        priority = []
        if c.hard_distractors:
            # The record's own distractors, then the decoy questions' gold documents: a decoy question
            # that is answerable from the context is what makes following the chain necessary.
            priority = list(triplet.distractor_docs)
            for q in decoys:
                priority.extend(self.corpus.triplets[self.corpus.question_triplet[q]].gold_docs)
            priority = [priority[i] for i in rng.permutation(len(priority))]
        head, tail = keychain_pieces(chains[0].keys[0])
        fit = self.fit(triplet, rng, head, tail, priority, pairs)
        return self.make_sample(index, triplet, fit, num_chains=n_chains, chain_hops=hops,
                                chain_head=chains[0].keys[0], chains=chains)
