"""Length fitting at several lengths and tokenizers, measured independently."""

from __future__ import annotations

import math
import unicodedata
from collections import Counter

import pytest

from datagen.corpus import Corpus
from datagen.generators import GENERATORS
from datagen.generators.base import GenConfig
from datagen.generators.keychain import KeyChainConfig, default_num_chains
from datagen.tokenizers import get_tokenizer
from longmill.errors import LengthBudgetError, SourceTooSmallError

from .conftest import toy_triplets


def independent_count(tokenizer_name: str, messages) -> int:
    """Render and encode from scratch, without the library's count helpers."""
    tok = get_tokenizer(tokenizer_name)
    return len(tok.encoding.encode(tok.render(messages), allowed_special="all"))


def make(generator: str, corpus: Corpus, **kw):
    cfg = GENERATORS.get(generator).config_cls(**kw)
    return GENERATORS.get(generator)(cfg, corpus)


@pytest.mark.parametrize("tokenizer", ["qwen2.5", "cl100k"])
@pytest.mark.parametrize("length", [2000, 8192, 20_000, 60_000])
@pytest.mark.parametrize("generator", ["keychain", "longqa"])
def test_every_sample_lands_in_range(toy_corpus, generator, length, tokenizer):
    gen = make(
        generator,
        toy_corpus,
        length=length,
        seed=7,
        tokenizer=tokenizer,
        **({"num_chains": 2, "hops": 2} if generator == "keychain" and length <= 2000 else {}),
    )
    lo = math.ceil(length * 0.99)
    for i in range(3):
        s = gen.sample(i, Counter())
        n = independent_count(tokenizer, s.prompt)
        assert n == s.prompt_tokens
        assert lo <= n <= length


def test_tight_tolerance(toy_corpus):
    gen = make("keychain", toy_corpus, length=30_000, tolerance=0.0005)
    for i in range(3):
        s = gen.sample(i, Counter())
        assert 30_000 - 15 <= s.prompt_tokens <= 30_000


def test_final_text_is_measured_once_and_documents_counted_once(toy_corpus, monkeypatch):
    gen = make("keychain", toy_corpus, length=20_000, seed=1)
    calls = []
    real = gen.tokenizer.count_messages
    monkeypatch.setattr(gen.tokenizer, "count_messages", lambda m, **k: calls.append(1) or real(m, **k))
    gen.sample(0, Counter())
    # One count of the small instructions-only prompt, one of the final prompt; no search loop.
    assert len(calls) == 2
    counted = gen.counter.counted
    assert counted <= len(toy_corpus.docs)
    gen.sample(0, Counter())
    assert gen.counter.counted == counted  # the same documents are not tokenised again


def test_gold_placement_depths(toy_corpus):
    for placement, lo, hi in (("depth:0", 0.0, 0.05), ("depth:1", 0.9, 1.0), ("middle", 0.4, 0.6)):
        gen = make("longqa", toy_corpus, length=20_000, placement=placement)
        s = gen.sample(0, Counter())
        assert all(lo <= d <= hi for d in s.gold_doc_depths), (placement, s.gold_doc_depths)
    depths = [
        d
        for i in range(30)
        for d in make("longqa", toy_corpus, length=8000).sample(i, Counter()).gold_doc_depths
    ]
    assert min(depths) < 0.25 and max(depths) > 0.75  # uniform spreads them


def test_length_too_small_for_gold_and_chains_says_what_to_do(toy_corpus):
    gen = make("keychain", toy_corpus, length=600, num_chains=8, hops=4)
    skips = Counter()
    with pytest.raises(Exception) as e:
        gen.sample(0, skips)
    assert skips["gold_exceeds_budget"] >= 1
    assert "use a larger --length" in str(e.value)
    # The typed error from the fitter itself:
    import numpy as np

    from datagen.generators.fit import DocCounter, fit_prompt

    with pytest.raises(LengthBudgetError, match=r"at least \d+"):
        fit_prompt(
            tokenizer=gen.tokenizer,
            counter=DocCounter(gen.tokenizer, gen.template),
            length=100,
            tolerance=0.01,
            head="Read.\n",
            tail="Answer.",
            gold=toy_corpus.triplets[0].gold_docs,
            candidates=iter(()),
            rng=np.random.default_rng(0),
        )


def test_source_too_small_to_fill(toy_corpus):
    small = Corpus(toy_triplets(n=3, docs_per_triplet=2), name="tiny")
    gen = make("longqa", small, length=60_000)
    with pytest.raises(SourceTooSmallError, match="ran out of distractor documents"):
        gen.sample(0, Counter())


def test_keychain_needs_enough_decoy_questions():
    small = Corpus(toy_triplets(n=3), name="tiny")
    gen = make("keychain", small, length=20_000, num_chains=5)
    with pytest.raises(SourceTooSmallError, match="decoy questions"):
        gen.preflight()


def test_default_chain_count_scales_with_length():
    assert [default_num_chains(n) for n in (4000, 20_000, 40_000, 60_000, 128_000)] == [2, 3, 7, 10, 16]
    assert KeyChainConfig(length=60_000).num_chains == 10


@pytest.mark.parametrize(
    "bad",
    [
        dict(tolerance=0.0),
        dict(tolerance=0.7),
        dict(placement="top"),
        dict(placement="depth:1.5"),
        dict(doc_template="fancy"),
    ],
)
def test_bad_options_are_rejected(bad):
    with pytest.raises(Exception, match=r"tolerance|placement|document template"):
        GenConfig(length=1000, **bad)


def test_truncated_fillers_never_reuse_another_samples_cut():
    """Many samples from a small pool cut the same documents at different places; every cut is counted
    and rendered as itself (a cache keyed by a shared id once gave stale counts and text)."""
    corpus = Corpus(toy_triplets(n=40, docs_per_triplet=4), name="small")
    gen = make("longqa", corpus, length=3000, seed=1)
    by_id = {d.doc_id: d for d in corpus.docs}
    for i in range(40):
        s = gen.sample(i, Counter())
        assert independent_count("qwen2.5", s.prompt) == s.prompt_tokens
        for j, doc_id in enumerate(s.doc_ids):
            if "#trunc" in doc_id:
                base, kept = doc_id.split("#trunc")
                span = s.user_text[s.doc_offsets[j] : s.doc_offsets[j + 1]]
                assert by_id[base].text[: int(kept)] in span


@pytest.mark.parametrize("length", [400, 600, 900])
def test_short_budgets_fill_the_last_few_tokens(length):
    """At short lengths the 1% tolerance is a handful of tokens: a whole distractor is swapped for a cut
    of a longer one rather than failing (or blaming the source)."""
    corpus = Corpus(toy_triplets(n=60, docs_per_triplet=4, sentences=3), name="short")
    gen = make("longqa", corpus, length=length, seed=3)
    for i in range(24):
        s = gen.sample(i, Counter())
        assert math.ceil(length * 0.99) <= independent_count("qwen2.5", s.prompt) <= length


def test_an_hf_tokenizer_by_path_counts_like_qwen25_and_fits(toy_corpus, tiny_qwen2):
    """`hf:<folder>` uses that tokenizer and its own chat template (here the Qwen2.5 vocabulary converted to
    a Hugging Face tokenizer), through the non-additive code path that re-measures."""
    from datagen.tokenizers import get_tokenizer

    hf, ref = get_tokenizer(f"hf:{tiny_qwen2}"), get_tokenizer("qwen2.5")
    msgs = [{"role": "user", "content": 'Velora Quint was born in Tassbury. {"0123456789abcdef": "Who?"}.'}]
    assert hf.render(msgs) == ref.render(msgs) and hf.count_messages(msgs) == ref.count_messages(msgs)
    gen = make("keychain", toy_corpus, length=4000, tokenizer=f"hf:{tiny_qwen2}", num_chains=2)
    for i in range(3):
        s = gen.sample(i, Counter())
        assert 3960 <= s.prompt_tokens <= 4000 and s.tokenizer == f"hf:{tiny_qwen2}"
        assert s.prompt_tokens == ref.count_messages(s.prompt)


TRICKY_SENTENCES = [
    "The U.S. Army moved 1.5 million tons in 1944.",
    'He said "No." Then he left.',
    "It was (mostly) true.)",
    "Who won? Nobody knows!",
    "Café Zoë opened in Montréal.",
    "Cafe\u0301 owners met.",
    "Ελληνικά κείμενα εδώ.",
    "東京は日本の首都です. 大阪も大きい.",
    "Ёжик в тумане.",
    "It's 'quoted.' 's odd.",
    "Price: $3.50. 1990 came.",
    "Emoji 🎉 party. Done.",
    "Arabic نص عربي. End.",
    "x=[1, 2]. y={3}.",
    "Tabs\u00a0and nbsp here. Ok.",
    "Ends with ellipsis... Next one.",
    "Dr. Smith's cat. 99 lives.",
    "Mixed’ quotes’. “Curly.” Fine.",
]


def tricky_triplets(n: int = 60, seed: int = 0) -> list:
    """Documents full of what could break piece-wise counting: abbreviations, quotes and brackets after
    sentence ends, numbers, non-Latin scripts, combining marks (not NFC), emoji, odd titles."""
    import numpy as np

    from datagen.schema import Document, SupportingFact, Triplet

    rng = np.random.default_rng(seed)

    def para() -> str:
        return " ".join(TRICKY_SENTENCES[int(k)] for k in rng.integers(0, len(TRICKY_SENTENCES), size=6))

    titles = ["(Film) Title", "\u0301Odd mark", "'s Title", "123 Numbers", "Ünïcode", "[Bracket]", "Émile"]
    out = []
    for i in range(n):
        gold = [Document.make(f"{titles[(i + j) % len(titles)]} {i}", para()) for j in range(2)]
        dis = [Document.make(f"{titles[(i + j + 3) % len(titles)]} d{i}-{j}", para()) for j in range(6)]
        out.append(
            Triplet(
                id=f"tricky:{i}",
                source="tricky",
                split="dev",
                question=f'Is "{i}" \\ café\u0301 ok? 🎉',
                answers=[f"a{i}"],
                hops=2,
                question_type="bridge",
                gold_docs=gold,
                supporting_facts=[SupportingFact(g.title, 0, g.text) for g in gold],
                distractor_docs=dis,
            )
        )
    return out


@pytest.mark.parametrize("doc_template", ["default", "passage", "plain"])
@pytest.mark.parametrize("tokenizer", ["qwen2.5", "cl100k"])
def test_piecewise_count_is_exact_without_measuring(doc_template, tokenizer):
    """Unaudited samples are not tokenised whole: their count is the sum of their pieces' measured counts,
    which must equal an independent count of the rendered prompt even on adversarial text."""
    from datagen.generators.fit import AUDIT_EVERY

    corpus = Corpus(tricky_triplets(), name="tricky")
    for generator in ("keychain", "longqa"):
        gen = make(
            generator,
            corpus,
            length=3000,
            seed=5,
            tokenizer=tokenizer,
            doc_template=doc_template,
            **({"num_chains": 4, "hops": 3} if generator == "keychain" else {}),
        )
        for i in range(1, 16):
            assert i % AUDIT_EVERY
            s = gen.sample(i, Counter())
            # Qwen2's tokenizer NFC-normalises first (as its Hugging Face normaliser does); cl100k does not.
            tok = get_tokenizer(tokenizer)
            text = tok.render(s.prompt)
            text = unicodedata.normalize("NFC", text) if tokenizer == "qwen2.5" else text
            assert s.prompt_tokens == len(tok.encoding.encode(text, allowed_special="all")), (generator, i)
            assert 2970 <= s.prompt_tokens <= 3000


def test_unaudited_samples_skip_the_final_tokenisation(toy_corpus, monkeypatch):
    """The whole prompt is tokenised only for audited samples (every AUDIT_EVERY-th index)."""
    from datagen.generators.fit import AUDIT_EVERY

    gen = make("keychain", toy_corpus, length=8000, seed=2)
    gen.sample(1, Counter())  # warm the caches
    calls = []
    real = gen.tokenizer.count_messages
    monkeypatch.setattr(gen.tokenizer, "count_messages", lambda m, **kw: calls.append(1) or real(m, **kw))
    gen.sample(1, Counter())
    assert calls == []
    gen.sample(AUDIT_EVERY, Counter())
    assert calls == [1]


class _SeamTokenizer:
    """Qwen2.5's counts, except that a pair on its own line costs 2 tokens more in the whole prompt than
    counted alone (as with SmolLM2-135M's tokenizer through ``hf:``, where it costs 2 more than a pair after a
    sentence end; with Qwen2.5 and cl100k both cost the same). Not additive: the fitter measures the whole."""

    additive = False

    def __init__(self):
        self._tok = get_tokenizer("qwen2.5")
        self.name = "seam-test"

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def count_messages(self, messages, add_generation_prompt=True):
        loose = sum(m["content"].count("}.\n\n") for m in messages)
        return self._tok.count_messages(messages, add_generation_prompt) + 2 * loose


def test_the_floor_of_a_prompt_with_pairs_between_documents_is_measured_as_written(toy_corpus):
    """With no distractor left to remove, the fitter measures what cannot shrink to name the length that
    works. That prompt must be laid out as the sample would be, pairs flagged ``between`` on their own lines:
    laid out with them after sentence ends (the old code), the length it named was too small to make it."""
    import numpy as np

    from datagen.generators.fit import DocCounter, fit_prompt
    from longmill.errors import LengthFitError

    tok = _SeamTokenizer()
    counter = DocCounter(tok, GENERATORS.get("longqa")(GenConfig(length=4000), toy_corpus).template)
    gold = toy_corpus.triplets[0].gold_docs
    pairs = [f'{{"k{i:02d}": "v{i:02d}"}}' for i in range(12)]

    def fit(length, tolerance=0.01):
        return fit_prompt(
            tokenizer=tok,
            counter=counter,
            length=length,
            tolerance=tolerance,
            head="Read the documents.\n",
            tail="Answer the question.",
            gold=gold,
            candidates=iter([d for t in toy_corpus.triplets[1:] for d in t.gold_docs + t.distractor_docs]),
            rng=np.random.default_rng(0),
            pairs=pairs,
            between=[True] * len(pairs),
        )

    with pytest.raises(LengthBudgetError) as e:
        fit(10)
    pieces = e.value.need  # instructions, pairs and gold documents, counted piece by piece
    with pytest.raises(LengthBudgetError) as e:
        fit(
            pieces + 10, tolerance=0.2
        )  # the pieces fit, the whole does not: the fitter corrects until nothing is left
    need = e.value.need
    result = fit(need, tolerance=0.5)  # the length it names holds the prompt
    assert result.prompt_tokens <= need
    with pytest.raises(LengthBudgetError):  # and one token less does not (not the tolerance's fault)
        fit(need - 1, tolerance=0.5)
    with pytest.raises((LengthBudgetError, LengthFitError)):
        fit(need - 1)
