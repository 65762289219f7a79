"""Length fitting: fill a prompt with documents up to an exact token budget.

The prompt is ``head + documents + tail`` inside the chat template. Each document is a header piece
(carrying its position) and a body piece; inserted key-value pairs sit after sentence ends inside the
bodies. For regex-pre-tokenised BPE vocabularies (Qwen2.5, cl100k) token counts add up over pieces that
meet at a newline followed by a non-space character, and over insertions made between a sentence end
and the following space, so the total is known from cached per-piece counts without re-tokenising the
context.

Why the sums are exact: tiktoken splits text at special tokens, then pre-tokenises each segment with the
vocabulary's regex, and BPE merges never cross a pre-token boundary. No alternative of the Qwen2 or
cl100k regex matches across a newline followed by a non-space character, or across a space that follows
sentence-final punctuation (punctuation runs stop at whitespace and only letter runs may start with one
non-letter), and NFC cannot compose across either seam. So the prompt's count is the sum of the counts
of its pieces, each of which was measured once on its exact text (documents and headers cached,
instructions, the pairs and a truncated filler measured per sample), and generation does not tokenise
its own output a second time. Every :data:`AUDIT_EVERY`-th sample is still measured whole, as is every
prompt of a tokenizer without that property (``hf:`` ones), which gets up to :data:`MAX_CORRECTIONS`
measured corrections and a typed error if that fails. ``datagen verify`` re-measures every row.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from datagen.prompts import DocTemplate
from datagen.schema import Document
from datagen.tokenizers import Tokenizer
from longmill.errors import LengthBudgetError, LengthFitError, SourceTooSmallError
from longmill.registry import did_you_mean

log = logging.getLogger(__name__)

MAX_CORRECTIONS = 4
#: Generators tokenise the whole final prompt of every this-many-th sample (by index, so the choice is
#: deterministic) to check the exact piece-wise count of additive tokenizers.
AUDIT_EVERY = 64
#: After this many candidate documents in a row that do not fit, stop looking and truncate one.
MAX_MISSES = 24
#: Where a pair can go: after a sentence end (and closing quotes/brackets) that a space follows.
SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]*(?= \S)")


#: Words that end in a period without ending the sentence ("Dr. Smith", "Smith Inc. said").
ABBREVIATIONS = frozenset(
    """
mr mrs ms mx dr prof rev hon sr jr st mt ft gen col lt sgt capt cmdr adm maj cpl pvt gov sen rep pres
fr sra srta mme mlle messrs esq inc ltd co corp bros plc llc dept univ assn est approx ca cf vs etc al
no nos vol vols pp ed eds trans op ch fig figs sec jan feb mar apr jun jul aug sep sept oct nov dec
ave blvd rd hwy sq
""".split()
)
_LAST_WORD = re.compile(r"[\w.'’-]+$")


def ends_sentence(text: str, stop: int, after: int) -> bool:
    """Whether the punctuation at ``stop`` ends a sentence, rather than an initial or abbreviation.

    A period after a single letter ("James P. Comer"), after a dotted abbreviation ("U.S.", "e.g."),
    or after a known abbreviation ("Dr.", "Inc.") is not a sentence end, nor is any period that a
    lowercase word follows ("approx. three").
    """
    if text[stop] != ".":
        return True
    nxt = text[after + 1 : after + 2]
    if nxt.islower():
        return False
    m = _LAST_WORD.search(text, max(0, stop - 24), stop)
    word = m.group(0).lstrip("'’-") if m else ""
    if not word:
        return True
    if "." in word:  # U.S, e.g, Ph.D: a dotted abbreviation
        return False
    if len(word) == 1 and word.isalpha():  # an initial
        return False
    return word.casefold() not in ABBREVIATIONS


def sentence_slots(text: str) -> list[int]:
    """Character offsets inside ``text`` right after a sentence end that is followed by a space.

    Initials and abbreviations are not sentence ends (see :func:`ends_sentence`), so a pair never
    splits "James P. Comer" or "Dr. Smith".
    """
    return [m.end() for m in SENTENCE_END.finditer(text) if ends_sentence(text, m.start(), m.end())]


def inline_pair(pair: str) -> str:
    """How a pair is written after a sentence end: ``' {"k": "v"}.'``."""
    return f" {pair}."


def loose_pair(pair: str) -> str:
    """How a pair is written on its own line between documents (when sentence ends run out)."""
    return f"{pair}.\n\n"


class DocCounter:
    """Per-process cache of document body and header token counts for one tokenizer and template.

    Args:
        tokenizer: the tokenizer that counts.
        template: the document template.
    """

    def __init__(self, tokenizer: Tokenizer, template: DocTemplate):
        self.tokenizer = tokenizer
        self.template = template
        self._body: dict[str, int] = {}
        self._slots: dict[str, list[int]] = {}
        self._text: dict[str, str] = {}
        self._headers: list[int] = [0]  # prefix sums: _headers[n] = tokens of headers 1..n
        self._header_text: list[str] = [""]
        self.framing: dict[tuple[str | None, str], int] = {}  # (system prompt, head) -> tokens of the framing
        self.counted = 0  # documents tokenised (cache misses), for stats and benchmarks

    def rendered_body(self, doc: Document) -> str:
        """The document's body as written into the context (cached, like its count)."""
        b = self._text.get(doc.doc_id)
        if b is None:
            b = self._text[doc.doc_id] = self.template.render_body(doc.title, doc.text)
        return b

    def slots(self, doc: Document) -> list[int]:
        """The document's sentence-end offsets (cached: documents recur across samples)."""
        s = self._slots.get(doc.doc_id)
        if s is None:
            s = self._slots[doc.doc_id] = sentence_slots(doc.text)
        return s

    def bodies(self, docs: Sequence[Document]) -> list[int]:
        missing = [d for d in docs if d.doc_id not in self._body]
        if missing:
            uniq = list({d.doc_id: d for d in missing}.values())
            counts = self.tokenizer.count_batch([self.template.render_body(d.title, d.text) for d in uniq])
            for d, c in zip(uniq, counts, strict=True):
                self._body[d.doc_id] = c
            self.counted += len(uniq)
        return [self._body[d.doc_id] for d in docs]

    def body(self, doc: Document) -> int:
        c = self._body.get(doc.doc_id)
        return c if c is not None else self.bodies([doc])[0]

    def headers(self, n: int) -> int:
        """Tokens of the headers of documents 1..n (independent of which document sits where)."""
        if n >= len(self._headers):
            self.header_sums(n)
        return self._headers[n]

    def header_sums(self, n: int) -> list[int]:
        """The prefix sums of header tokens, extended to at least ``n`` (a list, for hot loops)."""
        while len(self._headers) <= n:
            i = len(self._headers)
            self._header_text.append(self.template.render_header(i))
            self._headers.append(self._headers[-1] + self.tokenizer.count(self._header_text[-1]))
        return self._headers

    def header_texts(self, n: int) -> list[str]:
        """Rendered headers; ``header_texts(n)[i]`` is document i's (1-based; index 0 is unused)."""
        self.header_sums(n)
        return self._header_text


@dataclass
class FitResult:
    """A fitted prompt.

    Attributes:
        messages: the chat messages (system if any, then the user message).
        prompt_tokens: the measured token count of the rendered prompt.
        docs: documents in context order (a truncated filler's id is its source's id plus
            ``#trunc<characters kept>``).
        gold_positions: indices into ``docs`` of the gold documents, in the order given.
        gold_depths: relative token depth (0..1) of each gold document's start within the documents.
        pair_places: for each pair, ``(doc position, char offset)`` or ``(doc position, -1)`` when it
            sits on its own line after that document.
        corrections: measured corrections needed (0 for additive tokenizers).
        doc_offsets: the character offset of each document in the user message, then the end of the
            last one (pairs inside a document are inside its span).
    """

    messages: list[dict[str, str]]
    prompt_tokens: int
    docs: list[Document]
    gold_positions: list[int]
    gold_depths: list[float]
    pair_places: list[tuple[int, int]] = field(default_factory=list)
    corrections: int = 0
    doc_offsets: list[int] = field(default_factory=list)


def parse_placement(placement: str) -> float | None:
    """``uniform`` -> None; ``middle`` -> 0.5; ``depth:0.25`` -> 0.25."""
    if placement == "uniform":
        return None
    if placement == "middle":
        return 0.5
    if placement.startswith("depth:"):
        try:
            d = float(placement[6:])
        except ValueError:
            d = -1.0
        if 0.0 <= d <= 1.0:
            return d
    hint = did_you_mean(
        placement, ["uniform", "middle", "depth:0.5"] if ":" in placement else ["uniform", "middle"]
    )
    raise ValueError(
        f"invalid placement {placement!r}: use uniform, middle or depth:<0..1> (e.g. depth:0.25){hint}"
    )


def lower_bound(length: int, tolerance: float) -> int:
    return math.ceil(length * (1.0 - tolerance))


class _Plan:
    """Mutable state of one fit: the chosen documents and their predicted cost.

    ``extra`` holds the distractors in the order they were chosen; a truncated ``filler`` is always
    the last of them.
    """

    def __init__(self, counter: DocCounter, gold: Sequence[Document]):
        self.counter = counter
        self.gold = list(gold)
        self.extra: list[Document] = []
        self.cost = sum(counter.bodies(self.gold)) + counter.headers(len(self.gold))
        self.filler: Document | None = None
        self.filler_source: Document | None = None

    @property
    def n(self) -> int:
        return len(self.gold) + len(self.extra)

    def add_cost(self, doc: Document) -> int:
        return self.counter.body(doc) + self.counter.headers(self.n + 1) - self.counter.headers(self.n)

    def add(self, doc: Document) -> None:
        self.cost += self.add_cost(doc)
        self.extra.append(doc)

    def pop(self) -> tuple[Document, int]:
        """Remove the last distractor; returns it (the untruncated source for a filler) and its cost."""
        doc = self.extra.pop()
        c = self.add_cost(doc)
        self.cost -= c
        if doc is self.filler:
            doc, self.filler, self.filler_source = self.filler_source or doc, None, None
        return doc, c


def fit_prompt(
    *,
    tokenizer: Tokenizer,
    counter: DocCounter,
    length: int,
    tolerance: float,
    head: str,
    tail: str,
    gold: Sequence[Document],
    candidates: Iterator[Document],
    rng: np.random.Generator,
    placement: str = "uniform",
    pairs: Sequence[str] = (),
    system_prompt: str | None = None,
    between: Sequence[bool] = (),
    measure: bool = True,
    required: Sequence[Document] = (),
) -> FitResult:
    """Fill ``head + documents + tail`` to ``L*(1-tolerance) <= tokens <= L`` of the rendered prompt.

    Args:
        tokenizer: counts tokens and renders the chat template.
        counter: the document count cache for ``tokenizer`` and the document template.
        length: the budget L, in tokens of the rendered prompt with generation prompt.
        tolerance: the allowed shortfall, as a fraction of L.
        head: text before the documents; must end with a newline.
        tail: text after the documents; must start with a non-space character.
        gold: documents that must be in the context.
        candidates: distractor documents, best first (an iterator; it may be long).
        rng: the sample's generator (placement, pair positions).
        placement: ``uniform``, ``middle`` or ``depth:<0..1>`` for the gold documents.
        pairs: strings (``{"k": "v"}``) to insert after sentence ends, in random places.
        system_prompt: a system message; None lets the template add its default one.
        between: per pair, True to put it on its own line between two documents rather than after a
            sentence end (empty: every pair after a sentence end while there are enough of them).
        measure: tokenise the final rendered prompt to check its length. With ``False`` an additive
            tokenizer's count is the exact sum of the measured counts of the prompt's pieces (see the
            module docstring), and the prompt is not tokenised again; non-additive tokenizers always
            measure. Generators measure every :data:`AUDIT_EVERY`-th sample as a check.
        required: distractors that must all be in the context (retrieval's other needles); they come
            first among ``candidates``, and only the budget check counts them here, so that a length too
            small for them fails with the length that holds them.

    Returns:
        A :class:`FitResult` whose ``prompt_tokens`` is the token count of the final rendered prompt.

    Raises:
        LengthBudgetError: the instructions, pairs and gold documents alone exceed ``length``.
        SourceTooSmallError: the candidates ran out before the lower bound was reached.
        LengthFitError: a non-additive tokenizer could not be corrected into range.
    """
    depth = parse_placement(placement)
    lo = lower_bound(length, tolerance)

    def messages_for(content: str) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
        return msgs + [{"role": "user", "content": content}]

    if tokenizer.additive:  # the template and the head are the same for every sample: count them once
        key = (system_prompt, head)
        if key not in counter.framing:
            counter.framing[key] = tokenizer.count_messages(messages_for(head))
        fixed = counter.framing[key] + tokenizer.count(tail)
    else:
        fixed = tokenizer.count_messages(messages_for(head + tail))
    # Inline pairs meet each other at '}. {' seams, which split cleanly: one encode gives their total.
    between = list(between) or [False] * len(pairs)
    if len(between) != len(pairs):
        raise ValueError(f"between has {len(between)} flags for {len(pairs)} pairs")
    inline = [p for p, b in zip(pairs, between, strict=True) if not b]
    pair_total = (
        (
            tokenizer.count("".join(inline_pair(p) for p in inline))
            if tokenizer.additive
            else sum(tokenizer.count_batch([inline_pair(p) for p in inline]))
        )
        if inline
        else 0
    )
    if len(inline) < len(pairs):
        pair_total += sum(
            tokenizer.count_batch([loose_pair(p) for p, b in zip(pairs, between, strict=True) if b])
        )
    budget = length - fixed - pair_total
    plan = _Plan(counter, gold)
    held = _Plan(counter, [*gold, *required]).cost if required else plan.cost
    if held > budget:
        parts = [f"the instructions take {fixed} tokens"]
        parts += [f"the {len(pairs)} chain pairs {pair_total}"] if pairs else []
        parts += [f"the {len(gold)} gold documents {plan.cost}"]
        parts += [f"the {len(required)} other documents it must hold {held - plan.cost}"] if required else []
        raise LengthBudgetError(
            f"length {length} is too small: {', '.join(parts[:-1])} and {parts[-1]}",
            fixed + pair_total + held,
            " or fewer chains/hops" if pairs else "",
        )
    _fill(plan, candidates, budget, lo - fixed - pair_total, tokenizer)
    frame = (head, tail, pairs)

    corrections = 0
    while True:
        content, docs, gold_pos, places, depths, docs_cost, offsets = _layout(
            plan, rng, depth, frame, between
        )
        messages = messages_for(content)
        if tokenizer.additive:
            loose = [
                tokenizer.count(loose_pair(pairs[i])) - tokenizer.count(inline_pair(pairs[i]))
                for i, p in enumerate(places)
                if p[1] < 0 and not between[i]
            ]
            predicted = fixed + pair_total + sum(loose) + docs_cost
            if not measure and corrections == 0:
                # The pieces' counts add up exactly (module docstring), so this is the prompt's length
                # without tokenising it again; the audited samples and `datagen verify` re-measure.
                if lo <= predicted <= length:
                    return FitResult(messages, predicted, docs, gold_pos, depths, list(places), 0, offsets)
            measured = tokenizer.count_messages(messages)  # the one measurement of the final text
            if measured != predicted:
                log.warning(
                    "additive prediction %d != measured %d (%s); the measured count is used",
                    predicted,
                    measured,
                    tokenizer.name,
                )
        else:
            measured = tokenizer.count_messages(messages)  # the one measurement of the final text
        if lo <= measured <= length:
            return FitResult(messages, measured, docs, gold_pos, depths, list(places), corrections, offsets)
        if corrections >= MAX_CORRECTIONS:
            raise LengthFitError(
                f"could not fit the prompt into [{lo}, {length}] tokens with tokenizer {tokenizer.name} after "
                f"{corrections} corrections (last measured {measured}); try a larger --tolerance"
            )
        corrections += 1
        # Move the document set by the measured error; non-additive tokenisers get a margin because
        # their pieces interact at the seams, so aim inside the range rather than at its edge.
        margin = 0 if tokenizer.additive else max(1, (length - lo) // 4)
        target = length - margin if measured > length else lo + margin
        try:
            _correct(plan, target - measured, candidates, tokenizer)
        except _NothingToRemove:
            # Measure what cannot shrink (instructions, pairs, gold documents, the template) to say what works.
            floor = tokenizer.count_messages(messages_for(_layout(plan, rng, depth, frame, between)[0]))
            if floor > length:
                raise LengthBudgetError(
                    f"length {length} is too small with tokenizer {tokenizer.name} and its chat template: with no "
                    f"distractor left the prompt still takes {floor} tokens",
                    floor,
                ) from None
            raise LengthFitError(
                f"could not fit the prompt into [{lo}, {length}] tokens with tokenizer {tokenizer.name}: its counts "
                f"do not add up over the pieces (measured {measured}); try a larger --tolerance"
            ) from None


def _layout(
    plan: _Plan,
    rng: np.random.Generator,
    depth: float | None,
    frame: tuple[str, str, Sequence[str]],
    between: Sequence[bool],
) -> tuple[str, list[Document], list[int], list[tuple[int, int]], list[float], int, list[int]]:
    """The one arrangement of a plan: its documents in order, the pairs placed among them (those flagged
    ``between`` on their own lines), and the rendered user content with its depths, predicted document
    tokens and offsets (see :func:`_render`). The fit and the floor it reports both measure this."""
    head, tail, pairs = frame
    docs, gold_pos = _order(plan, rng, depth)
    places = _place_pairs(docs, len(pairs), rng, plan.counter, between)
    content, depths, docs_cost, offsets = _render(head, tail, docs, gold_pos, pairs, places, plan.counter)
    return content, docs, gold_pos, places, depths, docs_cost, offsets


def _fill(plan: _Plan, candidates: Iterator[Document], budget: int, low: int, tokenizer: Tokenizer) -> None:
    """Add whole candidates while they fit; the first that does not is truncated to reach ``budget``."""
    misses = 0
    block: list[Document] = []
    counts: list[int] = []
    k = 0
    while True:
        if k == len(block):
            # Candidates are drawn 64 at a time (how far the iterator advances is part of the sample's
            # random stream), but counted 16 at a time as the fill reaches them: a fill stops part-way
            # through its last block, and counting the rest would tokenise documents that are not used.
            block, counts, k = _take(candidates, 64), [], 0
            if not block:
                break
        if k == len(counts):
            counts += plan.counter.bodies(block[k : k + 16])
        doc, body = block[k], counts[k]
        k += 1
        hdr = plan.counter.header_sums(plan.n + 1)
        cost = body + hdr[plan.n + 1] - hdr[plan.n]
        if plan.cost + cost <= budget:
            plan.extra.append(doc)
            plan.cost += cost
            if plan.cost == budget:
                return
            continue
        if plan.cost >= low:
            return
        _add_filler(plan, doc, budget, tokenizer)
        # The gap may be too small for even a few words of a new document: then give back the last whole
        # distractor and cut this (longer) one to fill both its place and the gap.
        if plan.filler is None and plan.extra:
            plan.pop()
            _add_filler(plan, doc, budget, tokenizer)
        if plan.cost >= low:
            return
        if plan.filler is not None:  # truncation lost too much at a word boundary: try another one
            plan.pop()
        misses += 1
        if misses >= MAX_MISSES:
            # Another triplet (other gold documents) may well fit, so this is a budget error for this one.
            raise LengthBudgetError(
                f"could not fill the last {low - plan.cost} tokens of the budget within the tolerance after "
                f"{misses} candidate documents; a larger --tolerance helps"
            )
    raise SourceTooSmallError(
        f"the source ran out of distractor documents: the context reached {plan.cost} of the {low} document "
        f"tokens it needs, from {plan.n} documents; use a larger source (more records or files, or "
        f"--source synthetic with a larger num_triplets) or a smaller --length"
    )


def _add_filler(plan: _Plan, doc: Document, budget: int, tokenizer: Tokenizer) -> None:
    """Append ``doc`` truncated at a word end so that the plan's cost lands at or just under ``budget``."""
    counter = plan.counter
    header = counter.headers(plan.n + 1) - counter.headers(plan.n)
    room = budget - plan.cost - header
    frame = tokenizer.count(counter.template.render_body(doc.title, ""))
    if room - frame < 8:  # not even a few words fit
        return
    text = doc.text
    for _ in range(4):
        text = tokenizer.truncate(text, room - frame)
        if not text:
            return
        cost = tokenizer.count(counter.template.render_body(doc.title, text))
        if cost <= room:
            # The id names the cut: caches are keyed by id, and other samples cut the same document elsewhere.
            filler = Document(
                doc_id=f"{doc.doc_id.split('#trunc')[0]}#trunc{len(text)}", title=doc.title, text=text
            )
            counter._body[filler.doc_id] = cost
            plan.add(filler)
            plan.filler, plan.filler_source = filler, doc
            return
        frame += cost - room  # the seam cost more than expected: cut that much more


class _NothingToRemove(Exception):
    """The prompt is still over budget with every distractor removed (``fit_prompt`` says what length works)."""


def _correct(plan: _Plan, delta: int, candidates: Iterator[Document], tokenizer: Tokenizer) -> None:
    """Change the documents' cost by about ``delta`` tokens (negative: shrink)."""
    if delta < 0:
        need = -delta
        while need > 0:
            if not plan.extra:  # the caller turns this into the length that works
                raise _NothingToRemove
            doc, c = plan.pop()
            if c > need:  # put back a shorter version of what was removed
                _add_filler(plan, doc, plan.cost + c - need, tokenizer)
            need -= c
        return
    target = plan.cost + delta
    refill: list[Document] = []
    if plan.filler is not None:  # grow the filler back first
        doc, _ = plan.pop()
        refill.append(doc)
    _fill(plan, itertools.chain(refill, candidates), target, target, tokenizer)


def _take(it: Iterator[Document], n: int) -> list[Document]:
    return list(itertools.islice(it, n))


def _order(plan: _Plan, rng: np.random.Generator, depth: float | None) -> tuple[list[Document], list[int]]:
    """Shuffle the distractors and place the gold documents; returns (docs, gold positions)."""
    distractors = [plan.extra[i] for i in rng.permutation(len(plan.extra))]
    n_gold = len(plan.gold)
    gold_order = [int(i) for i in rng.permutation(n_gold)]
    if depth is None:
        # Uniform: the gold documents take uniformly random positions among all documents.
        total = len(distractors) + n_gold
        slots = sorted(int(s) for s in rng.choice(total, size=n_gold, replace=False))
        docs: list[Document] = []
        pos: dict[int, int] = {}
        it = iter(distractors)
        gi = 0
        for p in range(total):
            if gi < n_gold and p == slots[gi]:
                pos[gold_order[gi]] = p
                docs.append(plan.gold[gold_order[gi]])
                gi += 1
            else:
                docs.append(next(it))
        return docs, [pos[g] for g in range(n_gold)]
    # At a depth: the gold block sits at that fraction of the distractors.
    start = int(round(depth * len(distractors)))
    docs = distractors[:start] + [plan.gold[g] for g in gold_order] + distractors[start:]
    pos = {g: start + k for k, g in enumerate(gold_order)}
    return docs, [pos[g] for g in range(n_gold)]


def _place_pairs(
    docs: Sequence[Document],
    n_pairs: int,
    rng: np.random.Generator,
    counter: DocCounter,
    between: Sequence[bool] = (),
) -> list[tuple[int, int]]:
    """A place for each pair: distinct random sentence ends, or own lines when sentence ends run out.

    Pairs flagged in ``between`` go on their own line after a random document instead.
    """
    if any(between):
        inner = [i for i, b in enumerate(between) if not b]
        outer = [i for i, b in enumerate(between) if b]
        out: list[tuple[int, int]] = [(0, -1)] * n_pairs
        for i, place in zip(inner, _place_pairs(docs, len(inner), rng, counter), strict=True):
            out[i] = place
        for i, d in zip(outer, rng.integers(0, len(docs), size=len(outer)), strict=True):
            out[i] = (int(d), -1)
        return out
    if n_pairs == 0:
        return []
    per_doc = [counter.slots(d) for d in docs]
    ends = np.cumsum([len(s) for s in per_doc])
    total = int(ends[-1]) if len(ends) else 0
    if total >= n_pairs:
        # Draw slot numbers over all documents, then find each one's document: no list of every slot.
        picks = rng.choice(total, size=n_pairs, replace=False)
        where = np.searchsorted(ends, picks, side="right")
        return [
            (int(i), per_doc[i][int(k - (ends[i - 1] if i else 0))])
            for k, i in zip(picks, where, strict=True)
        ]
    slots = [(i, off) for i, s in enumerate(per_doc) for off in s]
    places = slots + [(int(i), -1) for i in rng.integers(0, len(docs), size=n_pairs - len(slots))]
    return [places[int(k)] for k in rng.permutation(n_pairs)]


def _render(
    head: str,
    tail: str,
    docs: Sequence[Document],
    gold_pos: Sequence[int],
    pairs: Sequence[str],
    places: Sequence[tuple[int, int]],
    counter: DocCounter,
) -> tuple[str, list[float], int, list[int]]:
    """The user content, the gold depths, the predicted tokens of the documents (pairs excluded), and
    the character offset of each document (then of the end of the last one) in the content."""
    template = counter.template
    inline: dict[int, list[tuple[int, str]]] = {}
    loose: dict[int, list[str]] = {}
    for (i, off), pair in zip(places, pairs, strict=True):
        if off < 0:
            loose.setdefault(i, []).append(loose_pair(pair))
        else:
            inline.setdefault(i, []).append((off, inline_pair(pair)))
    parts = [head]
    offsets: list[int] = []
    pos = len(head)
    headers = counter.header_texts(len(docs))
    for i, d in enumerate(docs):
        offsets.append(pos)
        start = len(parts)
        parts.append(headers[i + 1])
        if i in inline:
            text = d.text
            for off, s in sorted(inline[i], reverse=True):
                text = text[:off] + s + text[off:]
            parts.append(template.render_body(d.title, text))
        else:
            parts.append(counter.rendered_body(d))
        if i in loose:
            parts.extend(loose[i])
        pos += sum(len(x) for x in parts[start:])
    offsets.append(pos)
    parts.append(tail)
    # Token depth of each gold document: header and body costs of the documents before it.
    hdr = counter.header_sums(len(docs))
    bodies = counter.bodies(docs)
    starts = list(itertools.accumulate(bodies, initial=0))
    total = max(starts[-1] + hdr[len(docs)], 1)
    depths = [round((starts[p] + hdr[p]) / total, 4) for p in gold_pos]
    return "".join(parts), depths, starts[-1] + hdr[len(docs)], offsets
