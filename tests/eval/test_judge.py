"""The LLM judge: verdict parsing, the openai judge against a loopback server, caching, and the hf judge
with a tiny randomly initialised model built offline."""

from __future__ import annotations

import dataclasses
import json
import logging
import time

import pytest

from eval.backends.base import BACKENDS, GenerationBackend, GenerationError
from eval.backends.openai import OpenAIBackend
from eval.http import ChatClient, EndpointConfig
from eval.judge import (
    Judge,
    JudgeConfig,
    JudgeResult,
    build_judge_messages,
    make_judge,
    parse_verdict,
)
from longmill.errors import LongmillError, UnknownNameError

from .fake_server import Action, FakeServer, judge_reply


@pytest.fixture
def server():
    with FakeServer() as s:
        yield s


def judge_config(server: FakeServer, **overrides) -> JudgeConfig:
    options = dict(
        backend="openai",
        url=server.url,
        model="judge-tiny",
        timeout=0.3,
        max_retries=1,
        concurrency=4,
        api_key_env=None,
    )
    options.update(overrides)
    spec = {
        k: options.pop(k) for k in ("backend", "url", "model", "cache_path", "max_tokens") if k in options
    }
    return JudgeConfig(**spec, backend_options=options)


# -- parsing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("YES", True),
        ("NO", False),
        ("yes", True),
        ("No", False),
        ("  YES \n", True),
        ("NO.", False),
        ("**YES**", True),
        ("`no`", False),
        ("Yes!", True),
        ("'NO'", False),
        ("Verdict: YES", True),
        ("**Verdict:** no", False),
        ("verdict - Yes.", True),
        ("<think>hmm, maybe no</think>\nYES", True),
        ("", None),
        (None, None),
        ("   ", None),
        ("YES NO", None),
        ("yes, no", None),
        ("Yes it is", None),
        ("Nope", None),
        ("Yesterday", None),
        ("maybe", None),
        ("The answer is YES", None),
        ("N O", None),
        ("}{#@!", None),
        ("Verdict:", None),
        # QwenLong-L1's judge style: the verdict in double brackets after free text
        ("They are equivalent. [[YES]]", True),
        ("[[NO]]", False),
        ("Different entities.\n[[ no ]]", False),
        ("<think>compare</think>Both name Paris, so [[Yes]].", True),
        ("[[YES]] hmm, [[NO]]", None),
        ("[[MAYBE]]", None),
    ],
)
def test_parse_verdict(text, expected):
    assert parse_verdict(text) is expected


def test_prompt_names_question_golds_and_prediction_and_asks_for_one_word():
    msgs = build_judge_messages(
        "Who wrote\nHamlet?", "  Shakespeare ", ["William Shakespeare", "Shakespeare"]
    )
    assert [m["role"] for m in msgs] == ["system", "user"]
    user = msgs[1]["content"]
    assert "Question: Who wrote Hamlet?" in user  # one line per field
    assert "- William Shakespeare\n- Shakespeare" in user and "Prediction: Shakespeare" in user
    assert "exactly one word: YES or NO" in user and "YES or NO" in msgs[0]["content"]
    assert judge_reply({"messages": msgs}) == "YES"


# -- the openai judge on a loopback server ---------------------------------------------------------

ITEMS = [
    ("Capital of France?", "paris", ["Paris"]),
    ("Who wrote Hamlet?", "Marlowe", ["William Shakespeare", "Shakespeare"]),
    ("Largest planet?", "the Jupiter", ["Jupiter"]),
    ("Boiling point of water?", "100 C", ["100 °C", "212 °F"]),
]


def test_judge_many_returns_verdicts_in_order(server):
    with make_judge(judge_config(server)) as judge:
        results = judge.judge_many(ITEMS)
        stats = judge.stats
    assert [r.verdict for r in results] == [True, False, True, False]
    assert not any(r.failed or r.cached for r in results)
    assert results[0].raw == "YES" and results[0].score == 1.0 and results[1].score == 0.0
    assert stats == {
        "items": 4,
        "cache_hits": 0,
        "calls": 4,
        "verdicts": 4,
        "failures": 0,
        "failures_by_reason": {},
    }
    body = server.bodies[0]
    assert body["model"] == "judge-tiny" and body["temperature"] == 0.0 and body["max_tokens"] == 8


def test_flaky_server_failures_are_counted_and_never_false(server):
    def rule(body):
        user = body["messages"][-1]["content"]
        if "Prediction: down" in user:
            return Action.error(500, retry_after="0.01")
        if "Prediction: babble" in user:
            return Action.ok("I am not sure, it depends")
        if "Prediction: slow" in user:
            return Action.hang(5)
        return None

    server.rule = rule
    items = [
        ("q1", "paris", ["Paris"]),
        ("q2", "down", ["x"]),
        ("q3", "babble", ["y"]),
        ("q4", "slow", ["z"]),
        ("q5", "nope", ["Paris"]),
    ]
    with make_judge(judge_config(server, max_retries=2)) as judge:
        results = judge.judge_many(items)
        stats = judge.stats
        client_stats = judge.backend.client.stats
    assert [r.verdict for r in results] == [True, None, None, None, False]
    for r in results[1:4]:
        assert r.failed and r.verdict is None and r.verdict is not False and r.score is None
    assert results[1].error.startswith("endpoint:") and "HTTP 500" in results[1].error
    assert results[2].error.startswith("unparseable:") and results[2].raw == "I am not sure, it depends"
    assert results[3].error.startswith("endpoint:") and "timed out" in results[3].error
    assert stats["failures"] == 3 and stats["failures_by_reason"] == {"endpoint": 2, "unparseable": 1}
    assert stats["verdicts"] == 2
    assert client_stats["failures_by_reason"] == {"http_500": 1, "timeout": 1}
    assert server.count() == 1 + 3 + 1 + 3 + 1  # two failing items, each tried 1 + 2 retries


def test_retries_let_a_flaky_judge_recover(server):
    server.script(Action.error(500, retry_after="0.01"), Action.error(429, retry_after="0.01"))
    with make_judge(judge_config(server, max_retries=3, concurrency=1)) as judge:
        result = judge.judge("Capital of France?", "Paris", ["Paris"])
    assert result == JudgeResult(verdict=True, failed=False, error=None, cached=False, raw="YES")
    assert server.count() == 3


def test_cache_serves_repeats_without_calling_the_server(server):
    with make_judge(judge_config(server)) as judge:
        first = judge.judge_many(ITEMS)
        calls = server.count()
        second = judge.judge_many(ITEMS + [ITEMS[0]])
        stats = judge.stats
    assert server.count() == calls == 4
    assert [r.verdict for r in second] == [r.verdict for r in first] + [True]
    assert all(r.cached and not r.failed for r in second)
    assert stats["cache_hits"] == 5 and stats["calls"] == 4


def test_duplicates_in_one_batch_are_asked_once(server):
    with make_judge(judge_config(server)) as judge:
        results = judge.judge_many([ITEMS[0]] * 3 + [ITEMS[1]])
    assert server.count() == 2 and [r.verdict for r in results] == [True, True, True, False]


def test_jsonl_cache_survives_a_new_judge_and_keeps_failures_out(server, tmp_path):
    cache = tmp_path / "cache" / "judge.jsonl"
    server.rule = lambda body: (
        Action.error(500, retry_after="0.01")
        if "Prediction: down" in body["messages"][-1]["content"]
        else None
    )
    items = ITEMS + [("q", "down", ["up"])]
    with make_judge(judge_config(server, cache_path=str(cache))) as judge:
        first = judge.judge_many(items)
    assert first[-1].failed
    lines = [json.loads(line) for line in cache.read_text().splitlines()]
    assert len(lines) == 4 and {rec["model"] for rec in lines} == {"judge-tiny"}  # the failure is not cached
    asked = server.count()

    with make_judge(judge_config(server, cache_path=str(cache))) as judge:
        again = judge.judge_many(items)
        stats = judge.stats
    assert [r.verdict for r in again[:4]] == [True, False, True, False]
    assert all(r.cached for r in again[:4]) and again[-1].failed and not again[-1].cached
    assert stats["cache_hits"] == 4 and stats["calls"] == 1
    assert server.count() == asked + 2  # only the failed item was asked again (1 + 1 retry)

    # a different judge model does not trust these verdicts; a torn last line is skipped
    with cache.open("a") as f:
        f.write('{"question": "torn')
    with make_judge(judge_config(server, cache_path=str(cache), model="other-judge")) as judge:
        judge.judge_many(ITEMS[:1])
        assert judge.stats["cache_hits"] == 0


def test_a_torn_cache_line_does_not_swallow_the_next_verdict(server, tmp_path):
    """A killed run leaves a torn last line; the next verdict starts on a line of its own, so the next
    load reads it (glued onto the torn line, it would be unreadable and lost)."""
    cache = tmp_path / "judge.jsonl"
    with make_judge(judge_config(server, cache_path=str(cache))) as judge:
        judge.judge_many(ITEMS[:1])
    with cache.open("a") as f:
        f.write('{"question": "torn')  # the kill
    with make_judge(judge_config(server, cache_path=str(cache))) as judge:
        judge.judge_many(ITEMS[1:2])
        assert judge.stats["cache_skipped"] == 1
    asked = server.count()
    with make_judge(judge_config(server, cache_path=str(cache))) as judge:
        again = judge.judge_many(ITEMS[:2])
    assert all(r.cached for r in again) and server.count() == asked
    assert [r.verdict for r in again] == [True, False]


def test_a_cache_line_that_is_not_utf8_is_skipped_and_counted(server, tmp_path):
    cache = tmp_path / "judge.jsonl"
    with make_judge(judge_config(server, cache_path=str(cache))) as judge:
        judge.judge_many(ITEMS[:2])
    lines = cache.read_bytes().splitlines(keepends=True)
    cache.write_bytes(lines[0] + b'{"question": "caf\xe9", "verdict": true}\n' + lines[1])
    with make_judge(judge_config(server, cache_path=str(cache))) as judge:
        again = judge.judge_many(ITEMS[:2])
        stats = judge.stats
    assert all(r.cached for r in again) and stats["cache_skipped"] == 1 and stats["calls"] == 0


def test_failures_are_logged_rate_limited(server, caplog):
    server.default = Action.ok("garbage")
    items = [(f"q{i}", f"p{i}", ["g"]) for i in range(40)]
    with caplog.at_level(logging.WARNING, logger="eval.judge"):
        with make_judge(judge_config(server, concurrency=8)) as judge:
            results = judge.judge_many(items)
    assert all(r.failed and r.verdict is None for r in results)
    assert judge.stats["failures_by_reason"] == {"unparseable": 40}
    warnings = [r for r in caplog.records if r.name == "eval.judge"]
    assert 1 <= len(warnings) <= 5


def test_bad_items_and_configs_are_clear_errors(server):
    with make_judge(judge_config(server)) as judge:
        with pytest.raises(LongmillError, match="item 1: golds"):
            judge.judge_many([ITEMS[0], ("q", "p", "Paris")])
        with pytest.raises(LongmillError, match="item 0: golds"):
            judge.judge_many([("q", "p", [])])
        with pytest.raises(LongmillError, match="missing prediction"):
            judge.judge_many([("q", None, ["a"])])
    with pytest.raises(LongmillError, match="vllm serve"):
        JudgeConfig(backend="openai", url=None)
    with pytest.raises(UnknownNameError, match="did you mean 'openai'"):
        JudgeConfig(backend="opnai", url="http://127.0.0.1:1/v1")
    with pytest.raises(LongmillError, match="concurrency"):
        JudgeConfig(url="http://127.0.0.1:1/v1", backend_options={"concurrency": 0})


class _ScriptedBackend(GenerationBackend):
    """A generation backend whose replies (or errors) are given in advance, one per prompt."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.seen = 0

    def generate_or_errors(self, prompts, n=1, sampling=None, progress=None):
        out = self.replies[self.seen : self.seen + len(prompts)]
        self.seen += len(prompts)
        return [r if isinstance(r, GenerationError) else [r] for r in out]


def test_judge_on_any_backend_counts_each_failure_reason():
    judge = Judge(_ScriptedBackend(["YES", GenerationError("generation", "out of memory"), "no.", "?"]))
    results = judge.judge_many([(f"q{i}", "p", ["g"]) for i in range(4)])
    assert [(r.verdict, r.failed, r.reason) for r in results] == [
        (True, False, None),
        (None, True, "generation"),
        (False, False, None),
        (None, True, "unparseable"),
    ]
    assert judge.stats["failures_by_reason"] == {"generation": 1, "unparseable": 1}


def test_the_openai_backend_can_take_an_injected_client(server):
    server.script(Action.error(503, retry_after="0.05"))
    config = EndpointConfig(url=server.url, model="m", timeout=0.3, max_retries=1, api_key_env=None)
    judge = Judge(OpenAIBackend("m", client=ChatClient(config)), model="m")
    with judge:
        assert judge.judge("Capital of France?", "Paris", ["Paris"]).verdict is True
    assert server.count() == 2


def test_a_down_judge_fails_fast_through_the_breaker_and_recovers(server):
    """Issue 10 §6: a hanging judge must not stall training; calls fail (None) quickly while it is down."""
    server.default = Action.hang(30)
    now = [0.0]
    items = [(f"q{i}", f"p{i}", ["g"]) for i in range(40)]
    config = EndpointConfig(
        url=server.url,
        model="m",
        timeout=0.2,
        max_retries=0,
        concurrency=4,
        breaker_failures=4,
        breaker_cooldown=60,
        api_key_env=None,
    )
    with Judge(OpenAIBackend("m", client=ChatClient(config, clock=lambda: now[0])), model="m") as judge:
        start = time.monotonic()
        results = judge.judge_many(items)
        first = time.monotonic() - start
        start = time.monotonic()
        again = judge.judge_many(items[:8])
        second = time.monotonic() - start
        assert all(r.failed and r.verdict is None for r in results + again)
        assert first < 3 and second < 0.5  # one round of timeouts, then the breaker answers at once
        client = judge.backend.client
        assert server.count() <= 8 and client.stats["short_circuited"] >= 32
        assert judge.stats["failures_by_reason"] == {"endpoint": 48}
        assert "circuit" in again[0].error
        server.default = Action.ok()  # the judge is back; after the cooldown one probe closes the breaker
        now[0] = 61.0
        back = judge.judge_many([("Capital of France?", "paris", ["Paris"]), ("Who?", "Bob", ["Alice"])])
        assert [r.verdict for r in back] == [True, False]


def test_max_wait_bounds_a_judge_batch(server):
    server.default = Action.hang(30)
    with make_judge(
        judge_config(server, timeout=10, max_retries=2, max_wait=0.4, breaker_failures=0)
    ) as judge:
        start = time.monotonic()
        results = judge.judge_many(ITEMS)
    assert time.monotonic() - start < 2
    assert all(r.failed and "max_wait" in r.error for r in results)


def test_judge_config_keeps_secrets_out_of_reprs_and_summaries(server, monkeypatch):
    monkeypatch.setenv("LONGMILL_JUDGE_KEY", "sk-judge-secret")
    url = server.url.replace("http://", "http://bob:hunter22@")
    keyed = JudgeConfig(url=server.url, backend_options={"api_key_env": "LONGMILL_JUDGE_KEY"})
    assert keyed.endpoint().api_key == "sk-judge-secret"
    cfg = JudgeConfig(url=url, backend_options={"api_key_env": None})
    text = repr(keyed) + repr(cfg).replace(url, "") + json.dumps(cfg.summary()) + json.dumps(keyed.summary())
    assert "sk-judge-secret" not in text and "hunter22" not in text and "***@" in cfg.summary()["url"]


# -- the in-process hf judge with a tiny random model ---------------------------------------------


@pytest.fixture(scope="module")
def tiny_judge_model(tiny_qwen2):
    """The tiny-qwen2 preset: random weights behind the real Qwen2.5 tokenizer and chat template."""
    return str(tiny_qwen2)


def test_hf_judge_with_a_tiny_random_model_fails_cleanly(tiny_judge_model):
    config = JudgeConfig(
        backend="hf", model=tiny_judge_model, max_tokens=4, backend_options={"device": "cpu", "batch_size": 2}
    )
    items = [
        ("Capital of France?", "Paris", ["Paris"]),
        ("Who?", "Bob", ["Alice"]),
        ("Who?", "Alice", ["Alice"]),
    ]
    with make_judge(config) as judge:
        results = judge.judge_many(items)
        again = judge.judge_many(items)
        stats = judge.stats
    for r in results:
        # each verdict is what the model's own reply says: a reply that is neither YES nor NO is a failure
        # (reason unparseable), never a NO, and a YES/NO reply is never a failure
        assert isinstance(r, JudgeResult) and isinstance(r.raw, str)
        assert r.verdict == parse_verdict(r.raw) and r.failed == (r.verdict is None)
        assert r.reason == ("unparseable" if r.failed else None)
    failed = sum(r.failed for r in results)
    assert stats["failures_by_reason"] == ({"unparseable": 2 * failed} if failed else {})
    assert failed >= 1  # a random model says garbage (fixed seed), and garbage is never a NO
    assert sum(r.cached for r in again) == len(items) - failed  # only verdicts are cached


def test_hf_judge_names_a_missing_model(tmp_path):
    with pytest.raises(LongmillError, match="cannot load model"):
        make_judge(JudgeConfig(backend="hf", model=str(tmp_path / "nope")))


# -- the judge on eval's generation-backend registry ----------------------------------------------


class _EchoBackend(GenerationBackend):
    """A registered generation backend that says YES when the prediction is in the prompt's gold lines."""

    name = "test-echo"
    Options = dataclasses.make_dataclass("EchoOptions", [("verdict", str, "YES"), ("fail_on", str, "")])

    def __init__(self, model, *, verdict="YES", fail_on=""):
        self.model, self.verdict, self.fail_on = model, verdict, fail_on
        self.calls, self.closed = [], False

    def generate(self, prompts, n=1, sampling=None, progress=None):
        self.calls.append((len(prompts), n, sampling))
        return [
            None if self.fail_on and self.fail_on in p[-1]["content"] else [self.verdict] * n for p in prompts
        ]

    def close(self):
        self.closed = True


@pytest.fixture
def echo_backend():
    BACKENDS.add(_EchoBackend.name, _EchoBackend)
    try:
        yield _EchoBackend
    finally:
        BACKENDS._items.pop(_EchoBackend.name)


def test_the_judge_runs_on_any_registered_generation_backend(echo_backend):
    cfg = JudgeConfig(
        backend="test-echo", model="m", max_tokens=3, backend_options={"fail_on": "Prediction: bad"}
    )
    with make_judge(cfg) as judge:
        results = judge.judge_many([("q", "good", ["g"]), ("q", "bad", ["g"])])
        backend = judge.backend
    assert isinstance(backend, echo_backend) and backend.closed
    assert [(r.verdict, r.reason) for r in results] == [(True, None), (None, "generation")]
    ((count, n, sampling),) = backend.calls
    assert (count, n, sampling.temperature, sampling.max_tokens) == (2, 1, 0.0, 3)
    assert judge.stats["failures_by_reason"] == {"generation": 1}


def test_judge_backends_are_the_generation_backends_and_check_their_options():
    JudgeConfig(backend="vllm", model="Qwen/Qwen2.5-1.5B-Instruct")  # no second registry: vllm is a judge too
    JudgeConfig(backend="hf", model="tiny-qwen2", backend_options={"dtype": "float32"})
    with pytest.raises(UnknownNameError, match="did you mean 'dtype'"):
        JudgeConfig(backend="hf", model="tiny-qwen2", backend_options={"dtyp": "float32"})
    with pytest.raises(UnknownNameError, match="did you mean 'gpu_memory_utilization'"):
        JudgeConfig(backend="vllm", model="m", backend_options={"gpu_mem_utilization": 0.3})
