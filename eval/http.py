"""A thin layer over the ``openai`` SDK for OpenAI-compatible chat endpoints (``vllm serve``, SGLang, OpenAI).

Both the LLM judge and the ``openai`` generation backend go through :class:`ChatClient`. Retries are the
SDK's own (``max_retries``: connect errors, timeouts, 408/409/429 and 5xx, with exponential backoff and
``Retry-After``); ``timeout`` bounds each attempt. This module adds what the SDK does not have:

- :meth:`ChatClient.chat_many`: many requests at a bounded concurrency, in order, each failure returned
  in its slot as an :class:`EndpointError`, and an optional ``max_wait`` after which the requests still
  running count as failed and make no further attempt, so a hanging server cannot stall a run or a
  training step for long (nor the process's exit);
- bounded waits: a ``Retry-After`` longer than one attempt's ``timeout`` (or than the batch's time left)
  fails the request at once instead of sleeping in the SDK;
- a circuit breaker: after ``breaker_failures`` consecutive failures of the endpoint (timeouts, refused
  connections, 5xx, 429), calls fail at once for ``breaker_cooldown`` seconds; then one probe request
  (no retries) decides whether the endpoint is back;
- credentials kept out of outputs: the API key and any ``user:pass@`` in the URL are registered with
  :data:`longmill.secrets.SECRETS` and redacted from errors, from log records of this client, the
  SDK and httpx, and from every JSON record longmill writes; a key can come from an environment variable
  (``api_key_env``, ``OPENAI_API_KEY`` by default) rather than the command line. A key together with a
  ``user:pass@`` URL is refused: both would need the one ``Authorization`` header.

Example (against a running ``vllm serve Qwen/Qwen2.5-1.5B-Instruct``)::

    from eval.http import ChatClient, EndpointConfig

    config = EndpointConfig(url="http://127.0.0.1:8000/v1", model="Qwen/Qwen2.5-1.5B-Instruct")
    with ChatClient(config) as client:
        print(client.chat([{"role": "user", "content": "Say hi"}], max_tokens=8))
"""

from __future__ import annotations

import dataclasses
import email.utils
import functools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from longmill.errors import LongmillError
from longmill.secrets import SECRETS, protect_loggers, redact_url, url_credentials
from longmill.stats import Stats
from longmill.types import Messages, Progress

log = logging.getLogger(__name__)


#: Failure reasons that say the endpoint itself is unwell (they count towards opening the breaker).
ENDPOINT_DOWN = ("timeout", "connect", "transport", "http_408", "http_409", "http_429")
#: Statuses the SDK retries (after ``Retry-After`` when the server sends one).
RETRYABLE = (408, 409, 429)

# A logger's filters apply only to records logged through that very logger, so every one that may
# mention an endpoint gets the redaction filter: this client's users, the SDK's and the HTTP libraries'
# (which log URLs). The CLIs put the same filter on their log handler.
protect_loggers(
    __name__,
    "eval.judge",
    "eval.run",
    "eval.backends.openai",
    "openai",
    "openai._base_client",
    "httpx",
    "httpx2",
)


#: The environment variable a key is read from unless another is named (it may be unset).
DEFAULT_KEY_ENV = "OPENAI_API_KEY"


def resolve_api_key(api_key: str | None, api_key_env: str | None, what: str = "endpoint") -> str | None:
    """The key to send: ``api_key`` if given, else the environment variable ``api_key_env``, else none.

    Args:
        api_key: a key given directly (visible in the process list; prefer the environment).
        api_key_env: the name of an environment variable holding the key. ``OPENAI_API_KEY`` (the
            default) may be unset; any other name that is unset is an error.
        what: names the option in the error.
    """
    if api_key:
        return api_key
    if not api_key_env:
        return None
    value = os.environ.get(api_key_env)
    if not value and api_key_env != DEFAULT_KEY_ENV:
        raise LongmillError(
            f"{what} api_key_env names ${api_key_env}, which is not set; export it or pass no key"
        )
    return value or None


class EndpointError(LongmillError):
    """A chat request failed for good (after its retries, at once for a non-retryable 4xx, or because the
    circuit breaker is open or the batch ran out of time).

    Args:
        message: the full explanation (URL, status or exception), credentials redacted.
        url: the endpoint URL that was called (redacted).
        reason: ``timeout``, ``connect``, ``transport``, ``http_<status>``, ``bad_response``,
            ``circuit_open`` or ``deadline``.
        attempts: how many attempts were allowed (the SDK retries internally).
        status: the last HTTP status, when there was one.
    """

    def __init__(self, message: str, *, url: str, reason: str, attempts: int, status: int | None = None):
        super().__init__(message)
        self.url, self.reason, self.attempts, self.status = url, reason, attempts, status

    def __reduce__(self):  # keyword-only fields: keep the error picklable across processes
        return (_rebuild_endpoint_error, (str(self), self.url, self.reason, self.attempts, self.status))


def _rebuild_endpoint_error(
    message: str, url: str, reason: str, attempts: int, status: int | None
) -> EndpointError:
    return EndpointError(message, url=url, reason=reason, attempts=attempts, status=status)


@dataclass
class EndpointOptions:
    """How to reach an OpenAI-compatible endpoint and how hard to try it, each default stated here once: the
    ``openai`` backend's options (:class:`eval.backends.openai.OpenAIOptions` adds ``max_rounds``) and, with the
    model, the client's :class:`EndpointConfig`. A role that needs another default says so in one place (the
    judge's ``timeout``: :data:`eval.judge.JUDGE_OPTION_DEFAULTS`).

    Args:
        url: the base URL including ``/v1``, e.g. ``http://127.0.0.1:8000/v1``.
        api_key: sent as ``Authorization: Bearer <api_key>`` when set (prefer ``api_key_env``).
        api_key_env: the environment variable holding the key when ``api_key`` is not given
            (``OPENAI_API_KEY`` by default, which may be unset; any other name must be set).
        timeout: seconds allowed for one attempt.
        max_retries: further attempts after the first fails with a retryable error (the openai SDK's policy:
            connect errors, timeouts, 408/409/429, 5xx, with backoff and ``Retry-After``).
        concurrency: the most requests in flight at once from this client.
        max_wait: seconds one batch of requests (:meth:`ChatClient.chat_many`) may take; requests still running
            then count as failed (``deadline``). None: no limit beyond each request's own timeouts.
        breaker_failures: consecutive endpoint failures that open the circuit breaker (0 disables it).
        breaker_cooldown: seconds the open breaker fails calls at once before it lets a probe through.
    """

    url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    api_key_env: str | None = DEFAULT_KEY_ENV
    timeout: float = 600.0
    max_retries: int = 2
    concurrency: int = 8
    max_wait: float | None = None
    breaker_failures: int = 5
    breaker_cooldown: float = 30.0

    def endpoint_fields(self) -> dict[str, Any]:
        """This object's :class:`EndpointOptions` fields, by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(EndpointOptions)}


@dataclass
class EndpointConfig(EndpointOptions):
    """Where an OpenAI-compatible endpoint is, which model it serves, and how hard to try it.

    Args:
        model: the model name the server serves (``vllm serve <model>`` uses the path or hub id).
        url, api_key, api_key_env, timeout, max_retries, concurrency, max_wait, breaker_failures,
            breaker_cooldown: see :class:`EndpointOptions`.
    """

    model: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.startswith(("http://", "https://")):
            raise LongmillError(
                f"endpoint url must start with http:// or https://, got {redact_url(str(self.url))!r}; "
                "pass the base URL including /v1, e.g. http://127.0.0.1:8000/v1"
            )
        self.url = self.url.rstrip("/")
        if self.url.endswith("/chat/completions"):
            raise LongmillError(
                f"endpoint url {redact_url(self.url)!r} already names /chat/completions; pass "
                "the base URL ending in /v1 and the client appends the route"
            )
        if not self.model:
            raise LongmillError(
                "endpoint model is empty; pass the name the server serves (the argument of `vllm serve`)"
            )
        if self.timeout <= 0:
            raise LongmillError(f"endpoint timeout must be > 0 seconds, got {self.timeout}")
        if self.max_retries < 0:
            raise LongmillError(f"endpoint max_retries must be >= 0, got {self.max_retries}")
        if self.concurrency < 1:
            raise LongmillError(f"endpoint concurrency must be >= 1, got {self.concurrency}")
        if self.max_wait is not None and self.max_wait <= 0:
            raise LongmillError(f"endpoint max_wait must be > 0 seconds or None, got {self.max_wait}")
        if self.breaker_failures < 0 or self.breaker_cooldown < 0:
            raise LongmillError(
                f"endpoint breaker_failures and breaker_cooldown must be >= 0, got "
                f"{self.breaker_failures} and {self.breaker_cooldown}"
            )
        creds = url_credentials(self.url)
        SECRETS.add(self.api_key, creds, creds and creds.partition(":")[2])
        explicit = bool(self.api_key) or self.api_key_env not in (None, "", DEFAULT_KEY_ENV)
        key = resolve_api_key(self.api_key, self.api_key_env)
        SECRETS.add(key)
        if creds and key:
            # The SDK sends the key as "Authorization: Bearer ..." and httpx, seeing user:pass@ in the URL,
            # replaces that very header with "Basic ..." (httpx2/_client.py _build_request_auth,
            # httpx2/_auth.py BasicAuth.auth_flow): a request has one Authorization header, so one of
            # the two would be dropped without a word.
            if explicit:
                given = "api_key" if self.api_key else f"${self.api_key_env} (api_key_env)"
                raise LongmillError(
                    f"endpoint url {redact_url(self.url)!r} carries user:pass@ and an API key is given as "
                    f"well ({given}); both travel in the one Authorization header (Basic for the URL's "
                    "credentials, Bearer for the key), so one would be silently dropped. Give one of them: "
                    "the key with a URL without user:pass@, or the URL's credentials without a key"
                )
            log.warning(
                "endpoint url %s carries user:pass@, so $%s is not sent (the URL's credentials take the "
                "Authorization header); unset it or pass api_key_env='' to silence this",
                redact_url(self.url),
                DEFAULT_KEY_ENV,
            )
            key = None
        self.api_key = key


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


class CircuitBreaker:
    """Fails calls at once while an endpoint is down, and lets one probe through after a cooldown.

    Args:
        threshold: consecutive failures that open it (0 never opens).
        cooldown: seconds it stays open before a probe is allowed.
        clock: a monotonic clock (tests pass a fake one).

    Example:
        >>> now = [0.0]
        >>> b = CircuitBreaker(2, 10.0, clock=lambda: now[0])
        >>> b.record(False); b.record(False); b.acquire()
        'reject'
        >>> now[0] = 11.0; b.acquire(), b.acquire()
        ('probe', 'reject')
        >>> b.record(True, probe=True); b.acquire()
        'pass'
    """

    def __init__(self, threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic):
        self.threshold, self.cooldown, self.clock = threshold, cooldown, clock
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False
        self.opened = 0
        self._cond = threading.Condition()

    def acquire(self, wait: float = 0.0) -> str:
        """``pass`` (closed), ``probe`` (the one trial call after the cooldown) or ``reject``.

        Args:
            wait: while a probe is in flight, wait up to this many seconds for its outcome rather than
                rejecting at once (so the calls of a recovered endpoint's first batch are not lost).
        """
        with self._cond:
            if self.opened_at is None:
                return "pass"
            if not self.probing and self.clock() - self.opened_at >= self.cooldown:
                self.probing = True
                return "probe"
            if self.probing and wait > 0:
                self._cond.wait_for(lambda: not self.probing, timeout=wait)
                return "pass" if self.opened_at is None else "reject"
            return "reject"

    def record(self, ok: bool, *, probe: bool = False) -> None:
        """The outcome of a call that was let through."""
        with self._cond:
            if probe:
                self.probing = False
                self._cond.notify_all()
            if ok:
                self.failures, self.opened_at = 0, None
                return
            self.failures += 1
            if probe or (self.opened_at is None and self.threshold and self.failures >= self.threshold):
                if self.opened_at is None:
                    self.opened += 1
                    log.warning(
                        "circuit breaker open after %d consecutive endpoint failures; calls fail at "
                        "once for %.0fs, then one probe decides",
                        self.failures,
                        self.cooldown,
                    )
                self.opened_at = self.clock()

    @property
    def is_open(self) -> bool:
        with self._cond:
            return self.opened_at is not None


class ChatClient:
    """A thread-safe chat client on the ``openai`` SDK, with a concurrency bound and a circuit breaker.

    Args:
        config: the endpoint, retry and breaker settings.
        clock: the breaker's clock (tests pass a fake one).
        http_client: an HTTP client for the SDK (``openai.DefaultHttpxClient(...)``, e.g. for a proxy);
            its request and response hooks get this client's own added.

    ``stats`` counts ``requests`` (calls to :meth:`chat`), ``attempts`` (HTTP requests sent, retries
    included), ``retries``, ``succeeded``, ``failures``, ``failures_by_reason`` and ``short_circuited``
    (calls failed at once by the open breaker).

    Waiting is bounded: a ``Retry-After`` longer than one attempt's ``timeout`` (or than what is left of a
    :meth:`chat_many` batch's ``max_wait``) is not waited for, the request fails at once; and once a
    batch's ``max_wait`` has passed, its requests start no further attempt.
    """

    def __init__(
        self, config: EndpointConfig, *, clock: Callable[[], float] = time.monotonic, http_client: Any = None
    ):
        try:
            import openai
        except ImportError as e:  # pragma: no cover - a declared dependency
            raise LongmillError(
                "the OpenAI-compatible client needs the openai package: pip install openai"
            ) from e
        self.config = config
        self.url = redact_url(config.url) or ""
        self._endpoint = f"{self.url}/chat/completions"
        self._omit_auth = None if config.api_key else {"Authorization": openai.Omit()}
        # Per calling thread: the batch deadline of the request it runs, its attempts, and the wait a
        # server asked for that was refused.
        self._local = threading.local()
        if http_client is None:
            # The SDK's own client class (its HTTP library differs between SDK versions), with our hooks.
            http_client = openai.DefaultHttpxClient(
                timeout=config.timeout,
                event_hooks={"request": [self._on_attempt], "response": [self._on_response]},
            )
        else:
            http_client.event_hooks["request"].append(self._on_attempt)
            http_client.event_hooks["response"].append(self._on_response)
        # The SDK needs some key; with none, the Authorization header is omitted on every request.
        self._sdk = openai.OpenAI(
            base_url=config.url,
            api_key=config.api_key or "unused",
            timeout=config.timeout,
            max_retries=config.max_retries,
            http_client=http_client,
        )
        self._probe_sdk = self._sdk.with_options(max_retries=0)
        self._openai = openai
        # The semaphore bounds concurrency for direct chat() calls from many threads too.
        self._slots = threading.BoundedSemaphore(config.concurrency)
        self.breaker = CircuitBreaker(config.breaker_failures, config.breaker_cooldown, clock=clock)
        self._stats = Stats(
            requests=0,
            attempts=0,
            retries=0,
            succeeded=0,
            failures=0,
            failures_by_reason={},
            short_circuited=0,
        )
        self._closed = False

    # -- bookkeeping -------------------------------------------------------------------------------
    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (safe to read while requests run)."""
        snap = self._stats.to_dict()
        snap["retries"] = max(0, snap["attempts"] - snap["requests"] + snap["short_circuited"])
        snap["breaker_opened"] = self.breaker.opened
        return snap

    def _deadline(self) -> float | None:
        return getattr(self._local, "deadline", None)

    def _on_attempt(self, request: Any) -> None:
        """Before every HTTP attempt (the SDK's retries included): stop when the batch is out of time."""
        deadline = self._deadline()
        if deadline is not None and time.monotonic() >= deadline:
            # An OpenAIError subclass: the SDK re-raises it as it is, without a retry
            # (openai/_base_client.py, SyncAPIClient.request: "except OpenAIError as err: raise err").
            raise _deadline_passed()("the batch's max_wait has passed; no further attempt")
        self._local.attempts = getattr(self._local, "attempts", 0) + 1
        self._stats.add("attempts")

    def _on_response(self, response: Any) -> None:
        """After every HTTP response: refuse a retry the server wants delayed beyond what we may wait.

        The SDK honours ``Retry-After`` up to two minutes (openai/_base_client.py,
        ``_calculate_retry_timeout``, ``MAX_RETRY_AFTER_DELAY``) and sleeps it in the calling thread;
        ``x-should-retry: false``, which the SDK obeys (``_should_retry``), makes it fail at once instead.
        """
        status = response.status_code
        if status not in RETRYABLE and status < 500:
            return
        deadline = self._deadline()
        left = None if deadline is None else deadline - time.monotonic()
        cap = self.config.timeout if left is None else min(self.config.timeout, left)
        asked = _retry_after(response.headers)
        if left is not None and left <= 0:
            self._local.refused_wait = 0.0  # the batch is out of time: no wait is short enough
        elif asked is not None and asked > cap:
            self._local.refused_wait = asked
        else:
            return
        response.headers["x-should-retry"] = "false"

    def _count(self, key: str, reason: str | None = None) -> None:
        self._stats.add(key)
        if reason is not None:
            self._stats.add_to("failures_by_reason", reason)

    def _error(self, reason: str, detail: str, *, attempts: int, status: int | None = None) -> EndpointError:
        return EndpointError(
            SECRETS.redact(f"POST {self._endpoint} failed: {detail}. {_hint(reason)}"),
            url=self._endpoint,
            reason=reason,
            attempts=attempts,
            status=status,
        )

    # -- one request -------------------------------------------------------------------------------
    def _send(self, payload: dict[str, Any], extra: dict[str, Any], probe: bool) -> list[str]:
        openai = self._openai
        sdk = self._probe_sdk if probe else self._sdk
        self._local.attempts, self._local.refused_wait = 0, None
        try:
            with self._slots:
                raw = sdk.chat.completions.with_raw_response.create(
                    **payload, extra_body=extra or None, extra_headers=self._omit_auth
                )
        except _deadline_passed() as e:
            raise self._error(
                "deadline",
                f"no answer within max_wait={self.config.max_wait}s for the batch "
                f"({self._local.attempts} attempt(s) made)",
                attempts=self._local.attempts,
            ) from e
        except openai.APITimeoutError as e:
            n = self._local.attempts
            raise self._error(
                "timeout", f"timed out after {self.config.timeout}s per attempt, {n} attempt(s)", attempts=n
            ) from e
        except openai.APIConnectionError as e:
            n = self._local.attempts
            raise self._error(
                "connect", f"cannot connect ({e.__cause__ or e}), {n} attempt(s)", attempts=n
            ) from e
        except openai.APIStatusError as e:
            status = e.status_code
            retryable = status in RETRYABLE or status >= 500
            refused = self._local.refused_wait
            if not retryable:
                why = "not retryable"
            elif refused:
                why = (
                    f"the server asked to retry after {refused:g}s, longer than the {self.config.timeout:g}s "
                    "timeout per attempt or the time left in the batch; not waited for"
                )
            elif refused is not None:
                why = "the batch's max_wait has passed; not retried"
            else:
                why = f"{self._local.attempts} attempt(s), giving up"
            raise self._error(
                f"http_{status}",
                f"HTTP {status}: {_snippet(str(e.message))!r}; {why}",
                attempts=self._local.attempts,
                status=status,
            ) from e
        except openai.OpenAIError as e:  # anything else the SDK raises about the exchange
            raise self._error("transport", f"{type(e).__name__}: {e}", attempts=self._local.attempts) from e
        response = raw.http_response
        try:
            body = response.json()
        except ValueError as e:
            raise self._error(
                "bad_response",
                f"HTTP {response.status_code} with a body that is not JSON ({_snippet(response.text)!r})",
                attempts=1,
                status=response.status_code,
            ) from e
        try:
            return _contents(body)
        except ValueError as e:
            raise self._error(
                "bad_response",
                f"HTTP {response.status_code} but {e} ({_snippet(response.text)!r})",
                attempts=1,
                status=response.status_code,
            ) from e

    # -- public API --------------------------------------------------------------------------------
    def chat(
        self,
        messages: Messages,
        *,
        n: int = 1,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_tokens: int = 1024,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
        **extra: Any,
    ) -> list[str]:
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
            EndpointError: after the SDK's retries, at once on a non-retryable 4xx or on a ``Retry-After``
                longer than ``timeout``, or at once while the circuit breaker is open.
        """
        if self._closed:
            raise LongmillError(f"ChatClient for {self.url} is closed")
        if n < 1:
            raise LongmillError(f"n must be >= 1, got {n}")
        payload: dict[str, Any] = {
            "model": self.config.model,
            "messages": list(messages),
            "n": n,
            "temperature": temperature,
            "top_p": top_p,
            "max_tokens": max_tokens,
        }
        if seed is not None:
            payload["seed"] = seed
        if stop:
            payload["stop"] = list(stop)
        self._count("requests")
        # A call that finds a probe in flight waits for it (one attempt's timeout) instead of failing.
        gate = self.breaker.acquire(wait=self.config.timeout + 1.0)
        if gate == "reject":
            self._count("short_circuited")
            self._count("failures", "circuit_open")
            raise self._error(
                "circuit_open",
                f"circuit breaker open: the endpoint failed {self.breaker.failures} times in a row; "
                f"calls fail at once for up to {self.config.breaker_cooldown:.0f}s",
                attempts=0,
            )
        probe = gate == "probe"
        try:
            contents = self._send(payload, extra, probe=probe)
        except EndpointError as e:
            deadline = self._deadline()
            if deadline is None or time.monotonic() < deadline:  # past it, chat_many counted it already
                self._count("failures", e.reason)
            if e.reason in ENDPOINT_DOWN or (e.status or 0) >= 500:
                self.breaker.record(False, probe=probe)
            elif probe:  # it answered (the endpoint is up), unless the probe was cut off by the deadline
                self.breaker.record(e.reason != "deadline", probe=True)
            raise
        except BaseException:
            if probe:  # never leave the breaker waiting on a probe that will not report
                self.breaker.record(False, probe=True)
            raise
        self.breaker.record(True, probe=probe)
        self._count("succeeded")
        return contents

    def chat_many(
        self,
        requests: Sequence[ChatRequest | Mapping[str, Any]],
        progress: Progress | None = None,
        *,
        on_result: Callable[[int, list[str] | EndpointError], None] | None = None,
    ) -> list[list[str] | EndpointError]:
        """Run many requests concurrently (at most ``concurrency`` in flight), keeping input order.

        Args:
            requests: :class:`ChatRequest` objects, or mappings with the keyword arguments of
                :meth:`chat` (``messages`` required).
            progress: called with 1 as each request finishes (in the calling thread).
            on_result: called with (index, result) as each request finishes (in the calling thread).

        Returns:
            One entry per request: the contents, or the :class:`EndpointError` it ended with. A failed
            request never raises here. With ``max_wait`` set, requests unfinished by then are errors
            (``deadline``) and this returns at once: their workers make no further attempt, end within
            one attempt's ``timeout``, and are daemon threads, so the process never waits for them.
        """
        reqs = [r if isinstance(r, ChatRequest) else ChatRequest(**r) for r in requests]
        results: list[list[str] | EndpointError | None] = [None] * len(reqs)
        if not reqs:
            return []

        def run(r: ChatRequest) -> list[str] | EndpointError:
            try:
                return self.chat(
                    r.messages,
                    n=r.n,
                    temperature=r.temperature,
                    top_p=r.top_p,
                    max_tokens=r.max_tokens,
                    seed=r.seed,
                    stop=r.stop,
                    **r.extra,
                )
            except EndpointError as e:
                return e

        def finish(i: int, res: list[str] | EndpointError) -> None:
            results[i] = res
            if on_result is not None:
                on_result(i, res)
            if progress is not None:
                progress(1)

        deadline = None if self.config.max_wait is None else time.monotonic() + self.config.max_wait
        todo: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in range(len(reqs)):
            todo.put(i)
        done: queue.SimpleQueue[tuple[int, Any, BaseException | None]] = queue.SimpleQueue()
        stop = threading.Event()

        def worker() -> None:
            # Daemon threads, not a ThreadPoolExecutor: the interpreter joins an executor's workers at
            # exit (concurrent/futures/thread.py, _python_exit), so a worker asleep in the SDK's retry
            # backoff would hold the process past the batch's deadline.
            self._local.deadline = deadline
            while not stop.is_set():
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    done.put((i, run(reqs[i]), None))
                except BaseException as e:  # a bug: the calling thread raises it
                    done.put((i, None, e))

        for k in range(min(self.config.concurrency, len(reqs))):
            threading.Thread(target=worker, name=f"longmill-http-{k}", daemon=True).start()
        left_over = len(reqs)
        try:
            while left_over:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    i, res, bug = done.get(timeout=left)
                except queue.Empty:
                    break
                if bug is not None:
                    raise bug
                finish(i, res)
                left_over -= 1
        finally:
            stop.set()
        if left_over:
            unfinished = [i for i, r in enumerate(results) if r is None]
            for i in unfinished:
                self._count("failures", "deadline")
                finish(
                    i,
                    self._error(
                        "deadline",
                        f"no answer within max_wait={self.config.max_wait}s for the batch",
                        attempts=0,
                    ),
                )
            log.warning(
                "%s: %d of %d requests unfinished after max_wait=%ss count as failed",
                self.url,
                len(unfinished),
                len(reqs),
                self.config.max_wait,
            )
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Close the connection pool; later calls raise."""
        if not self._closed:
            self._closed = True
            self._sdk.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@functools.cache
def _deadline_passed() -> type[Exception]:
    """The exception the request hook raises once a batch's deadline has passed (an ``OpenAIError``, so
    that the SDK passes it through without retrying; built lazily, as the SDK is imported lazily)."""
    import openai

    class DeadlinePassed(openai.OpenAIError):
        pass

    return DeadlinePassed


def _retry_after(headers: Any) -> float | None:
    """The seconds a response asks to wait (``retry-after-ms``, else ``retry-after`` as seconds or as an
    HTTP date), read as the SDK reads them; None when absent or unreadable."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value) / scale
        except ValueError:
            continue
    try:
        when = email.utils.parsedate_tz(headers.get("retry-after") or "")
        return None if when is None else email.utils.mktime_tz(when) - time.time()
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _contents(body: Any) -> list[str]:
    """The message contents of a chat completion body, in choice order; ValueError if unusable."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices:
        raise ValueError("response has no 'choices' list")
    indexed = []
    for pos, choice in enumerate(choices):
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise ValueError(f"choices[{pos}].message.content is missing or not a string")
        index = choice.get("index", pos)
        indexed.append((index if isinstance(index, int) else pos, pos, content))
    return [content for _, _, content in sorted(indexed)]


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _hint(reason: str) -> str:
    if reason == "connect":
        return "Is the server running at that URL (e.g. `vllm serve <model> --port 8000`)?"
    if reason == "timeout":
        return "The server is overloaded or the request is too long; raise the timeout or lower concurrency."
    if reason in ("http_401", "http_403"):
        return "Check the API key (vllm serve --api-key; pass it through an environment variable)."
    if reason == "http_404":
        return "Check that the url ends in /v1 and that model is the name the server serves."
    if reason == "http_400":
        return "The server rejected the request; check model, max_tokens and the prompt length."
    if reason == "bad_response":
        return "The server's answer is not an OpenAI chat completion."
    if reason == "circuit_open":
        return "The endpoint looks down; calls resume after the cooldown once a probe succeeds."
    if reason == "deadline":
        return "Raise max_wait, or check the server's load."
    return "Check the server's logs."
