"""Scoring against a flaky judge server on loopback: failures are counted, never scored as wrong."""

from __future__ import annotations

import json
import re

import polars as pl
import pytest

from eval.data import EvalItem
from eval.judge import JudgeConfig
from eval.run import score_run
from eval.scoring import read_predictions
from longmill.errors import LongmillError

from .fake_server import Action, FakeServer


def item(i: int, answers: list[str], length: int = 20_000, depth: float = 0.1) -> EvalItem:
    return EvalItem(
        uid=f"u{i}",
        data_source="keychain/toy" if i % 2 else "longqa/toy",
        prompt=[{"role": "user", "content": f"q{i}"}],
        question=f"Question {i}?",
        answers=answers,
        prompt_tokens=length - 10,
        length_target=length,
        gold_depth=depth,
    )


@pytest.fixture()
def flaky():
    def rule(body):
        user = body["messages"][-1]["content"]
        if "Prediction: FLAKY" in user:
            return Action.error(500)
        if "Prediction: GARBLED" in user:
            return Action.ok("Well, it depends.")
        return None  # the judge mode of the fake server: YES iff normalised equal

    with FakeServer(rule=rule) as server:
        yield server


def write_preds(path, preds):
    path.write_text("".join(json.dumps({"uid": u, "completions": c}) + "\n" for u, c in preds.items()))
    return path


def test_flaky_judge_run_completes_and_counts_failures(tmp_path, flaky):
    items = [
        item(0, ["Paris"]),
        item(1, ["Velora Quint"], 40_000, 0.7),
        item(2, ["1912"]),
        item(3, ["blue"], 40_000, 0.5),
        item(4, ["Nile"]),
    ]
    preds = {
        "u0": ["Therefore, the answer is Paris."],  # EM hit: the judge is not asked
        "u1": ["Therefore, the answer is velora  quint!"],  # EM hit after normalisation
        "u2": ["Therefore, the answer is FLAKY"],  # the judge fails (500s): rule score
        "u3": ["Therefore, the answer is GARBLED"],  # unparseable verdict: rule score
        "u4": ["I do not know."],  # nothing extracted: wrong, judge not asked
    }
    judge = JudgeConfig(
        url=flaky.url, model="judge", backend_options={"timeout": 0.5, "max_retries": 1, "api_key_env": None}
    )
    m = score_run(
        items, write_preds(tmp_path / "p.jsonl", preds), tmp_path / "out", judge, {}, max_judge_failures=0.05
    )
    c = m["counts"]
    assert c["judge_calls"] == 2 and c["judge_failed"] == 2
    assert c["judge"]["failures_by_reason"] == {"endpoint": 1, "unparseable": 1}
    o = m["overall"]
    assert o["n"] == 5 and o["em"] == pytest.approx(2 / 5)
    # A failed judge call keeps its rule score (0 here) in every mean: never 2/3 by dropping u2 and u3.
    assert o["max_em_judge"] == pytest.approx(2 / 5) and o["judge"] == pytest.approx(2 / 5)
    assert o["max_em_judge_bound"] == pytest.approx(4 / 5) and o["judge_failed"] == 2
    assert not [k for k in o if k.endswith("_unknown")]
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["counts"]["judge_failed"] == 2 and saved["config"]["max_judge_failures"] == 0.05
    assert saved["problems"] and "failed on 2 of 2 calls (100%)" in saved["problems"][0]
    # The group-by over data_source x length x depth, not metric names that encode lengths.
    groups = {(g["data_source"], g["length_bin"], g["depth_bin"]): g for g in saved["groups"]}
    assert groups[("keychain/toy", "40k", "0.6-0.8")]["n"] == 1
    assert groups[("keychain/toy", "40k", "0.6-0.8")]["judge_failed"] == 0
    assert groups[("keychain/toy", "40k", "0.4-0.6")]["judge_failed"] == 1
    assert not [k for k in saved["overall"] if re.search(r"\d{3,}|\dk", k)]
    table = pl.read_parquet(tmp_path / "out" / "samples.parquet")
    assert table.filter(pl.col("uid") == "u2")["max_em_judge"].to_list() == [0.0]
    assert table.filter(pl.col("uid") == "u2")["judge_failed"].to_list() == [1]
    assert (tmp_path / "out" / "plots" / "accuracy_vs_length.png").stat().st_size > 1000
    report = (tmp_path / "out" / "report.md").read_text()
    assert "2 of 2 judge call(s) failed" in report and "at most 0.800" in report and "## Problems" in report


def test_a_judge_that_is_down_never_raises_the_score(tmp_path):
    """Issue 9.1: em 0.46 but max_em_judge 0.72 with the judge 100% down. Now they are equal."""
    items = [item(i, [f"answer {i}"]) for i in range(10)]
    preds = {f"u{i}": [f"Therefore, the answer is {'answer' if i < 4 else 'wrong'} {i}"] for i in range(10)}
    with FakeServer(default=Action.error(503, retry_after="0.01")) as server:
        judge = JudgeConfig(
            url=server.url,
            model="judge",
            backend_options={"timeout": 0.5, "max_retries": 1, "api_key_env": None},
        )
        m = score_run(items, write_preds(tmp_path / "p.jsonl", preds), tmp_path / "out", judge, {})
    o = m["overall"]
    assert o["em"] == pytest.approx(0.4) and o["max_em_judge"] == pytest.approx(0.4) and o["n"] == 10
    assert o["max_em_judge_bound"] == pytest.approx(1.0) and m["counts"]["judge_failed"] == 6
    assert m["overall"]["pass@1"] == pytest.approx(0.4)  # pass@k counts failed calls at the rule too
    assert "problems" not in m  # no threshold given to score_run


def test_judge_rescues_paraphrases_and_cache_is_reused(tmp_path):
    items = [item(0, ["The Beatles"]), item(1, ["1912"])]
    preds = {"u0": ["Therefore, the answer is Beatles band"], "u1": ["Therefore, the answer is 1913"]}

    def rule(body):  # a lenient judge: YES for the Beatles paraphrase
        return Action.ok("YES" if "Beatles band" in body["messages"][-1]["content"] else "NO")

    with FakeServer(rule=rule) as server:
        cfg = JudgeConfig(url=server.url, model="judge", cache_path=str(tmp_path / "cache.jsonl"))
        m = score_run(items, write_preds(tmp_path / "p.jsonl", preds), tmp_path / "a", cfg, {})
        assert m["overall"]["max_em_judge"] == pytest.approx(0.5) and m["overall"]["em"] == 0.0
        first = server.count()
        score_run(items, tmp_path / "p.jsonl", tmp_path / "b", cfg, {})
        assert server.count() == first  # every verdict came from the JSONL cache


def test_pass_at_k_with_several_completions(tmp_path):
    items = [item(0, ["a"]), item(1, ["b"])]
    preds = {"u0": ["Answer: a", "Answer: x", "Answer: a", "Answer: y"], "u1": ["Answer: z"] * 4}
    m = score_run(items, write_preds(tmp_path / "p.jsonl", preds), tmp_path / "o", None, {})
    assert m["overall"]["pass@1"] == pytest.approx((2 / 4 + 0) / 2)
    assert m["overall"]["pass@2"] == pytest.approx((1 - 1 / 6) / 2)
    assert m["overall"]["pass@4"] == pytest.approx(0.5)
    assert "judge" not in m["overall"] and m["primary_metric"] == "em"


def test_generation_failures_are_not_scored(tmp_path):
    items = [item(0, ["a"]), item(1, ["b"]), item(2, ["c"])]
    preds = {"u0": ["Answer: a"], "u1": None}
    m = score_run(items, write_preds(tmp_path / "p.jsonl", preds), tmp_path / "o", None, {})
    assert m["counts"]["generation_failed"] == 1 and m["counts"]["missing_predictions"] == 1
    assert m["overall"]["n"] == 1 and m["overall"]["em"] == 1.0


def test_bad_predictions_file_names_the_line(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"uid": "u0", "completions": ["x"]}\n{"uid": "u1", "completions": "oops"}\n{"uid": "u2"}\n')
    with pytest.raises(Exception, match="line 2: field 'completions'"):
        read_predictions(p)
    p.write_text('{"uid": "u0", "completions": ["x"]}\n{"uid": "u1", "compl')  # a torn last line
    assert list(read_predictions(p)) == ["u0"]


def test_duplicate_unknown_and_empty_predictions_are_reported(tmp_path):
    items = [item(0, ["a"]), item(1, ["b"])]
    dup = tmp_path / "dup.jsonl"
    dup.write_text(
        '{"uid": "u0", "completions": ["Answer: a"]}\n{"uid": "u1", "completions": ["Answer: b"]}\n'
        '{"uid": "u0", "completions": ["Answer: z"]}\n'
    )
    with pytest.raises(LongmillError, match="line 3: uid 'u0' already has predictions on line 1"):
        score_run(items, dup, tmp_path / "o1", None, {})
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(LongmillError, match="empty"):
        score_run(items, empty, tmp_path / "o2", None, {})
    extra = write_preds(
        tmp_path / "extra.jsonl",
        {"u0": ["Answer: a"], "u1": ["Answer: x"], "zz": ["Answer: a"], "yy": ["Answer: b"]},
    )
    m = score_run(items, extra, tmp_path / "o3", None, {})
    assert m["counts"]["unknown_uids"] == 2 and m["counts"]["unknown_uids_first"] == ["zz", "yy"]
    assert m["counts"]["predictions"] == 4 and m["overall"]["n"] == 2 and m["overall"]["em"] == 0.5
    assert "unknown_uids 2" in (tmp_path / "o3" / "report.md").read_text()


def longbench_file(path, n):
    recs = [
        {
            "input": f"Who founded company {i}?",
            "context": f"Company {i} was founded by Ada {i}. " * 5,
            "answers": [f"Ada {i}"],
            "dataset": "hotpotqa",
            "_id": f"lb{i}",
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def evalcli(*args):
    from eval.cli import main

    from ..cli import run_cli

    return run_cli(main, *map(str, args), prog_name="python -m eval")


def test_missing_predictions_fail_unless_partial_scoring_is_asked_for(tmp_path):
    data = longbench_file(tmp_path / "lb.jsonl", 12)
    preds = write_preds(
        tmp_path / "p.jsonl", {f"lb{i}": [f"Therefore, the answer is Ada {i}."] for i in range(0, 12, 2)}
    )
    base = ["score", "--data", data, "--predictions", preds]
    proc = evalcli(*base, "--out", tmp_path / "strict")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "em = 1.000 over 6 of 12 (coverage 50.0%) samples" in proc.stdout
    assert "6 of 12 items have no prediction (first: lb1)" in proc.stderr and "--allow-partial" in proc.stderr
    m = json.loads((tmp_path / "strict" / "metrics.json").read_text())
    assert "6 of 12 items have no prediction" in m["problems"][0] and m["counts"]["coverage"] == 0.5
    proc = evalcli(*base, "--out", tmp_path / "partial", "--allow-partial")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = (tmp_path / "partial" / "report.md").read_text()
    assert "over 6 samples of 12 items (coverage 50.0%: 6 have no prediction; a partial score)" in report
    m = json.loads((tmp_path / "partial" / "metrics.json").read_text())
    assert "problems" not in m and m["config"]["allow_partial"] is True and m["counts"]["scored"] == 6


def test_a_predictions_line_that_is_not_utf8_is_skipped_and_counted(tmp_path):
    data = longbench_file(tmp_path / "lb.jsonl", 3)
    preds = tmp_path / "p.jsonl"
    preds.write_bytes(
        b'{"uid": "lb0", "completions": ["Therefore, the answer is Ada 0."]}\n'
        b'{"uid": "lb1", "completions": ["Therefore, the answer is Ad\xe9 1."]}\n'
        b'{"uid": "lb2", "completions": ["Therefore, the answer is Ada 2."]}\n'
    )
    proc = evalcli("score", "--data", data, "--predictions", preds, "--out", tmp_path / "o")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "1 of 3 items have no prediction (first: lb1)" in proc.stderr
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["config"]["predictions_skipped"] == {"malformed:<line>": 1}
    assert m["overall"]["n"] == 2 and m["overall"]["em"] == 1.0


def test_the_judge_batch_deadline_holds_end_to_end(tmp_path):
    """A judge answering 429 with Retry-After: 100 under --judge-backend-option timeout=5,max_wait=20: the SDK
    would sleep 100 s in each worker and the process would wait for them at exit (this test measured
    104 s before the fix). A real `python -m eval score` process, timed from start to exit."""
    import subprocess
    import sys
    import time

    data = longbench_file(tmp_path / "lb.jsonl", 4)
    preds = write_preds(tmp_path / "p.jsonl", {f"lb{i}": ["Therefore, the answer is Bea."] for i in range(4)})
    with FakeServer(default=Action.error(429, retry_after="100")) as judge:
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "eval", "score", "--data", str(data), "--predictions", str(preds),
             "--out", str(tmp_path / "o"), "--judge-url", judge.url,
             "--judge-backend-option", "timeout=5,max_wait=20,api_key_env="],
            capture_output=True,
            text=True,
            timeout=300,
        )  # fmt: skip
        took = time.monotonic() - start
    assert proc.returncode == 1 and "judge failed on 4 of 4 calls" in proc.stderr, proc.stderr
    assert took < 15, f"eval score took {took:.1f}s (judge timeout 5 s, max wait 20 s)"
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["counts"]["judge"]["failures_by_reason"] == {"endpoint": 4}
