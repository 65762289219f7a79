"""The generator interface: sample ``i`` of a run is a pure function of (config, corpus, i)."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from datagen.corpus import Corpus
from datagen.generators.fit import AUDIT_EVERY, DocCounter, FitResult, fit_prompt, parse_placement
from datagen.prompts import DOC_TEMPLATES, longqa_pieces
from datagen.schema import Sample, Triplet
from datagen.tokenizers import DEFAULT_TOKENIZER, get_tokenizer
from longmill.errors import LengthBudgetError, LengthFitError, LongmillError, SourceTooSmallError
from longmill.lengths import parse_length
from longmill.registry import Registry
from longmill.rng import sample_rng, stable_id

log = logging.getLogger(__name__)

#: How many triplets sample ``i`` tries before it is skipped (a triplet whose gold documents do not fit
#: the budget is passed over for the next one).
MAX_TRIPLET_TRIES = 8
_STRIDE = 104_729  # a large prime: the k-th fallback triplet of sample i is order[(i + k*_STRIDE) % n]


class SkipSample(LongmillError):
    """Sample ``i`` could not be made; ``kind`` is counted in stats.json.

    ``least`` is, among the triplets tried, the budget error naming the smallest length.
    """

    def __init__(self, kind: str, message: str, least: LengthBudgetError | None = None):
        self.kind, self.least = kind, least
        super().__init__(message)


@dataclass
class GenConfig:
    """Options shared by every generator (the same names in params.yaml and on the CLI).

    Args:
        length: the token budget L of the rendered prompt.
        seed: the run seed; sample ``i`` draws from a generator seeded by (seed, generator, i).
        tokenizer: ``qwen2.5``, ``cl100k`` or ``hf:<path or hub id>``.
        tolerance: samples land in ``[L*(1-tolerance), L]``.
        placement: where gold documents go: ``uniform``, ``middle`` or ``depth:<0..1>``.
        doc_template: how documents are written: ``default``, ``passage`` or ``plain``.
        system_prompt: a system message; by default none, so the chat template adds its own.
        hard_distractors: put the record's own distractors (and for KeyChain the decoy questions' gold
            documents) in first, before random documents of the source.
    """

    length: int = field(metadata={"parse": parse_length})
    seed: int = 0
    tokenizer: str = DEFAULT_TOKENIZER
    tolerance: float = 0.01
    placement: str = "uniform"
    doc_template: str = "default"
    system_prompt: str | None = None
    hard_distractors: bool = True

    def __post_init__(self) -> None:
        if self.length <= 0:
            raise LongmillError(f"length must be positive, got {self.length}")
        if not 0.0 < self.tolerance < 0.5:
            raise LongmillError(f"tolerance must be in (0, 0.5), got {self.tolerance}; the default is 0.01")
        try:
            parse_placement(self.placement)
        except ValueError as e:
            raise LongmillError(str(e)) from None
        DOC_TEMPLATES.get(self.doc_template)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def at_length(self, length: int) -> GenConfig:
        """This config at another length, with the options that follow from the length (those listed in
        ``derived``, e.g. KeyChain's default chain count) derived again, as a run at that length would."""
        return dataclasses.replace(self, length=length, **dict.fromkeys(getattr(self, "derived", ()), None))

    def check_given(self, given: set[str]) -> None:
        """Refuse, with the reason, options the user gave explicitly that this config cannot honour.

        ``given`` names the fields typed on the command line (click's parameter source, not a comparison
        with the default: a typed value equal to the default counts). Nothing is refused here.

        Raises:
            LongmillError: an explicit option that the other options override.
        """


class Generator:
    """Base class: picks the triplet for sample ``i``, calls :meth:`build`, handles skips.

    Args:
        config: the generator's config dataclass.
        corpus: the triplets and pools to draw from.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    config_cls: ClassVar[type[GenConfig]] = GenConfig
    ability: ClassVar[str] = "long_context_qa"
    #: the ``task`` column (task family, for task-balanced sampling and per-task metrics); None: the name
    task: ClassVar[str | None] = None

    def __init__(self, config: GenConfig, corpus: Corpus):
        self.config = config
        self.corpus = corpus
        if len(corpus) == 0:
            raise SourceTooSmallError(
                f"source '{corpus.name}' produced no triplets; check --input and the skip counts"
            )
        self.tokenizer = get_tokenizer(config.tokenizer)
        self.template = DOC_TEMPLATES.get(config.doc_template)
        self.counter = DocCounter(self.tokenizer, self.template)
        self._measure = True  # set per sample by sample(); see fit.AUDIT_EVERY
        self.order = corpus.order(sample_rng(config.seed, f"{self.name}/order", 0))
        self.params = json.dumps(
            {"generator": self.name, "version": self.version, **json.loads(config.to_json())},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )

    # -- hooks -------------------------------------------------------------------------------------
    @classmethod
    def check_row(cls, row: dict) -> list[tuple[str, str]]:
        """Checks of this generator's own structure: (check name, message) per violation; [] when fine."""
        return []

    @classmethod
    def documents(cls, row: dict) -> list[str]:
        """The sample's documents as a reader sees them, cut from the user message at the carried
        ``doc_offsets``; generators that insert other text between them (KeyChain's pairs) remove it here.
        Curriculum's difficulty features (BM25 rank of the gold documents) read documents through this hook."""
        user = user_message(row)
        off = list(row["doc_offsets"] or [])
        return [user[a:b] for a, b in zip(off, off[1:], strict=False)]

    @classmethod
    def features(cls, row: dict) -> dict[str, float]:
        """Difficulty features of this generator's own structure, added to curriculum's generic ones."""
        return {}

    def preflight(self) -> None:
        """Fail fast, before any work, on options the source cannot satisfy.

        Making sample 0 once checks the budget against real triplets: when not even one triplet fits,
        the run fails here instead of skipping every sample, with the smallest length at which sample 0
        is made (see :meth:`minimum_length`).
        """
        try:
            self.sample(0, Counter())
        except SkipSample as e:
            if e.least is None or e.least.need is None:
                raise LengthBudgetError(str(e).split("last error: ", 1)[-1]) from None
            need = self.minimum_length(e.least.need)
            if need is None:
                raise LengthBudgetError(
                    f"{e.least.reason}; no length from {e.least.need} up that was tried made sample 0 either: "
                    "use a much larger --length"
                ) from None
            raise e.least.with_need(need) from None

    def minimum_length(self, start: int, tries: int = 40) -> int | None:
        """The smallest length from ``start`` up at which sample 0 is made, found by making it.

        The fitter's count (instructions, pairs and gold documents) is where the search starts, not the
        answer: the documents a sample must also hold (retrieval's other needles), pairs that find no
        sentence end in the few documents left at that length, chain counts that grow with the length
        (``--preset loongrl``) and chat templates that do not add up can each need more. Each step makes
        sample 0 with the config at that length (:meth:`GenConfig.at_length`), the sample a run at that
        length makes first, and moves to the larger of the next length and the one its failure names.

        Returns:
            The length, or None when ``tries`` lengths did not make it.
        """
        length = start
        for _ in range(tries):
            gen = type(self)(self.config.at_length(length), self.corpus)
            try:
                gen.sample(0, Counter())
                return length
            except SkipSample as e:
                need = e.least.need if e.least is not None and e.least.need is not None else 0
                length = max(length + 1, need)
            except LengthFitError:  # at the edge of the tolerance window: one token more
                length += 1
        log.warning("sample 0 was not made at any of %d lengths from %d up", tries, start)
        return None

    def build(self, index: int, triplet: Triplet, rng: np.random.Generator) -> Sample:
        raise NotImplementedError

    def fit(
        self,
        triplet: Triplet | None,
        rng: np.random.Generator,
        head: str,
        tail: str,
        priority: list[Any],
        pairs: list[str] | tuple[str, ...] = (),
        between: list[bool] | tuple[bool, ...] = (),
        *,
        gold: list[Any] | None = None,
        placement: str | None = None,
        exclude_titles: bool = True,
        required: list[Any] | tuple[Any, ...] = (),
    ) -> FitResult:
        """Fill ``head + documents + tail`` for ``triplet`` to the configured length (see :func:`fit_prompt`).

        Args:
            triplet: supplies the gold documents (excluded, with their titles, from the distractors); None
                when ``gold`` is given.
            rng: the sample's generator.
            head: text before the documents.
            tail: text after them.
            priority: distractors to use before random documents of the source.
            pairs: key-value pairs to insert after sentence ends.
            between: per pair, True to put it on its own line between documents instead.
            gold: the documents to place instead of ``triplet.gold_docs`` (KeyChain's LoongRL core block,
                retrieval needles).
            placement: where they go, instead of the configured placement.
            exclude_titles: also keep documents sharing a gold title out of the distractors.
            required: documents of ``priority`` that must all be in the context (retrieval's other needles):
                a length too small for them fails the budget check, with the length that holds them.
        """
        c = self.config
        gold = list(triplet.gold_docs) if gold is None else gold
        gold_ids = {d.doc_id for d in gold}
        gold_titles = {d.title for d in gold} if exclude_titles else set()
        return fit_prompt(
            tokenizer=self.tokenizer,
            counter=self.counter,
            length=c.length,
            tolerance=c.tolerance,
            head=head,
            tail=tail,
            gold=gold,
            candidates=self.corpus.distractors(rng, gold_ids, gold_titles, priority),
            rng=rng,
            placement=c.placement if placement is None else placement,
            pairs=pairs,
            system_prompt=c.system_prompt,
            between=between,
            measure=self._measure,
            required=required,
        )

    # -- driver ------------------------------------------------------------------------------------
    def triplet_for(self, index: int, attempt: int = 0) -> Triplet:
        n = len(self.corpus)
        return self.corpus.triplets[int(self.order[(index + attempt * _STRIDE) % n])]

    def sample(self, index: int, skips: Counter[str]) -> Sample:
        """Sample ``index``; triplets that cannot fit are passed over and counted in ``skips``.

        Raises:
            SkipSample: no triplet fitted after :data:`MAX_TRIPLET_TRIES` attempts.
        """
        rng = sample_rng(self.config.seed, self.name, index)
        self._measure = index % AUDIT_EVERY == 0  # by index: which samples are audited is deterministic
        last: Exception | None = None
        least: LengthBudgetError | None = None
        for attempt in range(min(MAX_TRIPLET_TRIES, len(self.corpus))):
            triplet = self.triplet_for(index, attempt)
            try:
                return self.build(index, triplet, rng)
            except LengthBudgetError as e:
                skips["gold_exceeds_budget"] += 1
                last = e
                if e.need is not None and (least is None or least.need is None or e.need < least.need):
                    least = e
                log.debug("sample %d: triplet %s does not fit: %s", index, triplet.id, e)
        raise SkipSample(
            "no_triplet_fits", f"sample {index}: no triplet fits the budget; last error: {last}", least
        )

    def make_sample(
        self,
        index: int,
        triplet: Triplet,
        fit: FitResult,
        *,
        num_chains: int = 0,
        chain_hops: int = 0,
        chain_head: str | None = None,
        chains: list[Any] | None = None,
        task_data: dict[str, Any] | None = None,
    ) -> Sample:
        """Assemble a :class:`Sample` from a triplet and a fitted prompt.

        ``task_data`` is what the generator's :meth:`check_row` needs to re-derive the answer; it is
        stored as canonical JSON in ``extra_info.task_data``.
        """
        c = self.config
        task = self.task or self.name
        task_json = (
            json.dumps(task_data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            if task_data is not None
            else None
        )
        uid = stable_id(triplet.id, self.name, self.params, index)
        data_source = f"{self.name}/{triplet.source}"
        answers = list(triplet.answers)
        return Sample(
            uid=uid,
            data_source=data_source,
            ability=self.ability,
            prompt=fit.messages,
            question=triplet.question,
            answers=answers,
            reward_model={"style": "rule", "ground_truth": answers},
            extra_info={
                "split": triplet.split,
                "index": index,
                "uid": uid,
                "source_id": triplet.id,
                "data_source": data_source,
                "question": triplet.question,
                "answers": answers,
                "length_target": c.length,
                "task": task,
                "task_data": task_json,
            },
            length_target=c.length,
            prompt_tokens=fit.prompt_tokens,
            tokenizer=self.tokenizer.name,
            chat_template=self.tokenizer.chat_template,
            num_docs=len(fit.docs),
            gold_doc_depths=fit.gold_depths,
            num_chains=num_chains,
            chain_hops=chain_hops,
            hops=triplet.hops,
            difficulty=None,
            difficulty_source=None,
            seed=c.seed,
            generator=self.name,
            generator_version=self.version,
            source=triplet.source,
            source_id=triplet.id,
            split=triplet.split,
            question_type=triplet.question_type,
            gold_docs=list(triplet.gold_docs),
            supporting_facts=[f.text for f in triplet.supporting_facts],
            doc_ids=[d.doc_id for d in fit.docs],
            doc_offsets=fit.doc_offsets,
            chain_head=chain_head,
            chains=list(chains or []),
            params=self.params,
            task=task,
            fact_keys=list(triplet.fact_keys) if triplet.fact_keys is not None else None,
        )


def user_message(row: dict) -> str:
    """The content of the last user message of a sample row ("" when it has none)."""
    return next((m["content"] for m in reversed(list(row["prompt"])) if m["role"] == "user"), "")


def _difference(got: str, want: str, width: int = 40) -> str:
    """Where ``got`` first departs from ``want``, as a short quote of each."""
    i = next((k for k, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
    start = max(0, i - 10)
    return f"{got[start : i + width]!r} where {want[start : i + width]!r} was expected"


def longqa_question_problems(check: str, row: dict, question: str) -> list[tuple[str, str]]:
    """Does ``row`` ask ``question``, the question re-derived from its structured data?

    The question column and the long-QA prompt (instructions, the text, then the question, written by
    :func:`datagen.prompts.longqa_pieces`, the function that wrote the prompt) must both ask it, so a question
    edited in either place, with the answer kept, is caught.

    Args:
        check: the name the violations are reported under (the generator's).
        row: a sample row.
        question: the question its ``extra_info.task_data`` describes.
    """
    problems = []
    if row["question"] != question:
        problems.append(
            (
                check,
                "the question column is not the question that task_data describes: "
                + _difference(str(row["question"]), question),
            )
        )
    user = user_message(row)
    head, tail = longqa_pieces(question)
    if not user.startswith(head):
        problems.append((check, "the user message does not start with the long-QA instructions"))
    if not user.endswith(tail):
        at = user.rfind(tail[: tail.index(question)])  # where the text ends and the question begins
        got = user[at:] if at >= 0 else user[-len(tail) :]
        problems.append(
            (
                check,
                "the prompt does not ask the question that task_data describes: " + _difference(got, tail),
            )
        )
    return problems


GENERATORS: Registry[type[Generator]] = Registry("generator")
