"""A small, robust client for OpenAI-compatible chat endpoints (``vllm serve``, SGLang, TGI, OpenAI).

Both the LLM judge and the ``openai`` generation backend go through :class:`ChatClient`. It retries what
is worth retrying (connect errors, timeouts, 408/409/429 and 5xx, and a 200 whose body is unusable) with
capped exponential backoff plus jitter, honours ``Retry-After``, and never retries other 4xx answers, which
are the caller's to fix. A request that still fails raises :class:`EndpointError`; :meth:`ChatClient.chat_many`
returns that error in the request's slot instead of raising, so one bad request never sinks a batch.

Example (against a running ``vllm serve Qwen/Qwen2.5-1.5B-Instruct``)::

    from eval.http import ChatClient, EndpointConfig

    config = EndpointConfig(url="http://127.0.0.1:8000/v1", model="Qwen/Qwen2.5-1.5B-Instruct")
    with ChatClient(config) as client:
        print(client.chat([{"role": "user", "content": "Say hi"}], max_tokens=8))
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import httpx

from datagen.errors import LongmillError

log = logging.getLogger(__name__)

Messages = list[dict[str, str]]
Progress = Callable[[int], None]

#: Statuses worth another try: the server is busy, restarting or briefly out of capacity.
RETRY_STATUSES = frozenset({408, 409, 429})


class EndpointError(LongmillError):
    """A chat request failed for good (after its retries, or at once for a non-retryable 4xx).

    Args:
        message: the full explanation (URL, status or exception, attempts).
        url: the endpoint URL that was called.
        reason: a short category: ``timeout``, ``connect``, ``transport``, ``http_<status>`` or
            ``bad_response``.
        attempts: how many attempts were made.
        status: the last HTTP status, when there was one.
    """

    def __init__(self, message: str, *, url: str, reason: str, attempts: int, status: int | None = None):
        super().__init__(message)
        self.url, self.reason, self.attempts, self.status = url, reason, attempts, status

    def __reduce__(self):  # keyword-only fields: keep the error picklable across processes
        return (_rebuild_endpoint_error, (str(self), self.url, self.reason, self.attempts, self.status))


def _rebuild_endpoint_error(message: str, url: str, reason: str, attempts: int, status: int | None) -> EndpointError:
    return EndpointError(message, url=url, reason=reason, attempts=attempts, status=status)


@dataclass
class EndpointConfig:
    """Where an OpenAI-compatible endpoint is and how hard to try it.

    Args:
        url: the base URL including ``/v1``, e.g. ``http://127.0.0.1:8000/v1``; ``/chat/completions``
            is appended.
        model: the model name the server serves (``vllm serve <model>`` uses the path or hub id).
        api_key: sent as ``Authorization: Bearer <api_key>`` when set (``vllm serve --api-key``).
        timeout: seconds allowed for one attempt (connect, write, read), not for all retries together.
        max_retries: further attempts after the first one fails with a retryable error.
        backoff_base: the first retry waits about this many seconds; each later one waits twice as long.
        backoff_cap: no wait is longer than this, ``Retry-After`` included.
        concurrency: the most requests in flight at once from this client.
    """

    url: str
    model: str
    api_key: str | None = None
    timeout: float = 60.0
    max_retries: int = 4
    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    concurrency: int = 8

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.startswith(("http://", "https://")):
            raise LongmillError(
                f"endpoint url must start with http:// or https://, got {self.url!r}; "
                "pass the base URL including /v1, e.g. http://127.0.0.1:8000/v1")
        self.url = self.url.rstrip("/")
        if self.url.endswith("/chat/completions"):
            raise LongmillError(f"endpoint url {self.url!r} already names /chat/completions; pass the base "
                                "URL ending in /v1 and the client appends the route")
        if not self.model:
            raise LongmillError("endpoint model is empty; pass the name the server serves "
                                "(the argument of `vllm serve`)")
        if self.timeout <= 0:
            raise LongmillError(f"endpoint timeout must be > 0 seconds, got {self.timeout}")
        if self.max_retries < 0:
            raise LongmillError(f"endpoint max_retries must be >= 0, got {self.max_retries}")
        if self.backoff_base < 0 or self.backoff_cap < 0:
            raise LongmillError(f"endpoint backoff_base and backoff_cap must be >= 0, got "
                                f"{self.backoff_base} and {self.backoff_cap}")
        if self.backoff_cap < self.backoff_base:
            raise LongmillError(f"endpoint backoff_cap ({self.backoff_cap}) must be >= backoff_base "
                                f"({self.backoff_base})")
        if self.concurrency < 1:
            raise LongmillError(f"endpoint concurrency must be >= 1, got {self.concurrency}")


@dataclass
class ChatRequest:
    """One ``/chat/completions`` request for :meth:`ChatClient.chat_many`.

    Args:
        messages: the chat messages (``{"role": ..., "content": ...}``).
        n: completions wanted (some servers return fewer; see :meth:`ChatClient.chat`).
        temperature, top_p, max_tokens, seed, stop: sampling, with the OpenAI API's names.
        extra: further body fields passed through (e.g. vLLM's ``top_k``).
    """

    messages: Messages
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 1024
    seed: int | None = None
    stop: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _Failure(Exception):
    """One failed attempt (internal): why, whether to retry, and a server-requested delay."""

    def __init__(self, reason: str, detail: str, *, retry: bool, status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.retry, self.status, self.retry_after = (
            reason, detail, retry, status, retry_after)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None if unusable.

    Example:
        >>> parse_retry_after("2"), parse_retry_after("1.5"), parse_retry_after("soon")
        (2.0, 1.5, None)
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def _contents(body: Any) -> list[str]:
    """The message contents of a chat completion body, in choice order; raises _Failure if unusable."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices:
        raise _Failure("bad_response", "response has no 'choices' list", retry=True)
    indexed = []
    for pos, choice in enumerate(choices):
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise _Failure("bad_response", f"choices[{pos}].message.content is missing or not a string",
                           retry=True)
        index = choice.get("index", pos)
        indexed.append((index if isinstance(index, int) else pos, pos, content))
    return [content for _, _, content in sorted(indexed)]


class ChatClient:
    """A thread-safe client for ``POST {url}/chat/completions`` with retries and a concurrency bound.

    Args:
        config: the endpoint and retry settings.
        sleep: how to wait between attempts (tests pass a recorder so they run fast).
        rng: the jitter source (a seeded ``random.Random`` makes backoff reproducible).
        transport: an ``httpx`` transport, for tests or proxies; the default is a plain connection pool.

    ``stats`` counts ``requests`` (calls to :meth:`chat`), ``attempts``, ``retries``, ``succeeded``,
    ``failures`` and the failed attempts by reason (``attempt_errors``).
    """

    def __init__(self, config: EndpointConfig, *, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None, transport: httpx.BaseTransport | None = None):
        self.config = config
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._endpoint = f"{config.url}/chat/completions"
        headers = {"Content-Type": "application/json"}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        # The semaphore, not the pool, bounds concurrency, so direct chat() calls from many threads obey
        # it too; the pool only keeps enough connections alive for that many requests.
        self._client = httpx.Client(
            headers=headers, timeout=httpx.Timeout(config.timeout), transport=transport,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=config.concurrency))
        self._slots = threading.BoundedSemaphore(config.concurrency)
        self._lock = threading.Lock()
        self._stats: dict[str, Any] = {"requests": 0, "attempts": 0, "retries": 0, "succeeded": 0,
                                       "failures": 0, "attempt_errors": {}}
        self._closed = False

    # -- bookkeeping -------------------------------------------------------------------------------
    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (safe to read while requests run)."""
        with self._lock:
            snap = dict(self._stats)
            snap["attempt_errors"] = dict(self._stats["attempt_errors"])
            return snap

    def _count(self, key: str) -> None:
        with self._lock:
            self._stats[key] += 1

    def _count_error(self, reason: str) -> None:
        with self._lock:
            errors = self._stats["attempt_errors"]
            errors[reason] = errors.get(reason, 0) + 1

    def _backoff(self, retry_number: int, retry_after: float | None) -> float:
        cfg = self.config
        if retry_after is not None:
            return min(cfg.backoff_cap, retry_after)
        # Equal jitter: between half and all of the capped exponential delay, so synchronized clients
        # spread out but nobody retries immediately.
        delay = min(cfg.backoff_cap, cfg.backoff_base * (2 ** retry_number))
        with self._lock:
            return delay * (0.5 + 0.5 * self._rng.random())

    # -- one attempt -------------------------------------------------------------------------------
    def _attempt(self, payload: dict[str, Any]) -> list[str]:
        try:
            with self._slots:
                response = self._client.post(self._endpoint, json=payload)
        except httpx.TimeoutException as e:
            raise _Failure("timeout", f"timed out after {self.config.timeout}s ({type(e).__name__})",
                           retry=True) from e
        except httpx.ConnectError as e:
            raise _Failure("connect", f"cannot connect ({e})", retry=True) from e
        except httpx.TransportError as e:
            raise _Failure("transport", f"{type(e).__name__}: {e}", retry=True) from e
        status = response.status_code
        if 200 <= status < 300:
            try:
                body = response.json()
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise _Failure("bad_response", f"HTTP {status} with a body that is not JSON "
                               f"({_snippet(response.text)!r})", retry=True, status=status) from e
            try:
                return _contents(body)
            except _Failure as f:
                f.status = status
                f.detail = f"HTTP {status} but {f.detail} ({_snippet(response.text)!r})"
                raise
        retry = status in RETRY_STATUSES or status >= 500
        raise _Failure(f"http_{status}", f"HTTP {status}: {_snippet(response.text)!r}", retry=retry,
                       status=status, retry_after=parse_retry_after(response.headers.get("Retry-After")))

    # -- public API --------------------------------------------------------------------------------
    def chat(self, messages: Messages, *, n: int = 1, temperature: float = 0.0, top_p: float = 1.0,
             max_tokens: int = 1024, seed: int | None = None, stop: Sequence[str] | None = None,
             **extra: Any) -> list[str]:
        """Send one chat completion request and return the message contents of its choices.

        Args:
            messages: the chat messages.
            n: completions wanted. Some servers ignore ``n`` and return fewer; the list then holds what
                was returned (at least one), and the caller decides whether to ask again.
            temperature, top_p, max_tokens, seed, stop: sampling, with the OpenAI API's names.
            **extra: further body fields passed through (e.g. vLLM's ``top_k``).

        Returns:
            The contents, ordered by choice index.

        Raises:
            EndpointError: after ``max_retries`` retries, or at once on a non-retryable 4xx.
        """
        if self._closed:
            raise LongmillError(f"ChatClient for {self.config.url} is closed")
        if n < 1:
            raise LongmillError(f"n must be >= 1, got {n}")
        payload: dict[str, Any] = {"model": self.config.model, "messages": list(messages), "n": n,
                                   "temperature": temperature, "top_p": top_p, "max_tokens": max_tokens}
        if seed is not None:
            payload["seed"] = seed
        if stop:
            payload["stop"] = list(stop)
        payload.update(extra)
        self._count("requests")
        attempts_allowed = self.config.max_retries + 1
        attempt = 0
        while True:
            attempt += 1
            self._count("attempts")
            try:
                contents = self._attempt(payload)
            except _Failure as f:
                self._count_error(f.reason)
                if not f.retry or attempt >= attempts_allowed:
                    self._count("failures")
                    why = "not retryable" if not f.retry else "giving up"
                    raise EndpointError(
                        f"POST {self._endpoint} failed: {f.detail}; {attempt} attempt(s), {why}. "
                        + _hint(f.reason), url=self._endpoint, reason=f.reason, attempts=attempt,
                        status=f.status) from f.__cause__
                delay = self._backoff(attempt - 1, f.retry_after)
                self._count("retries")
                log.debug("POST %s attempt %d failed (%s); retrying in %.2fs", self._endpoint, attempt,
                          f.detail, delay)
                self._sleep(delay)
                continue
            self._count("succeeded")
            return contents

    def chat_many(self, requests: Sequence[ChatRequest | Mapping[str, Any]], progress: Progress | None = None,
                  *, on_result: Callable[[int, list[str] | EndpointError], None] | None = None,
                  ) -> list[list[str] | EndpointError]:
        """Run many requests concurrently (at most ``concurrency`` in flight), keeping input order.

        Args:
            requests: :class:`ChatRequest` objects, or mappings with the keyword arguments of
                :meth:`chat` (``messages`` required).
            progress: called with 1 as each request finishes (in the calling thread).
            on_result: called with (index, result) as each request finishes (in the calling thread).

        Returns:
            One entry per request: the contents, or the :class:`EndpointError` it ended with. A failed
            request never raises here.
        """
        reqs = [r if isinstance(r, ChatRequest) else ChatRequest(**r) for r in requests]
        results: list[list[str] | EndpointError | None] = [None] * len(reqs)
        if not reqs:
            return []

        def run(r: ChatRequest) -> list[str] | EndpointError:
            try:
                return self.chat(r.messages, n=r.n, temperature=r.temperature, top_p=r.top_p,
                                 max_tokens=r.max_tokens, seed=r.seed, stop=r.stop, **r.extra)
            except EndpointError as e:
                return e

        workers = min(self.config.concurrency, len(reqs))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="longmill-http") as pool:
            futures = {pool.submit(run, r): i for i, r in enumerate(reqs)}
            for fut in as_completed(futures):
                i = futures[fut]
                results[i] = fut.result()
                if on_result is not None:
                    on_result(i, results[i])  # type: ignore[arg-type]
                if progress is not None:
                    progress(1)
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Close the connection pool; later calls raise."""
        if not self._closed:
            self._closed = True
            self._client.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _hint(reason: str) -> str:
    if reason == "connect":
        return "Is the server running at that URL (e.g. `vllm serve <model> --port 8000`)?"
    if reason == "timeout":
        return "The server is overloaded or the request is too long; raise timeout or lower concurrency."
    if reason in ("http_401", "http_403"):
        return "Check api_key (vllm serve --api-key)."
    if reason == "http_404":
        return "Check that url ends in /v1 and that model is the name the server serves."
    if reason == "http_400":
        return "The server rejected the request; check model, max_tokens and the prompt length."
    if reason == "bad_response":
        return "The server's answer is not an OpenAI chat completion."
    return "Check the server's logs."
