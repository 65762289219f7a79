"""``keychain``: LoongRL's KeyChain task.

The true question is hidden at the end of a chain of UUID key-value pairs; other chains lead to decoy
questions of the same source. The pairs are written as JSON objects (``{"<key>": "<value>"}.``) after
sentence ends, in random places, and the instructions name the head key of the true chain.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from datagen.generators.base import GENERATORS, GenConfig, Generator, user_message
from datagen.generators.fit import (
    FitResult,
    ends_sentence,
    parse_placement,
)
from datagen.prompts import HEAD_KEY_PHRASE, keychain_pieces
from datagen.schema import Chain, Sample, Triplet
from longmill.errors import LongmillError, SourceTooSmallError
from longmill.registry import did_you_mean
from longmill.rng import rng_uuid

UUID_FORMATS = ("full", "short", "hex8")
#: LoongRL: 4 chains per 1,024 tokens of budget, of 4 keys each.
LOONGRL_CHAINS_PER_1024 = 4
#: The share of pairs put on their own line between documents under the ``loongrl`` preset.
LOONGRL_PAIRS_BETWEEN = 0.5
#: The standard deviation of the core block's depth around the middle under the ``loongrl`` preset.
LOONGRL_CORE_SIGMA = 0.1
#: What a run takes for the options below when they are not given: without a preset, and per preset
#: (whose chain count, ``loongrl_num_chains``, depends on the length). A value given explicitly, even one
#: equal to the default, is never replaced.
OPTION_DEFAULTS: dict[str, Any] = {"uuid_format": "full", "pairs_between": 0.0, "doc_template": "default"}
PRESET_VALUES: dict[str, dict[str, Any]] = {
    "loongrl": {"uuid_format": "hex8", "pairs_between": LOONGRL_PAIRS_BETWEEN, "doc_template": "passage"},
}
#: Presets: ``loongrl`` reproduces the task of LoongRL's KeyChain generator (see docs/design.md,
#: "KeyChain: the default and the LoongRL preset").
PRESETS = tuple(PRESET_VALUES)


def default_num_chains(length: int) -> int:
    """Chains scale with the context: one per ~6k tokens, between 2 and 16 (20k: 3, 60k: 10)."""
    return max(2, min(16, round(length / 6000)))


def loongrl_num_chains(length: int) -> int:
    """LoongRL's count: ``4 * length // 1024`` (234 at 60k, 78 at 20k), at least 2."""
    return max(2, LOONGRL_CHAINS_PER_1024 * length // 1024)


def pair_text(key: str, value: str) -> str:
    """One key-value pair as a JSON object; JSON escaping keeps quotes in questions unambiguous."""
    return json.dumps({key: value}, ensure_ascii=False)


#: A key as this generator writes it: a full UUID, 16 hex digits or 8 hex digits.
KEY_PATTERN = r"(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{16}|[0-9a-f]{8})"
_PAIR_START = re.compile(r'\{"(' + KEY_PATTERN + r')": ')
_KEY_ONLY = re.compile(r"^" + KEY_PATTERN + r"$")
_DECODER = json.JSONDecoder()
_HEAD = re.compile(re.escape(HEAD_KEY_PHRASE) + r' "(' + KEY_PATTERN + r')"')


def pair_spans(text: str) -> list[tuple[int, int, str, str]]:
    """``(start, end, key, value)`` of every ``{"<key>": "<value>"}`` JSON object in ``text``, in order."""
    out = []
    for m in _PAIR_START.finditer(text):
        try:
            obj, end = _DECODER.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and len(obj) == 1:
            ((k, v),) = obj.items()
            if isinstance(v, str) and _KEY_ONLY.match(k):
                out.append((m.start(), end, k, v))
    return out


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """Every ``{"<key>": "<value>"}`` JSON object in ``text``, in order of appearance.

    Example:
        >>> parse_pairs('Text. {"0123456789abcdef": "Who won?"}. More.')
        [('0123456789abcdef', 'Who won?')]
    """
    return [(k, v) for _, _, k, v in pair_spans(text)]


def _inserted(text: str, start: int, end: int) -> tuple[int, int] | None:
    """The span of the pair at ``[start, end)`` with what was inserted around it (inline or own line)."""
    if start > 0 and text[start - 1] == " " and text.startswith(".", end):
        return start - 1, end + 1  # inline_pair: ' {..}.'
    if text.startswith(".\n\n", end):
        return start, end + 3  # loose_pair: '{..}.\n\n'
    return None


def strip_pairs(text: str, pairs: list[tuple[str, str]] | None = None) -> str:
    """``text`` with the key-value pairs (all, or those in ``pairs``) taken out again as they were inserted.

    One pass over the text, so the cost does not grow with the number of pairs times the text.
    """
    wanted = None if pairs is None else set(pairs)
    pieces, pos = [], 0
    for a, b, k, v in pair_spans(text):
        if (wanted is not None and (k, v) not in wanted) or a < pos:
            continue
        span = _inserted(text, a, b)
        if span is None:
            continue
        pieces.append(text[pos : span[0]])
        pos = span[1]
    pieces.append(text[pos:])
    return "".join(pieces)


def follow_chain(pairs: list[tuple[str, str]], head: str, max_steps: int = 10_000) -> tuple[list[str], str]:
    """Follow ``head`` through ``pairs``; returns (keys visited, the value that is not a key)."""
    table = dict(pairs)
    keys, cur = [], head
    while cur in table:
        if cur in keys or len(keys) > max_steps:
            raise ValueError(f"the chain from {head} loops at {cur}")
        keys.append(cur)
        cur = table[cur]
    if not keys:
        raise ValueError(f"the head key {head} is not a key of any pair in the text")
    return keys, cur


_CLOSERS = "\"')]\u201d\u2019"


def _after_abbreviation(text: str, spans: list[tuple[int, int, str, str]]) -> list[str]:
    """The inline pairs of ``text`` that follow an initial or abbreviation ("James P. {..}. Comer")."""
    out = []
    for a, b, _, _ in spans:
        span = _inserted(text, a, b)
        if span is None or span[0] != a - 1:
            continue  # a pair on its own line between documents
        # The text around the slot as it was before the pair went in: up to the slot, then what follows.
        before = text[max(0, a - 41) : a - 1]
        window = before + text[b + 1 : b + 3]
        j = len(before)
        while j > 0 and window[j - 1] in _CLOSERS:
            j -= 1
        if j > 0 and window[j - 1] in ".!?" and not ends_sentence(window, j - 1, len(before)):
            out.append(text[max(0, a - 21) : b + 12])
    return out


@dataclass
class KeyChainConfig(GenConfig):
    """KeyChain options, on top of :class:`GenConfig`.

    Args:
        hops: keys per chain (the true chain has ``hops`` pairs, the last pointing at the question).
        num_chains: chains in total (1 true + decoys); default scales with the length.
        uuid_format: ``full`` (36-character UUIDs), ``short`` (16 hex digits) or ``hex8`` (8 hex digits);
            default full (hex8 under the loongrl preset).
        pairs_between: the share of pairs written on their own line between documents rather than
            after a sentence end (0 to 1); default 0 (0.5 under the loongrl preset).
        doc_template: how documents are written: ``default``, ``passage`` or ``plain``; default default
            (passage under the loongrl preset).
        preset: ``loongrl`` for LoongRL's task: 4 chains per 1,024 tokens, ``hex8`` keys, ``passage``
            documents, half the pairs between documents, and the source record's whole paragraph set
            kept together as a core block around the middle. Options given explicitly win over the
            preset's, options left out take them (docs/design.md, "KeyChain: the default and the LoongRL
            preset", says how it differs from the default).
    """

    hops: int = 4
    # None: not given; the preset's value applies, else OPTION_DEFAULTS' (so what the user gives wins)
    num_chains: int | None = None
    uuid_format: str | None = None
    pairs_between: float | None = None
    preset: str | None = None
    doc_template: str | None = None  # GenConfig's field, with "not given" as its default here

    def __post_init__(self) -> None:
        #: options derived from the length, which ``at_length`` derives again (an attribute, not a field:
        #: not part of ``params``)
        self.derived: tuple[str, ...] = ("num_chains",) if self.num_chains is None else ()
        if self.preset is not None:
            if self.preset not in PRESETS:
                close = difflib.get_close_matches(self.preset, PRESETS, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise LongmillError(
                    f"unknown preset {self.preset!r}{hint} Valid presets: {', '.join(PRESETS)}"
                )
            if self.num_chains is None:
                self.num_chains = loongrl_num_chains(self.length)
        preset = PRESET_VALUES.get(self.preset or "", {})
        for name, default in OPTION_DEFAULTS.items():
            if getattr(self, name) is None:
                setattr(self, name, preset.get(name, default))
        super().__post_init__()
        if self.hops < 1:
            raise LongmillError(f"hops must be >= 1, got {self.hops}")
        if self.num_chains is None:
            self.num_chains = default_num_chains(self.length)
        if self.num_chains < 1:
            raise LongmillError(f"num_chains must be >= 1, got {self.num_chains}")
        if self.uuid_format not in UUID_FORMATS:
            raise LongmillError(
                f"uuid_format must be one of {', '.join(UUID_FORMATS)}, got {self.uuid_format!r}"
                f"{did_you_mean(self.uuid_format, list(UUID_FORMATS))}"
            )
        if not 0.0 <= self.pairs_between <= 1.0:
            raise LongmillError(f"pairs_between must be in [0, 1], got {self.pairs_between}")

    def check_given(self, given: set[str]) -> None:
        """Under a preset the record's paragraphs are one core block, which ``uniform`` cannot place (the
        default placement puts it around the middle, as LoongRL does); a typed ``--placement uniform``
        is refused rather than silently replaced."""
        if self.preset is not None and "placement" in given and self.placement == "uniform":
            raise LongmillError(
                f"--placement uniform places each gold document on its own, but under --preset {self.preset} "
                "the record's paragraphs form one core block: leave --placement out to put the block "
                f"around the middle (depth drawn from N(0.5, {LOONGRL_CORE_SIGMA})), or give "
                "--placement middle or depth:X"
            )


@GENERATORS.register("keychain")
class KeyChain(Generator):
    """Multi-hop QA buried in distractors, its question hidden behind a UUID chain."""

    name = "keychain"
    version = "2"  # 2: no pairs after initials or abbreviations; 8-hex keys, pairs between documents
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
        fmt = self.config.uuid_format
        keys: list[str] = []
        seen: set[str] = set()
        while len(keys) < n:
            k = rng.bytes(4).hex() if fmt == "hex8" else rng_uuid(rng, short=fmt == "short")
            if k not in seen:  # collisions are astronomically rare, but keys must be unique
                seen.add(k)
                keys.append(k)
        return keys

    def build(self, index: int, triplet: Triplet, rng: np.random.Generator) -> Sample:
        c = self.config
        hops, n_chains = c.hops, int(c.num_chains or 1)
        decoys = self.corpus.decoy_questions(rng, triplet.question, n_chains - 1)
        keys = self._keys(rng, hops * n_chains)
        chains = [Chain(keys=keys[:hops], target=triplet.question, is_true=True, fact_keys=triplet.fact_keys)]
        for j, q in enumerate(decoys):
            chains.append(
                Chain(
                    keys=keys[(j + 1) * hops : (j + 2) * hops],
                    target=self.corpus.questions[q],
                    is_true=False,
                    fact_keys=self.corpus.triplets[self.corpus.question_triplet[q]].fact_keys,
                )
            )
        pairs = [
            pair_text(ch.keys[i], ch.keys[i + 1] if i + 1 < hops else ch.target)
            for ch in chains
            for i in range(hops)
        ]

        between = [bool(x) for x in rng.random(len(pairs)) < c.pairs_between] if c.pairs_between > 0 else []
        head, tail = keychain_pieces(chains[0].keys[0])
        if c.preset == "loongrl":
            fit = self._fit_core(triplet, rng, head, tail, decoys, pairs, between)
        else:
            priority = []
            if c.hard_distractors:
                # The record's own distractors, then the decoy questions' gold documents: a decoy question
                # that is answerable from the context is what makes following the chain necessary.
                priority = list(triplet.distractor_docs)
                for q in decoys:
                    priority.extend(self.corpus.triplets[self.corpus.question_triplet[q]].gold_docs)
                priority = [priority[i] for i in rng.permutation(len(priority))]
            fit = self.fit(triplet, rng, head, tail, priority, pairs, between)
        return self.make_sample(
            index,
            triplet,
            fit,
            num_chains=n_chains,
            chain_hops=hops,
            chain_head=chains[0].keys[0],
            chains=chains,
        )

    def _fit_core(
        self,
        triplet: Triplet,
        rng: np.random.Generator,
        head: str,
        tail: str,
        decoys: list[int],
        pairs: list[str],
        between: list[bool],
    ) -> FitResult:
        """LoongRL's layout: the record's whole paragraph set (gold and its own distractors) stays
        together as one core block, at a depth drawn around the middle; other documents fill the rest."""
        c = self.config
        core = list(triplet.gold_docs) + list(triplet.distractor_docs)
        depth = parse_placement(c.placement)
        if depth is None:  # the default placement means LoongRL's: Gaussian around the middle
            depth = float(np.clip(rng.normal(0.5, LOONGRL_CORE_SIGMA), 0.0, 1.0))
        priority: list = []
        if c.hard_distractors:
            for q in decoys:
                priority.extend(self.corpus.triplets[self.corpus.question_triplet[q]].gold_docs)
            priority = [priority[i] for i in rng.permutation(len(priority))]
        fit = self.fit(
            triplet, rng, head, tail, priority, pairs, between, gold=core, placement=f"depth:{depth}"
        )
        g = len(triplet.gold_docs)  # the core's first documents are the gold ones
        return dataclasses.replace(
            fit, gold_positions=fit.gold_positions[:g], gold_depths=fit.gold_depths[:g]
        )

    @classmethod
    def documents(cls, row: dict) -> list[str]:
        """The documents with the chain pairs taken out (a reader's view of the evidence)."""
        user = user_message(row)
        pairs = parse_pairs(user) if row["num_chains"] else []
        return [strip_pairs(doc, pairs) for doc in super().documents(row)]

    @classmethod
    def check_row(cls, row: dict) -> list[tuple[str, str]]:
        """Re-derive the chains from the text alone, then compare them with the carried ``chains``."""
        problems: list[tuple[str, str]] = []
        user = user_message(row)
        spans = pair_spans(user)
        text_pairs = [(k, v) for _, _, k, v in spans]
        keys = [k for k, _ in text_pairs]
        if len(set(keys)) != len(keys):
            dup = sorted({k for k in keys if keys.count(k) > 1})
            problems.append(("chain", f"keys appear more than once: {dup[:3]}"))
        off = list(row["doc_offsets"] or [])
        # The head is read from the instructions only (before the first and after the last document), so
        # a document that happens to quote the phrase cannot pass for a second instruction.
        instructions = (
            user[: off[0]] + "\n" + user[off[-1] :] if off and 0 <= off[0] <= off[-1] <= len(user) else user
        )
        heads = _HEAD.findall(instructions)
        if not heads:
            return problems + [("chain", "the instructions name no head key")]
        head = heads[-1]
        if len(set(heads)) > 1:
            problems.append(
                (
                    "chain",
                    f"the instructions name {len(set(heads))} different head keys: {sorted(set(heads))[:3]}",
                )
            )
        head_text, tail = keychain_pieces(head)
        if not user.endswith(tail):
            problems.append(
                (
                    "chain",
                    "the instructions after the text are not the ones naming head "
                    f"{head} (another head key or question was written into them)",
                )
            )
        if not user.startswith(head_text):
            problems.append(("structure", "the user message does not start with the KeyChain instructions"))
        if head != row["chain_head"]:
            problems.append(("chain", f"instructions name head {head} but chain_head is {row['chain_head']}"))
        try:
            visited, end = follow_chain(text_pairs, head)
        except ValueError as e:
            return problems + [("chain", str(e))]
        if end != row["question"]:
            problems.append(
                ("chain", f"the chain from {head} ends at {end!r}, not at the question {row['question']!r}")
            )
        if len(visited) != row["chain_hops"]:
            problems.append(
                ("chain", f"the true chain has {len(visited)} keys, chain_hops is {row['chain_hops']}")
            )
        targets = [v for _, v in text_pairs if not _KEY_ONLY.match(v)]
        if targets.count(row["question"]) != 1:
            problems.append(
                (
                    "chain",
                    f"the question is the end of {targets.count(row['question'])} chains, not exactly 1",
                )
            )
        if len(set(targets)) != len(targets):
            problems.append(("chain", "two chains end at the same question"))
        if len(targets) != row["num_chains"]:
            problems.append(
                ("chain", f"the text has {len(targets)} chain ends, num_chains is {row['num_chains']}")
            )
        misplaced = _after_abbreviation(user, spans)
        if misplaced:
            problems.append(
                (
                    "placement",
                    f"{len(misplaced)} pair(s) sit after an initial or abbreviation, not a "
                    f"sentence end, e.g. {misplaced[0]!r}",
                )
            )
        carried = {
            (k, (c["keys"][i + 1] if i + 1 < len(c["keys"]) else c["target"]))
            for c in row["chains"]
            for i, k in enumerate(c["keys"])
        }
        if carried != set(text_pairs):
            problems.append(
                (
                    "chain",
                    f"the pairs in the text differ from the carried chains "
                    f"({len(set(text_pairs) - carried)} extra, {len(carried - set(text_pairs))} missing)",
                )
            )
        return problems
