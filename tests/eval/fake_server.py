"""A scriptable OpenAI-compatible chat server on 127.0.0.1, for tests of clients, judges and backends.

It serves ``POST /v1/chat/completions`` from a ``ThreadingHTTPServer`` in a background thread. What each
request gets is decided, in this order, by ``rule`` (a function of the request body that may return an
:class:`Action`), then by the ``script`` queue (consumed one action per request), then by ``default``.
Actions: reply normally (judge mode, a fixed text, or an echo of the prompt), an HTTP error (500, 429 with
``Retry-After``, 400, ...), a hang longer than the client's timeout, garbage (non-JSON, or JSON without
choices), or fewer choices than ``n``. Every request is recorded, and the most requests in flight at once
is tracked. Hanging handlers wake up when the server stops, so shutting down never waits on them.

Example::

    with FakeServer() as server:
        server.script(Action.error(500), Action.ok("YES"))
        ...  # point a client at server.url ("http://127.0.0.1:<port>/v1")
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from eval.reward import normalize_answer

ROUTE = "/v1/chat/completions"


@dataclass
class Action:
    """What the server does with one request.

    Args:
        kind: ``ok``, ``error``, ``hang``, ``not_json``, ``no_choices``.
        text: for ``ok``, the content of every choice (None: judge mode or an echo, see ``reply_text``).
        status: for ``error``, the HTTP status.
        retry_after: for ``error``, the ``Retry-After`` header value.
        delay: seconds to wait before answering (``ok``), or to hang (``hang``).
        choices: for ``ok``, how many choices to return (None: the request's ``n``; capped at ``n``).
    """

    kind: str = "ok"
    text: str | None = None
    status: int = 200
    retry_after: str | None = None
    delay: float = 0.0
    choices: int | None = None

    @classmethod
    def ok(cls, text: str | None = None, *, delay: float = 0.0, choices: int | None = None) -> Action:
        return cls("ok", text=text, delay=delay, choices=choices)

    @classmethod
    def error(cls, status: int = 500, retry_after: str | float | None = None) -> Action:
        return cls("error", status=status, retry_after=None if retry_after is None else str(retry_after))

    @classmethod
    def hang(cls, seconds: float = 5.0) -> Action:
        return cls("hang", delay=seconds)

    @classmethod
    def not_json(cls) -> Action:
        return cls("not_json")

    @classmethod
    def no_choices(cls) -> Action:
        return cls("no_choices")


def judge_reply(body: dict[str, Any]) -> str | None:
    """YES/NO for a judge prompt (normalised prediction equals a normalised gold), else None."""
    user = next(
        (m.get("content", "") for m in reversed(body.get("messages", [])) if m.get("role") == "user"), ""
    )
    q = re.search(r"^Prediction: (.*)$", user, re.MULTILINE)
    g = re.search(r"^Gold answers:\n((?:- .*\n?)+)", user, re.MULTILINE)
    if not q or not g:
        return None
    golds = [line[2:] for line in g.group(1).splitlines() if line.startswith("- ")]
    pred = normalize_answer(q.group(1))
    return "YES" if any(pred == normalize_answer(x) for x in golds) else "NO"


def reply_text(body: dict[str, Any], index: int, serial: int) -> str:
    """The default content of choice ``index``: a judge verdict, or ``<last user message>|r<serial>c<index>``."""
    verdict = judge_reply(body)
    if verdict is not None:
        return verdict
    user = next(
        (m.get("content", "") for m in reversed(body.get("messages", [])) if m.get("role") == "user"), ""
    )
    return f"{user}|r{serial}c{index}"


@dataclass
class Received:
    """One recorded request."""

    path: str
    headers: Any  # the request's headers; case-insensitive lookups (a missing one is None)
    body: Any
    action: str = ""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _send(
        self,
        status: int,
        payload: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout); nothing to do
            self.close_connection = True

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if fake._stop.is_set():
            # stopped: a kept-alive connection from before stop() must not go on being served (its
            # handler thread outlives the listener), so hang up without an answer, as a dead server does
            self.close_connection = True
            return
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            body = None
        if self.path != ROUTE:
            fake._record(Received(self.path, self.headers, body, "not_found"))
            self._send(404, b'{"error": "not found"}')
            return
        action, serial = fake._next_action(body)
        fake._record(Received(self.path, self.headers, body, action.kind))
        fake._enter()
        try:
            self._act(action, body or {}, serial)
        finally:
            fake._leave()

    def _act(self, action: Action, body: dict[str, Any], serial: int) -> None:
        fake = self.server.fake
        if action.kind == "hang":
            fake._stop.wait(action.delay)
            self.close_connection = True
            return
        if action.delay:
            fake._stop.wait(action.delay)
        if action.kind == "error":
            headers = {"Retry-After": action.retry_after} if action.retry_after is not None else {}
            self._send(
                action.status,
                json.dumps({"error": {"message": f"scripted {action.status}"}}).encode(),
                headers=headers,
            )
        elif action.kind == "not_json":
            self._send(200, b"<html>this is not json</html>", content_type="text/html")
        elif action.kind == "no_choices":
            self._send(200, json.dumps({"id": "x", "object": "chat.completion", "usage": {}}).encode())
        elif action.kind == "ok":
            n = int(body.get("n") or 1)
            k = n if action.choices is None else max(0, min(n, action.choices))
            choices = [
                {
                    "index": i,
                    "finish_reason": "stop",
                    "message": {
                        "role": "assistant",
                        "content": action.text if action.text is not None else reply_text(body, i, serial),
                    },
                }
                for i in range(k)
            ]
            self._send(
                200,
                json.dumps(
                    {
                        "id": f"cmpl-{serial}",
                        "object": "chat.completion",
                        "model": body.get("model"),
                        "choices": choices,
                    }
                ).encode(),
            )
        else:
            raise ValueError(f"unknown fake server action {action.kind!r}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fake: FakeServer


@dataclass
class FakeServer:
    """The scriptable loopback server; use as a context manager (or the ``server`` fixture of
    tests/eval/conftest.py).

    Args:
        default: the action when no rule matches and the script is empty.
        rule: optional ``body -> Action | None`` deciding per request (e.g. by prompt content), which
            is deterministic under concurrency where a queue is not.
    """

    default: Action = field(default_factory=Action.ok)
    rule: Callable[[dict[str, Any]], Action | None] | None = None
    requests: list[Received] = field(default_factory=list, init=False)
    max_in_flight: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._queue: deque[Action] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._in_flight = 0
        self._serial = 0
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- scripting ---------------------------------------------------------------------------------
    def script(self, *actions: Action) -> FakeServer:
        """Queue actions for the next requests, one each, in arrival order."""
        with self._lock:
            self._queue.extend(actions)
        return self

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def bodies(self) -> list[Any]:
        with self._lock:
            return [r.body for r in self.requests]

    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    # -- handler hooks -----------------------------------------------------------------------------
    def _next_action(self, body: Any) -> tuple[Action, int]:
        with self._lock:
            self._serial += 1
            serial = self._serial
        action = self.rule(body) if self.rule is not None and isinstance(body, dict) else None
        if action is None:
            with self._lock:
                action = self._queue.popleft() if self._queue else self.default
        return action, serial

    def _record(self, rec: Received) -> None:
        with self._lock:
            self.requests.append(rec)

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> FakeServer:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-openai-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes hanging and delayed handlers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
