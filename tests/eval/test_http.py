"""ChatClient and the openai generation backend against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time

import pytest

from eval.backends.base import BACKENDS, SamplingParams
from eval.backends.openai import OpenAIBackend
from eval.http import ChatClient, ChatRequest, EndpointConfig, EndpointError
from longmill.errors import LongmillError

from .fake_server import Action, FakeServer

MSG = [{"role": "user", "content": "hello"}]


def make_client(server: FakeServer, **overrides) -> ChatClient:
    options = dict(url=server.url, model="tiny", timeout=0.3, max_retries=3, concurrency=4, api_key_env=None)
    options.update(overrides)
    return ChatClient(EndpointConfig(**options))


def fast_error(status: int = 500) -> Action:
    """An error whose Retry-After makes the SDK retry after 10 ms instead of its 0.5 s backoff."""
    return Action.error(status, retry_after="0.01")


def test_chat_sends_an_openai_body_and_returns_contents(server):
    server.script(Action.ok("hi there"))
    with make_client(server, api_key="sekret") as client:
        out = client.chat(MSG, n=1, temperature=0.5, top_p=0.9, max_tokens=7, seed=3, stop=["\n"], top_k=5)
        stats = client.stats
    assert out == ["hi there"]
    rec = server.requests[0]
    assert rec.path == "/v1/chat/completions"
    assert rec.headers["Authorization"] == "Bearer sekret"
    assert rec.body == {
        "model": "tiny",
        "messages": MSG,
        "n": 1,
        "temperature": 0.5,
        "top_p": 0.9,
        "max_tokens": 7,
        "seed": 3,
        "stop": ["\n"],
        "top_k": 5,
    }
    assert stats["attempts"] == 1 and stats["retries"] == 0 and stats["succeeded"] == 1


def test_the_key_comes_from_the_environment_or_is_not_sent(server, monkeypatch):
    monkeypatch.setenv("LONGMILL_TEST_JUDGE_KEY", "from-env")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with make_client(server, api_key_env="LONGMILL_TEST_JUDGE_KEY") as client:
        client.chat(MSG)
    with make_client(server, api_key_env="OPENAI_API_KEY") as client:  # unset: no key, no header
        client.chat(MSG)
    monkeypatch.setenv("OPENAI_API_KEY", "openai-env")
    with make_client(server, api_key_env="OPENAI_API_KEY") as client:
        client.chat(MSG)
    auth = [r.headers.get("Authorization") for r in server.requests]
    assert auth == ["Bearer from-env", None, "Bearer openai-env"]
    with pytest.raises(LongmillError, match=r"\$LONGMILL_NOT_SET, which is not set"):
        EndpointConfig(url=server.url, model="m", api_key_env="LONGMILL_NOT_SET")


def test_retries_5xx_then_succeeds_through_the_sdk(server):
    server.script(fast_error(500), fast_error(503), fast_error(502), Action.ok("done"))
    with make_client(server) as client:
        assert client.chat(MSG) == ["done"]
        stats = client.stats
    assert server.count() == 4
    assert stats["attempts"] == 4 and stats["retries"] == 3 and stats["failures"] == 0
    assert [r.headers.get("x-stainless-retry-count") for r in server.requests] == ["0", "1", "2", "3"]


def test_429_retry_after_is_honoured(server):
    server.script(Action.error(429, retry_after="0.3"), Action.ok("ok"))
    start = time.monotonic()
    with make_client(server) as client:
        assert client.chat(MSG) == ["ok"]
    assert 0.3 <= time.monotonic() - start < 2


def test_hanging_server_times_out_is_counted_and_fails(server):
    server.default = Action.hang(10)
    start = time.monotonic()
    with make_client(server, timeout=0.3, max_retries=1) as client:
        with pytest.raises(EndpointError) as info:
            client.chat(MSG)
        stats = client.stats
    assert time.monotonic() - start < 3
    err = info.value
    assert err.reason == "timeout" and err.attempts == 2 and server.count() == 2
    assert server.url in str(err) and "timed out" in str(err) and "2 attempt" in str(err)
    assert stats["failures_by_reason"] == {"timeout": 1} and stats["failures"] == 1 and stats["attempts"] == 2


@pytest.mark.parametrize("garbage", [Action.not_json(), Action.no_choices(), Action.ok(choices=0)])
def test_garbage_200_fails_without_retry(server, garbage):
    server.default = garbage
    with make_client(server, max_retries=2) as client:
        with pytest.raises(EndpointError) as info:
            client.chat(MSG)
    assert info.value.reason == "bad_response" and info.value.status == 200
    assert server.count() == 1  # the server answered; asking again would get the same


def test_400_is_not_retried(server):
    server.default = Action.error(400)
    with make_client(server) as client:
        with pytest.raises(EndpointError) as info:
            client.chat(MSG)
    assert server.count() == 1
    assert info.value.status == 400 and info.value.attempts == 1
    assert "HTTP 400" in str(info.value) and "not retryable" in str(info.value)


def test_connection_refused_is_retried_then_fails():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # nothing listens on the port any more
    config = EndpointConfig(url=f"http://127.0.0.1:{port}/v1", model="m", timeout=0.3, max_retries=1)
    with ChatClient(config) as client:
        with pytest.raises(EndpointError) as info:
            client.chat(MSG)
        assert client.stats["attempts"] == 2
    assert info.value.reason == "connect" and info.value.attempts == 2
    assert "vllm serve" in str(info.value)


def test_chat_many_bounds_concurrency_and_keeps_order(server):
    server.default = Action.ok(delay=0.03)
    reqs = [ChatRequest(messages=[{"role": "user", "content": f"prompt {i}"}]) for i in range(16)]
    ticks = []
    with make_client(server, concurrency=3) as client:
        out = client.chat_many(reqs, progress=ticks.append)
    assert [o[0].split("|")[0] for o in out] == [f"prompt {i}" for i in range(16)]
    assert 2 <= server.max_in_flight <= 3
    assert sum(ticks) == 16


def test_chat_many_returns_errors_in_place_and_never_raises(server):
    def rule(body):
        text = body["messages"][-1]["content"]
        return Action.error(400) if "bad" in text else (fast_error(500) if "flaky" in text else None)

    server.rule = rule
    reqs = [{"messages": [{"role": "user", "content": c}]} for c in ["a", "bad", "b", "flaky", "c"]]
    with make_client(server, max_retries=1) as client:
        out = client.chat_many(reqs)
        stats = client.stats
    assert [isinstance(o, EndpointError) for o in out] == [False, True, False, True, False]
    assert out[1].reason == "http_400" and out[1].attempts == 1
    assert out[3].reason == "http_500" and out[3].attempts == 2
    assert out[4][0].startswith("c|")
    assert stats["requests"] == 5 and stats["failures"] == 2 and stats["succeeded"] == 3


def test_a_hanging_server_cannot_stall_chat_many_past_max_wait(server):
    server.default = Action.hang(30)
    reqs = [ChatRequest(messages=[{"role": "user", "content": f"p{i}"}]) for i in range(6)]
    start = time.monotonic()
    with make_client(server, timeout=20, max_retries=3, max_wait=0.5, concurrency=2) as client:
        out = client.chat_many(reqs)
        stats = client.stats
    assert time.monotonic() - start < 2.5
    assert all(isinstance(o, EndpointError) and o.reason == "deadline" for o in out)
    assert stats["failures_by_reason"]["deadline"] == 6


def test_a_retry_after_longer_than_an_attempt_is_not_waited_for(server):
    """The SDK honours Retry-After up to 120 s, sleeping in the worker; a wait beyond one attempt's
    timeout (or the batch's time left) fails the request at once instead."""
    server.default = Action.error(429, retry_after="100")
    reqs = [ChatRequest(messages=[{"role": "user", "content": f"p{i}"}]) for i in range(3)]
    start = time.monotonic()
    with make_client(server, timeout=5, max_retries=2, max_wait=20, concurrency=2) as client:
        out = client.chat_many(reqs)
    assert time.monotonic() - start < 5  # not the 20 s max_wait, nor the 100 s asked for
    assert all(isinstance(o, EndpointError) and o.reason == "http_429" for o in out)
    assert "asked to retry after 100s" in str(out[0]) and out[0].attempts == 1
    assert server.count() == 3  # no retry was sent
    server.default = Action.error(429, retry_after="0.05")  # a short wait is still honoured
    with make_client(server, timeout=5, max_retries=1, max_wait=20) as client:
        assert client.chat_many(reqs[:1])[0].attempts == 2


def test_no_attempt_starts_after_the_batch_deadline(server):
    server.default = Action.hang(30)
    reqs = [ChatRequest(messages=[{"role": "user", "content": f"p{i}"}]) for i in range(2)]
    with make_client(server, timeout=0.4, max_retries=5, max_wait=0.6, concurrency=2) as client:
        out = client.chat_many(reqs)
        time.sleep(3.0)  # the SDK's retries (0.4 s attempts, 0.5 s, 1 s, 2 s backoff) would go on
        stats = client.stats
    assert all(o.reason == "deadline" for o in out)
    assert server.count() == 2 and stats["attempts"] == 2  # the first attempts only
    assert stats["failures_by_reason"] == {"deadline": 2}  # counted once, by the batch


def test_the_process_does_not_wait_for_abandoned_requests_at_exit(server):
    """After max_wait the batch returns; its workers, stuck in a 20 s attempt, must not hold the process
    (an executor's threads are joined at exit). A subprocess, to measure the exit."""
    server.default = Action.hang(60)
    script = (
        "from eval.http import ChatClient, EndpointConfig\n"
        f"c = ChatClient(EndpointConfig(url={server.url!r}, model='m', timeout=20, max_retries=2, "
        "max_wait=1, api_key_env=None))\n"
        "out = c.chat_many([{'messages': [{'role': 'user', 'content': 'p'}]}] * 2)\n"
        "assert all(o.reason == 'deadline' for o in out)\n"
    )
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    took = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert took < 12, f"the process took {took:.1f}s to exit (max_wait 1 s, attempt timeout 20 s)"


def test_circuit_breaker_fails_fast_while_down_and_recovers(server):
    now = [0.0]
    down = [True]
    server.rule = lambda body: fast_error(503) if down[0] else None
    with ChatClient(
        EndpointConfig(
            url=server.url,
            model="m",
            timeout=0.3,
            max_retries=1,
            breaker_failures=2,
            breaker_cooldown=10.0,
            api_key_env=None,
        ),
        clock=lambda: now[0],
    ) as client:
        for _ in range(2):
            with pytest.raises(EndpointError, match="HTTP 503"):
                client.chat(MSG)
        sent = server.count()
        start = time.monotonic()
        out = client.chat_many([{"messages": MSG}] * 20)
        assert time.monotonic() - start < 1 and server.count() == sent  # nothing reached the server
        assert all(isinstance(o, EndpointError) and o.reason == "circuit_open" for o in out)
        now[0] = 11.0  # the cooldown has passed: one probe, still down, without retries
        with pytest.raises(EndpointError, match="HTTP 503"):
            client.chat(MSG)
        assert server.count() == sent + 1
        with pytest.raises(EndpointError, match="circuit"):
            client.chat(MSG)
        down[0] = False
        now[0] = 22.0  # the next probe succeeds and closes the breaker
        assert client.chat(MSG)[0].startswith("hello|")
        assert [len(o) for o in client.chat_many([{"messages": MSG}] * 3)] == [1, 1, 1]
        stats = client.stats
    assert stats["short_circuited"] == 21 and stats["breaker_opened"] == 1


def test_credentials_never_reach_errors_or_logs(server, caplog, monkeypatch):
    monkeypatch.setenv("LONGMILL_TEST_SECRET", "sk-verysecret123")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    creds_url = server.url.replace("http://", "http://alice:pa55word@")
    server.default = Action.error(401)
    errors = []
    with caplog.at_level(logging.DEBUG):
        for url, key_env in ((creds_url, None), (server.url, "LONGMILL_TEST_SECRET")):
            config = EndpointConfig(url=url, model="m", api_key_env=key_env, timeout=0.3, max_retries=0)
            with ChatClient(config) as client:
                with pytest.raises(EndpointError) as info:
                    client.chat(MSG)
                errors.append(info.value)
        logging.getLogger("eval.http").warning("calling %s with %s", creds_url, "sk-verysecret123")
        logging.getLogger("eval.judge").warning("judge at %s", creds_url)
    # The URL's credentials and the key were sent...
    assert server.requests[0].headers["Authorization"].startswith("Basic ")
    assert server.requests[1].headers["Authorization"] == "Bearer sk-verysecret123"
    text = "".join(str(e) + e.url for e in errors) + "\n".join(r.getMessage() for r in caplog.records)
    assert "pa55word" not in text and "sk-verysecret123" not in text  # ...and appear nowhere else
    assert "***@" in str(errors[0]) and "API key" in str(errors[0])
    assert "pa55word" not in repr(EndpointConfig(url=creds_url, model="m")).replace(creds_url, "")


def test_credentials_in_the_url_and_a_key_are_refused_together(server, caplog, monkeypatch):
    """httpx replaces the SDK's "Authorization: Bearer <key>" with the URL's Basic credentials, so a key
    given with a user:pass@ URL would never reach the server: refused; an ambient OPENAI_API_KEY (not asked
    for) is left out with a warning."""
    creds_url = server.url.replace("http://", "http://alice:pa55word@")
    monkeypatch.setenv("LONGMILL_TEST_SECRET", "sk-verysecret123")
    for given in (dict(api_key="sk-verysecret123"), dict(api_key_env="LONGMILL_TEST_SECRET")):
        with pytest.raises(LongmillError, match="carries user:pass@ and an API key is given as well") as info:
            EndpointConfig(url=creds_url, model="m", **given)
        assert "pa55word" not in str(info.value) and "sk-verysecret123" not in str(info.value)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-ambient-key")
    with caplog.at_level(logging.WARNING):
        config = EndpointConfig(url=creds_url, model="m", timeout=1, max_retries=0)
    assert config.api_key is None and "OPENAI_API_KEY is not sent" in caplog.text
    with ChatClient(config) as client:
        client.chat(MSG)
    assert server.requests[-1].headers["Authorization"].startswith("Basic ")


def test_endpoint_config_rejects_bad_values():
    with pytest.raises(LongmillError, match="http://"):
        EndpointConfig(url="127.0.0.1:8000/v1", model="m")
    with pytest.raises(LongmillError, match="/chat/completions"):
        EndpointConfig(url="http://h/v1/chat/completions", model="m")
    with pytest.raises(LongmillError, match="concurrency"):
        EndpointConfig(url="http://h/v1", model="m", concurrency=0)
    with pytest.raises(LongmillError, match="max_wait"):
        EndpointConfig(url="http://h/v1", model="m", max_wait=0)
    with pytest.raises(LongmillError, match="breaker"):
        EndpointConfig(url="http://h/v1", model="m", breaker_failures=-1)
    assert EndpointConfig(url="http://h/v1/", model="m").url == "http://h/v1"
    assert "secret" not in repr(EndpointConfig(url="http://h/v1", model="m", api_key="secret"))


def test_closed_client_refuses(server):
    client = make_client(server)
    client.close()
    with pytest.raises(LongmillError, match="closed"):
        client.chat(MSG)


# -- the openai generation backend -----------------------------------------------------------------


def make_backend(server: FakeServer, **overrides) -> OpenAIBackend:
    options = dict(url=server.url, timeout=0.3, max_retries=2, concurrency=4, api_key_env=None)
    options.update(overrides)
    return OpenAIBackend("tiny", **options)


def prompts(k: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"p{i}"}] for i in range(k)]


def test_backend_is_registered_and_needs_url():
    assert BACKENDS.get("openai") is OpenAIBackend
    with pytest.raises(LongmillError, match="vllm serve"):
        OpenAIBackend("tiny")


def test_backend_returns_n_completions_per_prompt_in_order(server):
    ticks = []
    with make_backend(server) as backend:
        out = backend.generate(
            prompts(5),
            n=3,
            sampling=SamplingParams(temperature=0.7, max_tokens=16, seed=5),
            progress=ticks.append,
        )
    assert len(out) == 5 and sum(ticks) == 5
    for i, comps in enumerate(out):
        assert len(comps) == 3 and all(c.startswith(f"p{i}|") for c in comps)
    assert all(
        b["n"] == 3 and b["temperature"] == 0.7 and b["max_tokens"] == 16 and b["seed"] == 5
        for b in server.bodies
    )
    assert server.count() == 5


def test_backend_tops_up_when_the_server_returns_fewer_choices(server):
    server.default = Action.ok(choices=1)  # a server that ignores n
    with make_backend(server) as backend:
        out = backend.generate(prompts(3), n=4, sampling=SamplingParams(seed=10))
        stats = backend.stats
    for i, comps in enumerate(out):
        assert len(comps) == 4 and len(set(comps)) == 4 and all(c.startswith(f"p{i}|") for c in comps)
    assert server.count() == 12 and stats["topup_requests"] == 9
    seeds = sorted({b["seed"] for b in server.bodies if b["messages"][0]["content"] == "p0"})
    assert seeds == [10, 11, 12, 13]  # each top-up round asks with a fresh seed
    asked = [b["n"] for b in server.bodies if b["messages"][0]["content"] == "p0"]
    assert asked == [4, 3, 2, 1]  # only the missing choices are requested


def test_backend_returns_none_for_a_prompt_whose_requests_all_fail(server):
    server.rule = lambda body: fast_error(500) if body["messages"][0]["content"] == "p1" else None
    ticks = []
    with make_backend(server, max_retries=2) as backend:
        out = backend.generate(prompts(3), n=2, progress=ticks.append)
        stats = backend.stats
    assert out[1] is None
    assert len(out[0]) == 2 and len(out[2]) == 2
    assert stats["failed_prompts"] == 1 and sum(ticks) == 3
    assert sum(1 for b in server.bodies if b["messages"][0]["content"] == "p1") == 3  # 1 + 2 retries
