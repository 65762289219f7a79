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

from .fake_server import Action, FakeServer


def item(i: int, answers: list[str], length: int = 20_000, depth: float = 0.1) -> EvalItem:
    return EvalItem(uid=f"u{i}", data_source="keychain/toy" if i % 2 else "longqa/toy",
                    prompt=[{"role": "user", "content": f"q{i}"}], question=f"Question {i}?", answers=answers,
                    prompt_tokens=length - 10, length_target=length, gold_depth=depth)


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
    items = [item(0, ["Paris"]), item(1, ["Velora Quint"], 40_000, 0.7), item(2, ["1912"]), item(3, ["blue"], 40_000, 0.5),
             item(4, ["Nile"])]
    preds = {
        "u0": ["Therefore, the answer is Paris."],                   # EM hit: the judge is not asked
        "u1": ["Therefore, the answer is velora  quint!"],          # EM hit after normalisation
        "u2": ["Therefore, the answer is FLAKY"],                   # the judge fails (500s): unknown
        "u3": ["Therefore, the answer is GARBLED"],                 # unparseable verdict: unknown
        "u4": ["I do not know."],                                   # nothing extracted: wrong, judge not asked
    }
    judge = JudgeConfig(url=flaky.url, model="judge", timeout=0.5, max_retries=1, backoff_base=0.01, backoff_cap=0.02)
    m = score_run(items, write_preds(tmp_path / "p.jsonl", preds), tmp_path / "out", judge, {})
    c = m["counts"]
    assert c["judge_calls"] == 2 and c["judge_failed"] == 2
    assert c["judge"]["failures_by_reason"] == {"endpoint": 1, "unparseable": 1}
    o = m["overall"]
    assert o["em"] == pytest.approx(2 / 5)
    # max(EM, judge) is known for u0, u1 (EM) and u4 (no answer: 0) and unknown for u2, u3.
    assert o["max_em_judge"] == pytest.approx(2 / 3) and o["max_em_judge_unknown"] == 2
    assert o["judge_unknown"] == 2
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["counts"]["judge_failed"] == 2
    # The group-by over data_source x length x depth, not metric names that encode lengths.
    groups = {(g["data_source"], g["length_bin"], g["depth_bin"]): g for g in saved["groups"]}
    assert groups[("keychain/toy", "40k", "0.6-0.8")]["n"] == 1
    assert not [k for k in saved["overall"] if re.search(r"\d{3,}|\dk", k)]
    table = pl.read_parquet(tmp_path / "out" / "samples.parquet")
    assert table.filter(pl.col("uid") == "u2")["max_em_judge"].to_list() == [None]
    assert (tmp_path / "out" / "plots" / "accuracy_vs_length.png").stat().st_size > 1000
    assert "judge call(s) failed" in (tmp_path / "out" / "report.md").read_text()


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
