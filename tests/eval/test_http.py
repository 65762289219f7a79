"""ChatClient and the openai generation backend against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from datagen.errors import LongmillError
from eval.backends.base import BACKENDS, SamplingParams
from eval.backends.openai import OpenAIBackend
from eval.http import ChatClient, ChatRequest, EndpointConfig, EndpointError, parse_retry_after

from .fake_server import Action, FakeServer

MSG = [{"role": "user", "content": "hello"}]


class Sleeper:
    """Records the delays the client asks for instead of sleeping (thread-safe)."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, seconds: float) -> None:
        with self._lock:
            self.delays.append(seconds)


@pytest.fixture
def server():
    with FakeServer() as s:
        yield s


def make_client(server: FakeServer, sleeper: Sleeper | None = None, **overrides) -> ChatClient:
    options = dict(url=server.url, model="tiny", timeout=0.3, max_retries=3, backoff_base=0.01,
                   backoff_cap=0.05, concurrency=4)
    options.update(overrides)
    return ChatClient(EndpointConfig(**options), sleep=sleeper or Sleeper())


def test_chat_sends_an_openai_body_and_returns_contents(server):
    server.script(Action.ok("hi there"))
    with make_client(server, api_key="sekret") as client:
        out = client.chat(MSG, n=1, temperature=0.5, top_p=0.9, max_tokens=7, seed=3, stop=["\n"])
    assert out == ["hi there"]
    rec = server.requests[0]
    assert rec.path == "/v1/chat/completions"
    assert rec.headers["Authorization"] == "Bearer sekret"
    assert rec.body == {"model": "tiny", "messages": MSG, "n": 1, "temperature": 0.5, "top_p": 0.9,
                        "max_tokens": 7, "seed": 3, "stop": ["\n"]}
    assert client.stats["attempts"] == 1 and client.stats["retries"] == 0


def test_retries_500_then_succeeds_with_capped_jittered_backoff(server):
    server.script(Action.error(500), Action.error(503), Action.error(502), Action.ok("done"))
    sleeper = Sleeper()
    with make_client(server, sleeper, backoff_base=0.02, backoff_cap=0.05) as client:
        assert client.chat(MSG) == ["done"]
        stats = client.stats
    assert server.count() == 4
    assert stats["attempts"] == 4 and stats["retries"] == 3 and stats["failures"] == 0
    assert stats["attempt_errors"] == {"http_500": 1, "http_503": 1, "http_502": 1}
    # equal jitter: between half and all of min(cap, base * 2**k)
    for k, d in enumerate(sleeper.delays):
        full = min(0.05, 0.02 * 2 ** k)
        assert full / 2 <= d <= full


def test_429_retry_after_is_honoured_and_capped(server):
    server.script(Action.error(429, retry_after="0.03"), Action.error(429, retry_after="120"),
                  Action.error(408), Action.ok("ok"))
    sleeper = Sleeper()
    with make_client(server, sleeper, backoff_base=0.001, backoff_cap=0.05) as client:
        assert client.chat(MSG) == ["ok"]
    assert sleeper.delays[:2] == [0.03, 0.05]  # the server's value, then the cap
    assert sleeper.delays[2] <= 0.004  # no Retry-After: exponential backoff again


def test_parse_retry_after_accepts_seconds_and_http_dates():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("later") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("-5") == 0.0


def test_hanging_server_times_out_is_counted_and_fails(server):
    server.default = Action.hang(10)
    sleeper = Sleeper()
    start = time.monotonic()
    with make_client(server, sleeper, timeout=0.3, max_retries=1) as client:
        with pytest.raises(EndpointError) as info:
            client.chat(MSG)
        stats = client.stats
    assert time.monotonic() - start < 3
    err = info.value
    assert err.reason == "timeout" and err.attempts == 2
    assert server.url in str(err) and "timed out" in str(err) and "2 attempt" in str(err)
    assert stats["attempt_errors"] == {"timeout": 2} and stats["failures"] == 1 and stats["retries"] == 1


@pytest.mark.parametrize("garbage", [Action.not_json(), Action.no_choices(), Action.ok(choices=0)])
def test_garbage_200_is_retried_then_fails(server, garbage):
    server.script(garbage, Action.ok("recovered"))
    with make_client(server) as client:
        assert client.chat(MSG) == ["recovered"]
    server.default = garbage
    with make_client(server, max_retries=2) as client:
        with pytest.raises(EndpointError) as info:
            client.chat(MSG)
    assert info.value.reason == "bad_response" and info.value.attempts == 3
    assert info.value.status == 200


def test_400_is_not_retried(server):
    server.default = Action.error(400)
    sleeper = Sleeper()
    with make_client(server, sleeper) as client:
        with pytest.raises(EndpointError) as info:
            client.chat(MSG)
    assert server.count() == 1 and sleeper.delays == []
    assert info.value.status == 400 and info.value.attempts == 1
    assert "HTTP 400" in str(info.value) and "not retryable" in str(info.value)


def test_connection_refused_is_retried_then_fails():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # nothing listens on the port any more
    sleeper = Sleeper()
    config = EndpointConfig(url=f"http://127.0.0.1:{port}/v1", model="m", timeout=0.3, max_retries=2,
                            backoff_base=0.01, backoff_cap=0.02)
    with ChatClient(config, sleep=sleeper) as client:
        with pytest.raises(EndpointError) as info:
            client.chat(MSG)
    assert info.value.reason == "connect" and info.value.attempts == 3 and len(sleeper.delays) == 2
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
        return Action.error(400) if "bad" in text else (Action.error(500) if "flaky" in text else None)

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


def test_endpoint_config_rejects_bad_values():
    with pytest.raises(LongmillError, match="http://"):
        EndpointConfig(url="127.0.0.1:8000/v1", model="m")
    with pytest.raises(LongmillError, match="/chat/completions"):
        EndpointConfig(url="http://h/v1/chat/completions", model="m")
    with pytest.raises(LongmillError, match="concurrency"):
        EndpointConfig(url="http://h/v1", model="m", concurrency=0)
    with pytest.raises(LongmillError, match="backoff_cap"):
        EndpointConfig(url="http://h/v1", model="m", backoff_base=2, backoff_cap=1)
    assert EndpointConfig(url="http://h/v1/", model="m").url == "http://h/v1"


def test_closed_client_refuses(server):
    client = make_client(server)
    client.close()
    with pytest.raises(LongmillError, match="closed"):
        client.chat(MSG)


# -- the openai generation backend -----------------------------------------------------------------

def make_backend(server: FakeServer, **overrides) -> OpenAIBackend:
    options = dict(url=server.url, timeout=0.3, max_retries=2, backoff_base=0.0, backoff_cap=0.0,
                   concurrency=4, sleep=Sleeper())
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
        out = backend.generate(prompts(5), n=3, sampling=SamplingParams(temperature=0.7, max_tokens=16, seed=5),
                               progress=ticks.append)
    assert len(out) == 5 and sum(ticks) == 5
    for i, comps in enumerate(out):
        assert len(comps) == 3 and all(c.startswith(f"p{i}|") for c in comps)
    assert all(b["n"] == 3 and b["temperature"] == 0.7 and b["max_tokens"] == 16 and b["seed"] == 5
               for b in server.bodies)
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
    server.rule = lambda body: Action.error(500) if body["messages"][0]["content"] == "p1" else None
    ticks = []
    with make_backend(server, max_retries=2) as backend:
        out = backend.generate(prompts(3), n=2, progress=ticks.append)
        stats = backend.stats
    assert out[1] is None
    assert len(out[0]) == 2 and len(out[2]) == 2
    assert stats["failed_prompts"] == 1 and sum(ticks) == 3
    assert sum(1 for b in server.bodies if b["messages"][0]["content"] == "p1") == 3  # 1 + 2 retries
