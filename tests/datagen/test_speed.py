"""The fast paths of source parsing, id hashing and tokenizer loading give exactly what the plain code did."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from datagen.sources.base import clean_text
from datagen.sources.hotpotqa import join_sentences
from longmill.rng import stable_id

ALPHABET = list("ab .!?\"'()") + [
    " ",
    "  ",
    "\t",
    "\n",
    "\r",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x1f",
    "\x85",
    "\xa0",
    "\u2002",
    "\u2028",
    "\u3000",
    "\u200b",
    "e\u0301",
    "\u0301",
    "é",
    "Å",
    "ﬁ",
    "\u212b",
    "日本",
    "🎉",
    "\x00",
    "\u00ad",
]


def reference_clean(text: str) -> str:
    """clean_text as it was: NFC, then the regex."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip()


def reference_join(sentences) -> str:
    parts: list[str] = []
    for s in sentences:
        if parts and s and not s[0].isspace() and not parts[-1][-1:].isspace():
            parts.append(" ")
        parts.append(s)
    return reference_clean("".join(parts))


def random_texts(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield "".join(ALPHABET[int(i)] for i in rng.integers(0, len(ALPHABET), size=int(rng.integers(0, 12))))


def test_clean_text_equals_the_regex_on_random_text():
    for t in random_texts(20_000):
        assert clean_text(t) == reference_clean(t), repr(t)
    for t in ["already clean.", " lead", "trail ", "a  b", "a\tb", "", "Zoë", "a\u00a0b", "a\u2028b"]:
        assert clean_text(t) == reference_clean(t)


def test_join_sentences_equals_the_loop_that_inserted_spaces():
    rng = np.random.default_rng(1)
    texts = list(random_texts(6_000, seed=2))
    for _ in range(6_000):
        k = int(rng.integers(0, 5))
        sents = [texts[int(i)] for i in rng.integers(0, len(texts), size=k)]
        assert join_sentences(sents) == reference_join(sents), sents
    assert join_sentences(["End.", "Next.", " Spaced."]) == "End. Next. Spaced."


@pytest.mark.parametrize(
    "parts", [("doc", "Title", 'Text with "quotes" and \\ and é 🎉\n\t\x00'), ("a",), (), ("doc", "", "")]
)
def test_stable_id_fast_path_matches_json_dumps(parts):
    import hashlib

    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    assert stable_id(*parts) == hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()
    if len(parts) == 3 and parts[0] == "doc":
        from datagen.schema import Document
        from longmill.rng import doc_id

        assert doc_id(parts[1], parts[2]) == stable_id(*parts) == Document.make(parts[1], parts[2]).doc_id


def test_bpe_ranks_load_like_tiktoken(tmp_path):
    from tiktoken.load import load_tiktoken_bpe

    from datagen.tokenizers import load_bpe_ranks, qwen_tiktoken_file

    assert load_bpe_ranks(qwen_tiktoken_file()) == load_tiktoken_bpe(str(qwen_tiktoken_file()))
    odd = tmp_path / "odd.tiktoken"
    odd.write_bytes(b"IQ== 0\n\nIg== 1\n")  # a blank line: the fallback handles it
    assert load_bpe_ranks(odd) == {b"!": 0, b'"': 1}
    bad = tmp_path / "bad.tiktoken"
    bad.write_bytes(b"IQ== 0 extra\nIg==\n")
    with pytest.raises(ValueError):
        load_bpe_ranks(bad)


# ------------------------------------------------------------------------------ streaming JSON arrays


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1 << 20])
def test_json_array_streams_the_same_elements(chunk):
    import io

    from datagen.sources.jsonstream import iter_json_array

    data = [
        {"a": "x" * 50, "b": [1, 2.5, None, True]},
        123456789,
        -1.5e10,
        's\u00e9 \\" ]',
        [],
        {},
        [[[]]],
        0,
        {"nested": {"k": ["]", "[", ","]}},
        12,
    ]
    for text in (json.dumps(data), json.dumps(data, indent=2), "  \n" + json.dumps(data) + "\n\n"):
        assert list(iter_json_array(io.StringIO(text), "f.json", chunk=chunk)) == data
    assert list(iter_json_array(io.StringIO("[ ]"), "f.json", chunk=chunk)) == []


@pytest.mark.parametrize(
    "text,where",
    [
        ('[{"_id": "x",', "line 1"),
        ("[1, 2", "unterminated"),
        ("[1 2]", "expected ','"),
        ("[1, 2] x", "extra data"),
        ("{}", "expected '['"),
        ('[1,\n2,\n{"a": tru}]', "line 3 column 7"),
    ],
)
def test_json_array_errors_name_the_place(text, where):
    import io

    from datagen.sources.jsonstream import iter_json_array
    from longmill.errors import LongmillError

    for chunk in (2, 1 << 20):
        with pytest.raises(LongmillError, match=f"f.json: not valid JSON .*{re.escape(where)}"):
            list(iter_json_array(io.StringIO(text), "f.json", chunk=chunk))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_a_large_json_array_is_read_in_bounded_memory(tmp_path):
    """Peak memory while reading a JSON list does not grow with the file (json.load held all of it)."""
    import subprocess
    import sys

    def peak_rss_mb(n: int) -> float:
        path = tmp_path / f"hotpot_dev_distractor_{n}.json"
        rec = {
            "_id": "x",
            "question": "Q?",
            "answer": "A",
            "supporting_facts": [["T0", 0]],
            "context": [
                [f"T{k}", ["Sentence one is here. " * 5, " Another sentence. " * 5]] for k in range(10)
            ],
        }
        with open(path, "w") as f:
            f.write("[")
            for i in range(n):
                f.write(("," if i else "") + json.dumps({**rec, "_id": str(i)}))
            f.write("]")
        # VmHWM, not ru_maxrss: a child's ru_maxrss starts from its parent's (pytest's) size at fork.
        code = (
            "import re, sys; from datagen.sources.base import iter_json_records; from pathlib import Path\n"
            "n = sum(1 for _ in iter_json_records(Path(sys.argv[1])))\n"
            "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
            "print(n, int(hwm) / 1024)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
        )
        count, mb = out.stdout.split()
        assert int(count) == n
        return float(mb)

    small, large = peak_rss_mb(200), peak_rss_mb(20_000)  # ~0.5 MB and ~50 MB of JSON
    assert large - small < 20, (small, large)
