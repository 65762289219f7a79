"""``python -m eval run`` / ``score`` end to end on CPU: a tiny random HF model, LongBench input, resume."""

from __future__ import annotations

import importlib.util
import json

import pytest

from datagen.generators.base import GenConfig
from datagen.generators.keychain import KeyChainConfig
from datagen.runner import RunConfig, run_generator
from datagen.sources import get_source
from eval.run import GenerateConfig, run_eval

from ..cli import run_cli
from .fake_server import FakeServer


def evalcli(*args, check=True):
    """`python -m eval ARGS`, run in-process (tests/cli.py)."""
    from eval.cli import main

    proc = run_cli(main, *map(str, args), prog_name="python -m eval")
    if check and proc.returncode != 0:
        raise AssertionError(f"eval {args} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    src = get_source("synthetic", options={"num_triplets": 200})
    run_generator(
        "keychain",
        KeyChainConfig(length=1500, num_chains=2, hops=2),
        src,
        RunConfig(out=out / "kc", num_samples=3),
    )
    run_generator(
        "longqa", GenConfig(length=2500, placement="depth:0.9"), src, RunConfig(out=out / "qa", num_samples=3)
    )
    return out


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_eval_run_with_a_tiny_hf_model_end_to_end(tmp_path, shards, tiny_qwen2):
    out = tmp_path / "run"
    proc = evalcli(
        "run",
        "--model",
        str(tiny_qwen2),
        "--backend",
        "hf",
        "--data",
        str(shards / "kc"),
        "--n",
        "2",
        "--temperature",
        "1.0",
        "--max-tokens",
        "6",
        "--backend-option",
        "device=cpu",
        "--out",
        str(out),
    )
    assert "em = " in proc.stdout
    preds = lines(out / "predictions.jsonl")
    assert len(preds) == 3 and all(len(p["completions"]) == 2 for p in preds)
    m = json.loads((out / "metrics.json").read_text())
    assert m["counts"]["completions"] == 6 and set(m["overall"]) >= {"em", "sub_em", "f1", "pass@1", "pass@2"}
    assert m["groups"] and m["groups"][0]["length_bin"] == "1500"
    for f in (
        "plots/accuracy_vs_length.png",
        "plots/length_depth_heatmap.png",
        "plots/accuracy_by_length.csv",
        "report.md",
        "samples.parquet",
    ):
        assert (out / f).stat().st_size > 0


def test_eval_run_resumes_after_an_interruption(tmp_path, shards, tiny_qwen2):
    out = tmp_path / "run"
    args = [
        "run",
        "--model",
        str(tiny_qwen2),
        "--data",
        str(shards / "qa"),
        "--max-tokens",
        "4",
        "--backend-option",
        "device=cpu",
        "--batch-size",
        "1",
        "--out",
        str(out),
    ]
    evalcli(*args)
    full = (out / "predictions.jsonl").read_text().splitlines()
    # Simulate a kill during the third prompt: one complete line, then half of the next.
    (out / "predictions.jsonl").write_text(full[0] + "\n" + full[1][: len(full[1]) // 2])
    evalcli(*args)
    again = (out / "predictions.jsonl").read_text().splitlines()
    assert len(again) == 3 and again[0] == full[0]
    assert sorted(json.loads(x)["uid"] for x in again) == sorted(json.loads(x)["uid"] for x in full)


def test_score_longbench_style_jsonl(tmp_path):
    lb = tmp_path / "hotpotqa.jsonl"
    recs = [
        {
            "input": f"Who founded company {i}?",
            "context": f"Passage 1:\nCompany {i} was founded by Ada {i}. " * 30,
            "answers": [f"Ada {i}"],
            "length": 200,
            "dataset": "hotpotqa",
            "_id": f"lb{i}",
        }
        for i in range(4)
    ]
    lb.write_text("\n".join(json.dumps(r) for r in recs) + "\n{not json}\n")
    preds = tmp_path / "p.jsonl"
    preds.write_text(
        "\n".join(
            json.dumps({"uid": f"lb{i}", "completions": [f"Therefore, the answer is Ada {i % 2}"]})
            for i in range(4)
        )
    )
    proc = evalcli("score", "--data", str(lb), "--predictions", str(preds), "--out", str(tmp_path / "o"))
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["overall"]["em"] == 0.5 and m["by_source"][0]["data_source"] == "longbench/hotpotqa"
    assert m["config"]["input_skipped"] == {"malformed:<line>": 1}
    assert m["by_length"][0]["length_bin"] in ("1ki", "2ki", "4ki") and "em = 0.500" in proc.stdout


def test_openai_backend_through_eval_run(tmp_path, shards):
    with FakeServer() as server:
        gen = GenerateConfig(
            model="served",
            backend="openai",
            backend_option=[f"url={server.url}"],
            n=2,
            temperature=0.7,
            max_tokens=8,
        )
        m = run_eval(str(shards / "kc"), tmp_path / "o", gen)
        assert server.count() >= 3
    preds = lines(tmp_path / "o" / "predictions.jsonl")
    assert len(preds) == 3 and all(len(p["completions"]) == 2 for p in preds)
    assert m["counts"]["generation_failed"] == 0


def test_bad_inputs_say_what_to_do(tmp_path, shards):
    proc = evalcli(
        "run", "--backend", "openai", "--data", str(shards / "kc"), "--out", str(tmp_path / "o"), check=False
    )
    assert proc.returncode == 2 and "needs url=" in proc.stderr
    if importlib.util.find_spec("vllm") is None:
        proc = evalcli(
            "run",
            "--backend",
            "vllm",
            "--data",
            str(shards / "kc"),
            "--out",
            str(tmp_path / "o"),
            check=False,
        )
        assert proc.returncode == 2 and "pip install 'longmill[gpu]'" in proc.stderr
    proc = evalcli(
        "run", "--backend", "vlm", "--data", str(shards / "kc"), "--out", str(tmp_path / "o"), check=False
    )
    assert proc.returncode == 2 and "did you mean 'vllm'" in proc.stderr
    proc = evalcli(
        "score",
        "--data",
        str(tmp_path / "missing"),
        "--predictions",
        str(tmp_path / "p.jsonl"),
        "--out",
        str(tmp_path / "o"),
        check=False,
    )
    assert proc.returncode == 2 and "no such folder" in proc.stderr
    proc = evalcli(
        "score",
        "--data",
        str(shards / "kc"),
        "--predictions",
        str(tmp_path / "p.jsonl"),
        "--out",
        str(tmp_path / "o"),
        "--judge-model",
        "x",
        check=False,
    )
    assert proc.returncode == 2 and "--judge-url" in proc.stderr
