"""The datagen command line, end to end, as the datagen issue's acceptance criteria state them.

Runs go through the CLI in-process (click's CliRunner, ``tests/cli.py``); the published-format acceptance
test and the headline command also run ``python -m datagen`` in a real subprocess, end to end. Lengths are
re-counted with an independent tokenizer (Hugging Face tokenizers and transformers' chat templating, not
tiktoken and our renderer).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ..cli import run_cli
from . import formats


def datagen(
    *args: str, check: bool = True, cwd: Path | None = None, subprocess_run: bool = False
) -> subprocess.CompletedProcess:
    """`datagen ARGS`, in-process; ``subprocess_run=True`` runs ``python -m datagen`` end to end instead."""
    if subprocess_run:
        proc = subprocess.run(
            [sys.executable, "-m", "datagen", *args], capture_output=True, text=True, timeout=600, cwd=cwd
        )
    else:
        from datagen.cli import main

        proc = run_cli(main, *args, prog_name="datagen", cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"datagen {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def rows(folder: Path) -> list[dict]:
    return [r for p in sorted(folder.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]


def parts_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("part-*.parquet"))} | {
        "stats.json": (folder / "stats.json").read_bytes()
    }


def check_lengths(hf_tok, rs: list[dict], length: int) -> None:
    for r in rs:
        ids = hf_tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        assert int(length * 0.99) <= len(ids) <= length
        assert len(ids) == r["prompt_tokens"]


@pytest.fixture(scope="module")
def real_format_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("published")
    recs = formats.make_qa_records(240, seed=1)
    return {
        "hotpotqa": formats.write_hotpotqa(d / "hotpot_dev_distractor_v1.json", recs),
        "musique": formats.write_musique(d / "musique_ans_v1.0_dev.jsonl", recs),
        "2wikimqa": formats.write_2wikimqa(d / "dev.json", recs),
    }


@pytest.mark.slow
@pytest.mark.timeout(1200)  # two 60k runs, a verify and an independent recount
def test_hotpotqa_60k_keychain_acceptance(tmp_path, real_format_files, hf_qwen_tokenizer):
    # End to end: `python -m datagen` in a subprocess, as a user runs it; the rerun goes in-process, so the
    # bytes compare a subprocess run with an in-process one.
    src = str(real_format_files["hotpotqa"])
    args = [
        "keychain",
        "--source",
        "hotpotqa",
        "--input",
        src,
        "--length",
        "60k",
        "--num-samples",
        "50",
        "--seed",
        "1",
    ]
    datagen(*args, "--out", str(tmp_path / "a"), subprocess_run=True)
    rs = rows(tmp_path / "a")
    assert len(rs) == 50
    check_lengths(hf_qwen_tokenizer, rs, 60_000)
    v = datagen("verify", str(tmp_path / "a"), subprocess_run=True)
    assert "OK: 50 rows" in v.stdout
    datagen(*args, "--out", str(tmp_path / "b"))
    assert parts_bytes(tmp_path / "a") == parts_bytes(tmp_path / "b")


@pytest.mark.slow
@pytest.mark.timeout(1200)  # two 60k runs, a verify and an independent recount
@pytest.mark.parametrize("source", ["musique", "2wikimqa"])
def test_other_formats_60k_keychain(tmp_path, real_format_files, hf_qwen_tokenizer, source):
    args = [
        "keychain",
        "--source",
        source,
        "--input",
        str(real_format_files[source]),
        "--length",
        "60k",
        "--num-samples",
        "12",
        "--seed",
        "1",
    ]
    datagen(*args, "--out", str(tmp_path / "a"))
    rs = rows(tmp_path / "a")
    assert len(rs) == 12 and {r["data_source"] for r in rs} == {f"keychain/{source}"}
    check_lengths(hf_qwen_tokenizer, rs, 60_000)
    datagen("verify", str(tmp_path / "a"))
    datagen(*args, "--out", str(tmp_path / "b"))
    assert parts_bytes(tmp_path / "a") == parts_bytes(tmp_path / "b")


@pytest.mark.parametrize("length", ["20k", "40k", "60k"])
def test_synthetic_keychain_at_curriculum_lengths(tmp_path, hf_qwen_tokenizer, length):
    args = ["keychain", "--length", length, "--num-samples", "6", "--seed", "2", "--rows-per-part", "4"]
    datagen(*args, "--out", str(tmp_path / "a"))
    rs = rows(tmp_path / "a")
    assert len(rs) == 6
    check_lengths(hf_qwen_tokenizer, rs, int(length[:-1]) * 1000)
    datagen("verify", str(tmp_path / "a"))
    datagen(*args, "--out", str(tmp_path / "b"))
    assert parts_bytes(tmp_path / "a") == parts_bytes(tmp_path / "b")


def test_triplets_then_longqa_from_triplet_shards(tmp_path, real_format_files):
    datagen(
        "triplets",
        "--source",
        "musique",
        "--input",
        str(real_format_files["musique"]),
        "--out",
        str(tmp_path / "t"),
        "--rows-per-part",
        "100",
    )
    stats = json.loads((tmp_path / "t" / "stats.json").read_text())
    assert stats["triplets"] == 240 and stats["parts"] == 3
    datagen(
        "longqa",
        "--source",
        "triplets",
        "--input",
        str(tmp_path / "t"),
        "--length",
        "8k",
        "--num-samples",
        "5",
        "--placement",
        "middle",
        "--out",
        str(tmp_path / "q"),
    )
    rs = rows(tmp_path / "q")
    assert len(rs) == 5 and all(r["source"] == "musique" and r["num_chains"] == 0 for r in rs)
    datagen("verify", str(tmp_path / "q"))


def test_inspect_shows_the_chain_and_gold(tmp_path):
    datagen(
        "keychain", "--length", "6k", "--num-samples", "2", "--num-chains", "3", "--out", str(tmp_path / "k")
    )
    out = json.loads(
        datagen("inspect", str(tmp_path / "k" / "part-00000.parquet"), "--row", "1", "--json").stdout
    )
    assert out["chains"][0]["is_true"] and out["chains"][0]["target"] == out["question"]
    assert all(g["position"] for g in out["gold"]) and len(out["chains"]) == 3
    full = datagen("inspect", str(tmp_path / "k"), "--row", "0", "--full").stdout
    assert "TRUE chain" in full and "gold" in full
    bad = datagen("inspect", str(tmp_path / "k"), "--row", "9", check=False)
    assert bad.returncode == 2 and "fewer rows" in bad.stderr


def test_verify_fails_with_exit_1_on_a_bad_row(tmp_path):
    from datagen.schema import SAMPLE_SCHEMA, to_table
    from longmill.io import write_table_atomic

    datagen(
        "keychain", "--length", "5k", "--num-samples", "2", "--num-chains", "2", "--out", str(tmp_path / "k")
    )
    p = tmp_path / "k" / "part-00000.parquet"
    rs = pq.read_table(p).to_pylist()
    rs[0]["prompt_tokens"] += 1
    write_table_atomic(to_table(rs, SAMPLE_SCHEMA), p)
    proc = datagen("verify", str(tmp_path / "k"), check=False)
    assert proc.returncode == 1 and "FAILED: 1 violation" in proc.stdout and "row 0" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["keychain", "--source", "hotpotqa", "--length", "5k", "--out", "X"], "needs --input"),
        (["keychain", "--source", "synthetc", "--length", "5k", "--out", "X"], "did you mean 'synthetic'"),
        (["keychain", "--tokenizer", "qwen3", "--length", "5k", "--out", "X"], "did you mean 'qwen2.5'"),
        (["keychain", "--length", "600", "--out", "X"], "use a larger --length (at least"),
        (["keychain", "--length", "60kb", "--out", "X"], "such as 4096, 60k"),
        (["keychain", "--length", "5k", "--placement", "top", "--out", "X"], "invalid placement"),
        (["keychian", "--length", "5k"], "Did you mean 'keychain'"),
    ],
)
def test_bad_input_says_what_to_do(tmp_path, args, message):
    args = [str(tmp_path / "o") if a == "X" else a for a in args]
    proc = datagen(*args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_source_too_small_to_fill_the_length(tmp_path):
    f = formats.write_hotpotqa(tmp_path / "hotpot_dev_distractor_v1.json", formats.make_qa_records(5, seed=0))
    proc = datagen(
        "longqa",
        "--source",
        "hotpotqa",
        "--input",
        str(f),
        "--length",
        "60k",
        "--out",
        str(tmp_path / "o"),
        check=False,
    )
    assert proc.returncode == 2 and "ran out of distractor documents" in proc.stderr


def test_malformed_records_are_counted_or_fatal_under_strict(tmp_path):
    recs = [formats.hotpotqa_layout(r) for r in formats.make_qa_records(30, seed=4)]
    del recs[3]["question"]
    f = formats.write_hotpotqa(tmp_path / "hotpot_dev_distractor_v1.json", recs)
    datagen("triplets", "--source", "hotpotqa", "--input", str(f), "--out", str(tmp_path / "t"))
    stats = json.loads((tmp_path / "t" / "stats.json").read_text())
    assert stats["triplets"] == 29 and stats["skipped"] == {"malformed:question": 1}
    proc = datagen(
        "triplets",
        "--source",
        "hotpotqa",
        "--input",
        str(f),
        "--out",
        str(tmp_path / "u"),
        "--strict",
        check=False,
    )
    assert proc.returncode == 2
    assert f"{f}: record 3: field 'question': missing" in proc.stderr


def test_help_teaches(tmp_path):
    out = datagen("keychain", "--help").stdout
    for needle in (
        "Examples:",
        "--length",
        "--num-chains",
        "--uuid-format",
        "--placement",
        "--num-shards",
        "--workers",
        "60k = 60,000",
    ):
        assert needle in out
    assert "datagen verify" in datagen("--help").stdout


# -- issue 9 -------------------------------------------------------------------------------------------


def test_the_headline_command_as_typed(tmp_path):
    """`datagen keychain --length 60k`: synthetic source, 100 samples, data/keychain-60k, named in the output."""
    # End to end: the headline command in a real subprocess, as typed.
    proc = datagen("keychain", "--length", "60k", cwd=tmp_path, subprocess_run=True)
    out = tmp_path / "data" / "keychain-60k"
    assert "data/keychain-60k" in proc.stderr and "to data/keychain-60k" in proc.stdout
    rs = rows(out)
    assert len(rs) == 100 and {r["data_source"] for r in rs} == {"keychain/synthetic"}
    assert all(59_400 <= r["prompt_tokens"] <= 60_000 for r in rs)
    assert "keychain 60k" in proc.stderr  # the progress label


def test_a_missing_required_option_is_a_usage_error_not_a_traceback(tmp_path):
    proc = datagen("keychain", "--num-samples", "2", check=False, cwd=tmp_path)
    assert (
        proc.returncode == 2 and "Missing option '--length'" in proc.stderr and "Traceback" not in proc.stderr
    )


def test_the_progress_label_shows_the_length_as_typed(tmp_path):
    proc = datagen("longqa", "--length", "5.5k", "--num-samples", "2", cwd=tmp_path)
    assert "longqa 5.5k" in proc.stderr and (tmp_path / "data" / "longqa-5.5k" / "stats.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seed", "-1"], "--seed must be a whole number >= 0, got -1"),
        (["--limit", "-1"], "--limit must be a positive number of triplets, got -1"),
        (["--out", "FILE"], "exists and is not a folder"),
        (["--out", "FILE/sub"], "is a file, so the folder cannot be created"),
        (["--doc-template", "pasage"], "did you mean 'passage'?"),
        (["--placement", "midle"], "did you mean 'middle'?"),
        (["--uuid-format", "shrt"], "did you mean 'short'?"),
    ],
)
def test_user_mistakes_are_one_line_errors_before_any_work(tmp_path, args, message):
    (tmp_path / "file").write_text("x")
    args = [str(tmp_path / a.replace("FILE", "file")) if a.startswith("FILE") else a for a in args]
    proc = datagen("keychain", "--length", "5k", "--num-samples", "2", *args, check=False, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "data").exists()


def test_inspect_on_a_triplet_shard_says_what_it_is(tmp_path):
    datagen(
        "triplets", "--source", "synthetic", "--source-opt", "num_triplets=20", "--out", str(tmp_path / "t")
    )
    proc = datagen("inspect", str(tmp_path / "t" / "part-00000.parquet"), check=False)
    assert proc.returncode == 2 and "is a triplet shard (made by datagen triplets)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_broken_yaml_config_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_steps: [1, 2\nlearning_rate: x\n")
    from train.cli import main

    proc = run_cli(
        main,
        "sft",
        "--data",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
        "--config",
        str(bad),
        prog_name="python -m train",
    )
    assert proc.returncode == 2 and f"{bad}, line" in proc.stderr and "not valid YAML" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_full_disk_during_the_run_is_a_one_line_error(tmp_path, monkeypatch):
    import errno

    import datagen.runner as r
    import datagen.shards as s

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", "part-00000.parquet")

    monkeypatch.setattr(s, "write_table_atomic", full)
    monkeypatch.setattr(r.PartWriter, "write", lambda self, *a, **k: full())
    proc = datagen(
        "keychain", "--length", "5k", "--num-samples", "2", "--out", str(tmp_path / "o"), check=False
    )
    assert proc.returncode == 2 and "part-00000.parquet: the disk is full" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_distractor_left_to_remove_names_the_length_that_works():
    """A chat template that costs more than the fitter predicts (here it echoes the user message) at a small
    length: the error says the smallest length the prompt could take, not only that nothing is left to remove."""
    import re

    import numpy as np

    from datagen.generators.fit import DocCounter, fit_prompt
    from datagen.prompts import DOC_TEMPLATES
    from datagen.tokenizers import Tokenizer, get_tokenizer
    from longmill.errors import LengthBudgetError

    from .conftest import toy_triplets

    class EchoTemplate(Tokenizer):
        name, chat_template, additive = "echo", "echo", False

        def __init__(self):
            self.inner = get_tokenizer("qwen2.5")

        def encode(self, text):
            return self.inner.encode(text)

        def decode(self, ids):
            return self.inner.decode(ids)

        def render(self, messages, add_generation_prompt=True):
            return self.inner.render(messages, add_generation_prompt) + messages[-1]["content"]

    tok, t = EchoTemplate(), toy_triplets(20)
    with pytest.raises(LengthBudgetError, match="no distractor left") as e:
        fit_prompt(
            tokenizer=tok,
            counter=DocCounter(tok, DOC_TEMPLATES.get("default")),
            length=300,
            tolerance=0.01,
            head="Read.\n",
            tail="Q?",
            gold=t[0].gold_docs,
            candidates=iter([d for x in t[1:] for d in x.distractor_docs]),
            rng=np.random.default_rng(0),
        )
    floor = int(re.search(r"use a larger --length \(at least (\d+)\)", str(e.value)).group(1))
    gold_only = tok.count_messages(
        [
            {
                "role": "user",
                "content": "Read.\n"
                + "".join(
                    DOC_TEMPLATES.get("default").render_header(i + 1)
                    + DOC_TEMPLATES.get("default").render_body(d.title, d.text)
                    for i, d in enumerate(t[0].gold_docs)
                )
                + "Q?",
            }
        ]
    )
    assert 300 < floor and abs(floor - gold_only) <= 4


@pytest.mark.parametrize(
    "args",
    [
        ["needles"],
        ["needles", "--num-needles", "12", "--num-queries", "3"],
        ["vartrack"],
        ["longqa"],
        ["aggregation"],
        ["keychain"],
        ["keychain", "--preset", "loongrl"],  # the chain count grows with the length
    ],
    ids=lambda a: "-".join(x.strip("-") for x in a),
)
def test_the_minimum_length_a_too_small_length_names_works(tmp_path, args):
    """Issue 19: `datagen needles --length 1` said "at least 136", which could not hold the needles, and
    the hint led to an unrelated error. The length named must work: the generator runs at exactly it."""
    import re

    small = datagen(*args, "--length", "1", "--out", str(tmp_path / "a"), check=False)
    assert small.returncode == 2, small.stderr
    need = int(re.search(r"use a larger --length \(at least (\d+)", small.stderr).group(1))
    if args[0] in ("needles", "vartrack"):  # the reason counts every needle, not only the queried ones
        assert "other documents it must hold" in small.stderr, small.stderr
    out = tmp_path / "b"
    datagen(*args, "--length", str(need), "--num-samples", "1", "--out", str(out))
    assert "OK: 1 rows" in datagen("verify", str(out)).stdout
    lower = datagen(
        *args, "--length", str(need - 1), "--num-samples", "1", "--out", str(tmp_path / "c"), check=False
    )
    assert lower.returncode == 2 and "use a larger --length" in lower.stderr  # the minimum, for sample 0
