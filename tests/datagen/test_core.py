"""Lengths, the registry, per-sample randomness and the tokenizers."""

from __future__ import annotations

import re
import uuid

import numpy as np
import pytest

from datagen.tokenizers import QWEN2_5_DEFAULT_SYSTEM, get_tokenizer
from longmill.errors import LongmillError, UnknownNameError
from longmill.lengths import format_length, parse_length, parse_lengths
from longmill.registry import Registry
from longmill.rng import rng_uuid, sample_rng, stable_hash, stable_id


@pytest.mark.parametrize(
    ("text", "n"),
    [
        ("60k", 60_000),
        ("64ki", 65_536),
        ("4096", 4096),
        (4096, 4096),
        ("1.5k", 1500),
        (" 20K ", 20_000),
        ("128Ki", 131_072),
        ("1m", 1_000_000),
    ],
)
def test_parse_length(text, n):
    assert parse_length(text) == n


@pytest.mark.parametrize("bad", ["", "abc", "0", "-5", "1.0001k", "60 kb", "k"])
def test_parse_length_rejects_with_the_accepted_forms(bad):
    with pytest.raises(ValueError, match="60k"):
        parse_length(bad)


def test_parse_lengths_sorts_and_dedupes():
    assert parse_lengths("60k,20k,40k,20000") == [20_000, 40_000, 60_000]
    assert [format_length(n) for n in (60_000, 65_536, 4097)] == ["60k", "64ki", "4097"]


def test_registry_suggests_the_closest_name():
    r: Registry[int] = Registry("generator")
    r.add("keychain", 1)
    r.add("longqa", 2)
    with pytest.raises(UnknownNameError) as e:
        r.get("keychian")
    assert "did you mean 'keychain'?" in str(e.value)
    assert "keychain, longqa" in str(e.value)
    with pytest.raises(ValueError, match="twice"):
        r.add("longqa", 3)


def test_sample_rng_is_per_index_and_stable():
    a = sample_rng(1, "keychain", 5).integers(0, 1 << 30, size=4)
    b = sample_rng(1, "keychain", 5).integers(0, 1 << 30, size=4)
    c = sample_rng(1, "keychain", 6).integers(0, 1 << 30, size=4)
    d = sample_rng(1, "longqa", 5).integers(0, 1 << 30, size=4)
    assert (a == b).all() and not (a == c).all() and not (a == d).all()
    # Pinned: a change here silently changes every shard ever generated.
    assert stable_hash("keychain") == 10666382315247264437 and stable_id("x", 1) == "46bb109a455239f1"


def test_rng_uuids_are_version_4_and_reproducible():
    rng = np.random.default_rng(0)
    u = rng_uuid(rng)
    assert uuid.UUID(u).version == 4 and u == rng_uuid(np.random.default_rng(0))
    assert re.fullmatch(r"[0-9a-f]{16}", rng_uuid(rng, short=True))


def test_qwen25_matches_the_published_vocabulary():
    tok = get_tokenizer("qwen2.5")
    # Ids of the Qwen2.5 tokenizer (tokenizer.json of Qwen/Qwen2.5-*-Instruct).
    assert tok.encode("Hello world") == [9707, 1879]
    assert tok.encode("<|im_start|>system\n")[:3] == [151644, 8948, 198]
    assert tok.encode("<|im_end|><|endoftext|>") == [151645, 151643]


def test_qwen25_template_adds_its_default_system_prompt_only_when_none_is_given():
    tok = get_tokenizer("qwen2.5")
    plain = tok.render([{"role": "user", "content": "Hi"}])
    assert plain == (
        f"<|im_start|>system\n{QWEN2_5_DEFAULT_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tok.count(plain) == 30 == tok.count_messages([{"role": "user", "content": "Hi"}])
    own = tok.render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert QWEN2_5_DEFAULT_SYSTEM not in own and own.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert not tok.render([{"role": "user", "content": "Hi"}], add_generation_prompt=False).endswith(
        "assistant\n"
    )


def test_cl100k_is_offline_with_chatml():
    tok = get_tokenizer("cl100k")
    assert tok.encode("Hello world") == [9906, 1917]
    r = tok.render([{"role": "user", "content": "Hi"}])
    assert r == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.encode("<|im_start|>") == [100264]


def test_unknown_tokenizer_suggests():
    with pytest.raises(UnknownNameError, match="did you mean 'qwen2.5'"):
        get_tokenizer("qwen25")
    with pytest.raises(LongmillError, match="hub id"):
        get_tokenizer("hf:")
    with pytest.raises(LongmillError, match="cannot load the Hugging Face tokenizer"):
        get_tokenizer("hf:/nonexistent/tokenizer/folder")


@pytest.mark.parametrize("name", ["qwen2.5", "cl100k"])
def test_counts_add_up_over_newline_seams(name):
    """The property length fitting relies on: pieces meeting at newline + non-space add up."""
    tok = get_tokenizer(name)
    rng = np.random.default_rng(3)
    alphabet = list("abcdefgh ijkl.,;:!?'\"()[]{}0123456789 éü漢字") + ["  ", " ", "\t"]
    pieces = []
    for _ in range(200):
        body = "".join(rng.choice(alphabet, size=int(rng.integers(5, 60)))).strip() or "x"
        body = "Z" + body  # starts with a non-space
        pieces.append(body + rng.choice(["\n", "\n\n", ".\n\n", "!\n"]))
    assert tok.count("".join(pieces)) == sum(tok.count(p) for p in pieces)


@pytest.mark.parametrize("name", ["qwen2.5", "cl100k"])
def test_truncate_keeps_a_word_prefix_within_budget(name):
    tok = get_tokenizer(name)
    text = "The quick brown fox jumps over the lazy dog near the riverbank at dawn. " * 5
    for k in (1, 5, 17, 40):
        cut = tok.truncate(text, k)
        assert text.startswith(cut) and tok.count(cut) <= k
        assert cut == "" or text[len(cut)] in " ."
    assert tok.truncate(text, 10_000) == text
