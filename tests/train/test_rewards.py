"""Rewards: extraction edge cases, judge outages returning None, pickling, overlong shaping, verl's signature."""

from __future__ import annotations

import doctest
import importlib.util
import pickle

import numpy as np
import pytest

import eval.reward
import train.rewards
from eval.backends.base import GenerationBackend, GenerationError
from eval.judge import Judge, JudgeConfig
from eval.reward import compute_score
from train.rewards import HybridQAReward

from ..eval.fake_server import Action, FakeServer


def test_docstring_examples_run():
    assert doctest.testmod(train.rewards).failed == 0


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("Therefore, the answer is Ed Wood.", 1.0),
        ("<think>The answer is Tim Burton</think>Therefore, the answer is **Ed Wood**", 1.0),
        ("<think>Therefore, the answer is Ed Wood.</think> I am not sure.", 0.0),  # only reasoning says it
        (
            "The answer is Ed Wood. Hmm, no. Therefore, the answer is Tim Burton.",
            0.0,
        ),  # the last answer counts
        ("Answer: Edward D. Wood Jr.", 1.0),  # an alias
        ("\\boxed{ed wood}", 1.0),
        ("", 0.0),
        ([{"role": "assistant", "content": "Therefore, the answer is Ed Wood."}], 1.0),  # conversational
    ],
)
def test_rule_reward_on_extraction_edge_cases(completion, expected):
    r = HybridQAReward()
    assert r([completion], answers=[["Ed Wood", "Edward D. Wood Jr."]], question=["Who directed it?"]) == [
        expected
    ]


class ScriptedBackend(GenerationBackend):
    """A judge backend whose replies (or errors) are given in advance, one per prompt."""

    def __init__(self, replies):
        self.replies, self.calls = list(replies), 0

    def generate_or_errors(self, prompts, n=1, sampling=None, progress=None):
        out = self.replies[self.calls : self.calls + len(prompts)]
        self.calls += len(prompts)
        return [r if isinstance(r, GenerationError) else [r] for r in out]


def test_judge_is_asked_only_when_the_rule_misses_and_outages_give_none():
    engine = ScriptedBackend(["YES", GenerationError("endpoint", "down"), "NO", "maybe?"])
    r = HybridQAReward(judge=JudgeConfig(url="http://x/v1"), judge_factory=lambda c: Judge(engine))
    comps = [
        "Therefore, the answer is Paris.",
        "Therefore, the answer is the French capital.",
        "Therefore, the answer is Lutetia.",
        "Therefore, the answer is Lyon.",
        "Therefore, the answer is Rome.",
        "no answer here",
    ]
    metrics = {}
    out = r(
        comps,
        answers=[["Paris"]] * 6,
        question=["Capital of France?"] * 6,
        log_metric=lambda k, v: metrics.__setitem__(k, v),
    )
    assert out == [
        1.0,
        1.0,
        None,
        0.0,
        None,
        0.0,
    ]  # rule hit, judge YES, outage, NO, garbage, nothing extracted
    assert engine.calls == 4  # the rule hit and the empty answer were not sent
    assert r.stats["judge_failed"] == 2 and metrics["hybrid_qa/judge_failed"] == 2.0


def test_judge_outage_over_http_gives_none(tmp_path):
    with FakeServer(default=Action.error(503)) as server:
        cfg = JudgeConfig(url=server.url, model="judge", backend_options={"timeout": 0.3, "max_retries": 1})
        out = HybridQAReward(judge=cfg)(
            ["Therefore, the answer is Lutetia."], answers=[["Paris"]], question=["Capital?"]
        )
    assert out == [None]


def test_overlong_shaping_is_dapos_soft_punishment_and_spares_unknowns():
    engine = ScriptedBackend([GenerationError("endpoint", "down")])
    r = HybridQAReward(
        judge=JudgeConfig(url="http://x/v1"),
        judge_factory=lambda c: Judge(engine),
        max_completion_length=100,
        overlong_buffer=20,
    )
    comps = ["Therefore, the answer is Paris."] * 3 + ["Therefore, the answer is Lyon."]
    out = r(
        comps,
        answers=[["Paris"]] * 4,
        question=["q"] * 4,
        completion_ids=[[1] * 50, [1] * 90, [1] * 120, [1] * 95],
    )
    assert out == [1.0, 0.5, 0.0, None]  # 90 tokens: -0.5; over the limit: -1; the failed judge stays unknown


def test_reward_pickles_without_its_live_judge():
    engine = ScriptedBackend(["YES"] * 4)
    r = HybridQAReward("em", JudgeConfig(url="http://127.0.0.1:9/v1"), max_completion_length=64)
    r.judge_factory = None
    r._judge = Judge(engine)
    clone = pickle.loads(pickle.dumps(r))
    assert clone.__name__ == "hybrid_qa" and clone.rule == "em" and clone._judge is None
    assert clone(["Therefore, the answer is Paris"], answers=[["Paris"]], question=["q"]) == [1.0]


def test_missing_answers_column_is_a_clear_error():
    with pytest.raises(Exception, match="'answers' column"):
        HybridQAReward()(["x"])


def test_verl_compute_score_loads_from_a_file_path_like_verl_does():
    spec = importlib.util.spec_from_file_location("custom_module", eval.reward.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn = module.compute_score
    for gt in (["Ed Wood"], np.array(["Ed Wood", "Edward Wood"], dtype=object), "Ed Wood"):
        assert (
            fn("keychain/hotpotqa", "Therefore, the answer is Ed Wood.", gt, {"question": "Who?"})["score"]
            == 1.0
        )
    assert fn("keychain/hotpotqa", "I don't know", ["Ed Wood"], None) == {
        "score": 0.0,
        "acc": 0.0,
        "rule": 0.0,
        "judge_failed": 0.0,
    }


def test_verl_compute_score_with_a_judge_reports_failures():
    with FakeServer(default=Action.ok("YES")) as server:  # a lenient judge
        ok = compute_score(
            "x",
            "Therefore, the answer is the Fab Four",
            ["The Beatles"],
            {"question": "Who?"},
            judge_url=server.url,
            judge_model="j",
        )
    assert ok == {"score": 1.0, "acc": 1.0, "rule": 0.0, "judge_failed": 0.0}
    with FakeServer(default=Action.error(500)) as server:
        bad = compute_score(
            "x",
            "Therefore, the answer is Lutetia",
            ["Paris"],
            {"question": "Capital?"},
            judge_url=server.url,
            judge_model="j2",
            judge_max_retries=0,
        )
    assert bad == {"score": 0.0, "acc": 0.0, "rule": 0.0, "judge_failed": 1.0}


@pytest.mark.parametrize(
    ("rule", "completion", "expected"),
    [
        ("em", "Therefore, the answer is Ed Wood, Tim Burton, Johnny Depp.", 0.0),  # listing decoys
        ("em", "Therefore, the answer is Ed Wood or Tim Burton.", 0.0),  # hedging
        ("em", "Therefore, the answer is Ed Wood.", 1.0),
        ("bounded_sub_em", "Therefore, the answer is Ed Wood, Tim Burton, Johnny Depp.", 0.0),
        ("bounded_sub_em", "Therefore, the answer is Ed Wood or Burton.", 0.0),
        ("bounded_sub_em", "Therefore, the answer is Ed Wood (director).", 1.0),  # a little extra is fine
        (
            "sub_em",
            "Therefore, the answer is Ed Wood, Tim Burton, Johnny Depp.",
            1.0,
        ),  # the lenient option, kept
    ],
)
def test_default_rules_resist_listing_and_hedging(rule, completion, expected):
    assert HybridQAReward(rule)([completion], answers=[["Ed Wood"]], question=["Who?"]) == [expected]


def test_default_rule_is_exact_match_and_accuracy_is_logged_apart_from_the_shaped_reward():
    r = HybridQAReward(max_completion_length=100, overlong_buffer=20)
    assert (
        r.rule == "em"
        and compute_score("x", "Therefore, the answer is Ed Wood, Tim Burton.", ["Ed Wood"])["score"] == 0.0
    )
    metrics = {}
    out = r(
        ["Therefore, the answer is Paris.", "Therefore, the answer is Lyon."],
        answers=[["Paris"]] * 2,
        question=["q"] * 2,
        completion_ids=[[1] * 90, [1] * 10],
        log_metric=metrics.__setitem__,
    )
    assert out == [0.5, 0.0] and r.last_accuracy == [1.0, 0.0]  # shaped vs correct
    assert metrics["hybrid_qa/accuracy"] == 0.5
    with pytest.raises(Exception, match="did you mean 'bounded_sub_em'"):
        HybridQAReward("bounded_subem")


def test_a_row_without_rewards_is_logged_without_its_prompt(caplog):
    import logging

    from train.dapo import _NONE_FILTER

    logger = logging.getLogger("trl.trainer.grpo_trainer")
    logger.addFilter(_NONE_FILTER)
    huge = "x" * 200_000
    with caplog.at_level(logging.WARNING, logger="trl.trainer.grpo_trainer"):
        logger.warning(
            f"All reward functions returned None for the following kwargs:\n{{'prompt': '{huge}'}}\n"
        )
    assert caplog.records and len(caplog.records[-1].getMessage()) < 300
    assert "omitted" in caplog.records[-1].getMessage()
