"""KeyChain and long-QA semantics: chains resolve, decoys differ, randomness is per sample."""

from __future__ import annotations

import json
import re
from collections import Counter

import pyarrow.parquet as pq
import pytest

from datagen.generators import GENERATORS
from datagen.verify import check_row, follow_chain, parse_pairs
from longmill.manifest import normalize_question


def make(generator, corpus, **kw):
    return GENERATORS.get(generator)(GENERATORS.get(generator).config_cls(**kw), corpus)


def test_keychain_chain_resolves_to_the_question_from_the_text_alone(toy_corpus):
    gen = make("keychain", toy_corpus, length=20_000, hops=4, num_chains=5, seed=3)
    for i in range(10):
        s = gen.sample(i, Counter())
        text = s.user_text
        pairs = parse_pairs(text)
        assert len(pairs) == 4 * 5
        head = re.search(r'Starting from the key "([0-9a-f-]+)"', text).group(1)
        assert head == s.chain_head == s.chains[0].keys[0]
        keys, end = follow_chain(pairs, head)
        assert end == s.question and len(keys) == 4
        assert check_row(s.to_row()) == []


def test_keychain_decoys_are_other_distinct_questions(toy_corpus):
    gen = make("keychain", toy_corpus, length=20_000, num_chains=8, seed=0)
    for i in range(20):
        s = gen.sample(i, Counter())
        targets = [c.target for c in s.chains]
        assert targets[0] == s.question and sum(c.is_true for c in s.chains) == 1
        norm = [normalize_question(t) for t in targets]
        assert len(set(norm)) == len(norm)
        keys = [k for c in s.chains for k in c.keys]
        assert len(set(keys)) == len(keys) == 8 * s.chain_hops


def test_pairs_are_json_objects_so_quotes_stay_unambiguous(toy_corpus):
    s = make("keychain", toy_corpus, length=8000, num_chains=2, seed=0).sample(0, Counter())
    assert '"' in s.question
    assert json.dumps({s.chains[0].keys[-1]: s.question}, ensure_ascii=False) in s.user_text
    assert dict(parse_pairs(s.user_text))[s.chains[0].keys[-1]] == s.question


def test_short_uuid_format(toy_corpus):
    s = make("keychain", toy_corpus, length=8000, uuid_format="short", num_chains=2).sample(0, Counter())
    assert all(re.fullmatch(r"[0-9a-f]{16}", k) for c in s.chains for k in c.keys)
    assert check_row(s.to_row()) == []


def test_same_seed_same_sample_and_no_shared_shuffles(toy_corpus):
    a = make("keychain", toy_corpus, length=8000, seed=11)
    b = make("keychain", toy_corpus, length=8000, seed=11)
    assert a.sample(4, Counter()).to_row() == b.sample(4, Counter()).to_row()
    c = make("keychain", toy_corpus, length=8000, seed=12)
    assert a.sample(4, Counter()).to_row() != c.sample(4, Counter()).to_row()
    # Sample i does not depend on which samples were made before it.
    fresh = make("keychain", toy_corpus, length=8000, seed=11)
    assert fresh.sample(4, Counter()).uid == a.sample(4, Counter()).uid
    # Each sample gets its own document order, not one permutation reused.
    orders = {
        tuple(make("longqa", toy_corpus, length=8000, seed=1).sample(i, Counter()).doc_ids[:5])
        for i in range(5)
    }
    assert len(orders) == 5


def test_uid_depends_on_parameters(toy_corpus):
    u1 = make("keychain", toy_corpus, length=8000, hops=3).sample(0, Counter()).uid
    u2 = make("keychain", toy_corpus, length=8000, hops=4).sample(0, Counter()).uid
    u3 = make("longqa", toy_corpus, length=8000).sample(0, Counter()).uid
    assert len({u1, u2, u3}) == 3


def test_hard_distractors_come_first(toy_corpus):
    s = make("longqa", toy_corpus, length=8000, seed=2).sample(0, Counter())
    t = next(t for t in toy_corpus.triplets if t.id == s.source_id)
    own = {d.doc_id for d in t.distractor_docs}
    assert own <= set(s.doc_ids)
    s2 = make("longqa", toy_corpus, length=8000, seed=2, hard_distractors=False).sample(0, Counter())
    assert not own <= set(s2.doc_ids)


def test_longqa_asks_the_question_and_the_answer_format(toy_corpus):
    s = make("longqa", toy_corpus, length=4000).sample(0, Counter())
    assert s.num_chains == 0 and s.chains == [] and s.chain_head is None
    assert f"Question: {s.question}" in s.user_text
    assert s.user_text.rstrip().endswith('"Therefore, the answer is (insert answer here)".')
    assert s.reward_model == {"style": "rule", "ground_truth": s.answers}
    assert s.extra_info["answers"] == s.answers and s.data_source == "longqa/toy"


def test_system_prompt_option_replaces_the_default(toy_corpus):
    s = make("longqa", toy_corpus, length=4000, system_prompt="You are a careful reader.").sample(
        0, Counter()
    )
    assert s.prompt[0] == {"role": "system", "content": "You are a careful reader."}
    assert check_row(s.to_row()) == []


@pytest.mark.parametrize("template", ["default", "passage", "plain"])
def test_document_templates(toy_corpus, template):
    s = make("keychain", toy_corpus, length=6000, doc_template=template, num_chains=2).sample(0, Counter())
    assert check_row(s.to_row()) == []
    assert ("Document 1:\n" in s.user_text) == (template == "default")


def test_doc_offsets_delimit_each_document(toy_corpus):
    s = make("keychain", toy_corpus, length=6000, num_chains=2).sample(0, Counter())
    text, off = s.user_text, s.doc_offsets
    assert len(off) == s.num_docs + 1
    for i in range(s.num_docs):
        assert text[off[i] : off[i + 1]].startswith(f"Document {i + 1}:\nTitle: ")
    assert text[off[-1] :].startswith("</text>")


def test_pair_shaped_source_text_never_breaks_verify(tmp_path):
    """Issue #9 point 14: sources that already hold ``{"<hex>": "..."}`` text still give samples that
    pass verify; the text is defused when read, and counted in stats.json."""
    import dataclasses

    from datagen.generators.keychain import KeyChainConfig
    from datagen.runner import RunConfig, run_generator
    from datagen.schema import Document
    from datagen.verify import verify
    from tests.datagen.conftest import ListSource, toy_triplets

    shaped = (
        'The config was {"0123456789abcdef": "Who founded the museum?"}. Also {"deadbeef-0000-4000-8000-'
        '0123456789ab": "0123456789abcdef"} and { "cafebabe" : "x"} appeared. '
    )
    triplets = []
    for t in toy_triplets(40):
        gold = [Document.make(d.title, shaped + d.text) for d in t.gold_docs]
        dis = [
            Document.make(d.title, d.text + " " + shaped.strip()) for d in t.distractor_docs[:3]
        ] + t.distractor_docs[3:]
        triplets.append(
            dataclasses.replace(
                t, gold_docs=gold, distractor_docs=dis, question=t.question + ' {"abcdef0123456789": "y"}'
            )
        )
    out = tmp_path / "kc"
    stats = run_generator(
        "keychain",
        KeyChainConfig(length=4000, num_chains=3, seed=1),
        ListSource(triplets),
        RunConfig(out=out, num_samples=6, rows_per_part=6),
    )
    report = verify(out)
    assert report.ok, [str(v) for v in report.violations[:5]]
    assert stats["source_cleaned"]["pair_text_neutralised"] == 40 * (2 * 3 + 3 * 3 + 1)
    assert json.loads((out / "stats.json").read_text())["source_cleaned"] == stats["source_cleaned"]

    lq = tmp_path / "lq"
    run_generator(
        "longqa",
        GENERATORS.get("longqa").config_cls(length=3000, seed=1),
        ListSource(triplets),
        RunConfig(out=lq, num_samples=4, rows_per_part=4),
    )
    assert verify(lq).ok


# -- sentence ends (issue #13: pairs never after initials or abbreviations) ---------------------------

ABBREVIATED = (
    "James P. Comer was born in the U.S. in 1934. Dr. Smith met him at Acme Inc. on Jan. 5. "
    "He wrote e.g. three books. J. R. R. Tolkien liked Mr. Comer. St. Louis is a city. "
    "The end came in 1999. It was Prof. Lee who said so."
)


def test_sentence_slots_skip_initials_and_abbreviations():
    from datagen.generators.fit import sentence_slots

    before = [ABBREVIATED[max(0, i - 8) : i] for i in sentence_slots(ABBREVIATED)]
    assert before == ["in 1934.", " Jan. 5.", "e books.", ". Comer.", " a city.", "in 1999."]
    assert sentence_slots('He said "Go." Then left. Fine? Yes! Done.') == [13, 24, 30, 35]


def test_keychain_pairs_never_follow_an_initial_or_abbreviation():
    import dataclasses

    from datagen.corpus import Corpus
    from datagen.schema import Document
    from tests.datagen.conftest import toy_triplets

    triplets = [
        dataclasses.replace(
            t, distractor_docs=[Document.make(d.title, ABBREVIATED + " " + d.text) for d in t.distractor_docs]
        )
        for t in toy_triplets(60)
    ]
    gen = make("keychain", Corpus(triplets, name="abbr"), length=12_000, num_chains=12, seed=4)
    bad = re.compile(r"(?:\b[A-Z]|U\.S|e\.g|Dr|Inc|Jan|Mr|St|Prof)\. \{")
    for i in range(6):
        s = gen.sample(i, Counter())
        assert not bad.search(s.user_text), bad.search(s.user_text).group(0)
        assert check_row(s.to_row()) == []


def test_verify_catches_a_pair_after_an_initial(toy_corpus):
    s = make("keychain", toy_corpus, length=6000, num_chains=2, seed=1).sample(0, Counter())
    row = s.to_row()
    k, v = s.chains[0].keys[1], s.chains[0].keys[2]
    pair = " " + json.dumps({k: v}) + "."
    msg = row["prompt"][-1]
    text = msg["content"].replace(pair, "")
    i = text.index("Entity ")
    msg["content"] = text[:i] + "James P." + pair + " Comer. " + text[i:]
    problems = dict(check_row(row))
    assert "placement" in problems and "James P." in problems["placement"]


# -- the loongrl preset (issue #13 §1) --------------------------------------------------------------


def test_loongrl_preset_structure(toy_corpus):
    from datagen.generators.keychain import KeyChainConfig
    from datagen.tokenizers import get_tokenizer

    cfg = KeyChainConfig(length=8192, preset="loongrl")
    assert (cfg.num_chains, cfg.hops, cfg.uuid_format, cfg.doc_template, cfg.pairs_between) == (
        32,
        4,
        "hex8",
        "passage",
        0.5,
    )
    assert KeyChainConfig(length=60_000, preset="loongrl").num_chains == 234
    # Options given explicitly win over the preset's.
    assert KeyChainConfig(length=8192, preset="loongrl", num_chains=5, uuid_format="short").num_chains == 5
    with pytest.raises(Exception, match="did you mean 'loongrl'"):
        KeyChainConfig(length=8192, preset="loongrl2")

    gen = make("keychain", toy_corpus, length=8192, preset="loongrl", seed=7)
    tok = get_tokenizer("qwen2.5")
    depths, shares = [], []
    for i in range(8):
        s = gen.sample(i, Counter())
        text = s.user_text
        assert check_row(s.to_row()) == [] and 8192 * 0.99 <= s.prompt_tokens <= 8192
        pairs = parse_pairs(text)
        keys = [k for c in s.chains for k in c.keys]
        assert len(pairs) == 32 * 4 and len(set(keys)) == len(keys) == 128
        assert all(re.fullmatch(r"[0-9a-f]{8}", k) for k in keys)
        assert "Passage 1:\n" in text and "Document 1:" not in text
        # Pairs both after sentences and on their own lines between documents.
        own_line = sum(f"\n\n{json.dumps({k: v})}.\n\n" in text for k, v in pairs)
        assert 0.3 * len(pairs) < own_line < 0.7 * len(pairs)
        # The record's whole paragraph set is one contiguous block.
        t = next(t for t in toy_corpus.triplets if t.id == s.source_id)
        core = {d.doc_id for d in t.gold_docs + t.distractor_docs}
        pos = sorted(i for i, d in enumerate(s.doc_ids) if d in core)
        assert len(pos) == len(core) and pos[-1] - pos[0] == len(core) - 1
        depths.append(pos[0] / s.num_docs)
        shares.append(sum(tok.count_batch([f" {json.dumps({k: v})}." for k, v in pairs])) / s.prompt_tokens)
    assert 0.25 < sum(depths) / len(depths) < 0.6 and len(set(depths)) > 4  # around the middle, per sample
    assert all(0.2 < x < 0.45 for x in shares), shares  # pairs take a large share, as in LoongRL


def test_loongrl_preset_is_deterministic_and_verifies(tmp_path, toy_source):
    from datagen.generators.keychain import KeyChainConfig
    from datagen.runner import RunConfig, run_generator
    from datagen.verify import verify

    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        run_generator(
            "keychain",
            KeyChainConfig(length=6000, preset="loongrl", seed=3),
            toy_source,
            RunConfig(out=out, num_samples=4, rows_per_part=2),
        )
        outs.append(out)
    for p in ("part-00000.parquet", "part-00001.parquet"):
        assert (outs[0] / p).read_bytes() == (outs[1] / p).read_bytes()
    report = verify(outs[0])
    assert report.ok, [str(v) for v in report.violations[:3]]
    assert json.loads((outs[0] / "stats.json").read_text())["params"]["preset"] == "loongrl"


def test_loongrl_preset_from_the_command_line(tmp_path):
    from click.testing import CliRunner

    from datagen.cli import main

    out = tmp_path / "kc"
    r = CliRunner().invoke(
        main,
        [
            "keychain",
            "--length",
            "8k",
            "--preset",
            "loongrl",
            "--num-samples",
            "2",
            "--source-opt",
            "num_triplets=300",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    params = json.loads((out / "stats.json").read_text())["params"]
    assert (params["preset"], params["num_chains"], params["uuid_format"]) == ("loongrl", 31, "hex8")
    v = CliRunner().invoke(main, ["verify", str(out)])
    assert v.exit_code == 0 and "OK: 2 rows" in v.output, v.output
    bad = CliRunner().invoke(
        main, ["keychain", "--length", "8k", "--preset", "loong", "--out", str(tmp_path / "x")]
    )
    assert bad.exit_code != 0 and "did you mean 'loongrl'" in bad.output


def test_options_typed_with_the_loongrl_preset_win(tmp_path):
    """Issue 19: with --preset loongrl, --uuid-format full, --pairs-between 0 and --doc-template default,
    typed explicitly, were replaced by the preset's values because they equal the defaults."""
    from click.testing import CliRunner

    from datagen.cli import main
    from datagen.generators.keychain import KeyChainConfig

    typed = KeyChainConfig(
        length=8192, preset="loongrl", uuid_format="full", pairs_between=0.0, doc_template="default"
    )
    assert (typed.uuid_format, typed.pairs_between, typed.doc_template, typed.num_chains) == (
        "full",
        0.0,
        "default",
        32,
    )
    base = [
        "keychain",
        "--length",
        "4k",
        "--preset",
        "loongrl",
        "--num-samples",
        "1",
        "--source-opt",
        "num_triplets=200",
    ]
    out = tmp_path / "kc"
    r = CliRunner().invoke(
        main,
        [
            *base,
            "--num-chains",
            "4",
            "--uuid-format",
            "full",
            "--pairs-between",
            "0",
            "--doc-template",
            "default",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    params = json.loads((out / "stats.json").read_text())["params"]
    assert (params["uuid_format"], params["pairs_between"], params["doc_template"]) == (
        "full",
        0.0,
        "default",
    )
    row = pq.read_table(out / "part-00000.parquet").to_pylist()[0]
    text = row["prompt"][-1]["content"]
    assert "Document 1:\n" in text and all(re.fullmatch(r"[0-9a-f-]{36}", k) for k, _ in parse_pairs(text))
    # left out, they take the preset's values; given, --placement uniform cannot place the core block
    r = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "p")])
    params = json.loads((tmp_path / "p" / "stats.json").read_text())["params"]
    assert (params["uuid_format"], params["pairs_between"], params["doc_template"]) == (
        "hex8",
        0.5,
        "passage",
    )
    r = CliRunner().invoke(main, [*base, "--placement", "uniform", "--out", str(tmp_path / "u")])
    assert r.exit_code == 2 and "--placement uniform" in r.output and "core block" in r.output, r.output
    assert not (tmp_path / "u").exists()
