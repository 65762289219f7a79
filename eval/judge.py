"""The LLM judge: does a prediction mean the same as any gold answer? (YES / NO / unknown)

QwenLong-L1's reward and metric use ``max(rule, judge)``: when exact matching misses, a compact instruct
model is asked whether the prediction is equivalent to a gold answer. The model runs on any of eval's
generation backends (:data:`eval.backends.BACKENDS`: Qwen2.5-1.5B-Instruct behind ``vllm serve`` through
``openai``, or in-process through ``hf`` or ``vllm``); the judge adds the prompt, parsing, caching and
failure counts, and the backend's own options (timeouts, retries, circuit breaker) apply. The prompt and
the reading of the reply are :mod:`eval.reward`'s (shared with the training reward and verl's copy): the
judge answers with one word, or QwenLong-L1's "... [[YES]]"; anything else is *unparseable*. A judge
that fails (endpoint down, circuit breaker open, unparseable reply) gives ``verdict=None, failed=True``
and is counted in :attr:`Judge.stats`. It is never turned into a NO and never into a YES: a training
reward skips it (None), and evaluation keeps the completion at its rule score and reports the failure
(see :func:`eval.reward.max_em_judge`).

Successful verdicts are cached in memory by ``(question, prediction, golds)`` and, when ``cache_path``
is set, in a JSONL file that later runs load (one line per verdict, appended atomically).

Example (against ``vllm serve Qwen/Qwen2.5-1.5B-Instruct --port 8000``)::

    from eval.judge import JudgeConfig, make_judge

    config = JudgeConfig(url="http://127.0.0.1:8000/v1", cache_path="judge_cache.jsonl")
    with make_judge(config) as judge:
        result = judge.judge("Who wrote Hamlet?", "Shakespeare", ["William Shakespeare"])
        print(result.verdict, result.failed)  # True False
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.backends.base import (
    GenerationBackend,
    GenerationError,
    SamplingParams,
    backend_class,
    backend_options,
    option_names,
    parse_option_items,
)
from eval.http import EndpointConfig, EndpointOptions, redact_url
from eval.reward import build_judge_messages, parse_verdict
from longmill.errors import LongmillError
from longmill.stats import Stats
from longmill.types import Progress

log = logging.getLogger(__name__)

CacheKey = tuple[str, str, tuple[str, ...]]


#: The judge's own option defaults, where they differ from its backend's ``Options``: a reply is one word, so an
#: attempt gets 30 s (generation's 600 s is :class:`eval.http.EndpointOptions`'), and an in-process judge runs on
#: the CPU, 8 prompts at a time, unless told otherwise. Each applies only to a backend that has the option.
JUDGE_OPTION_DEFAULTS: dict[str, Any] = {"timeout": 30.0, "device": "cpu", "batch_size": 8}


@dataclass
class JudgeConfig:
    """Which judge model to ask, and how: the judge's spec (backend, model, url, the backend's options) plus what
    the judge itself needs (its reply budget and its verdict cache).

    Args:
        backend: any generation backend of :data:`eval.backends.BACKENDS`: ``openai`` (an OpenAI-compatible
            endpoint such as ``vllm serve``), ``hf`` (an in-process transformers model) or ``vllm`` (in-process
            vLLM on a GPU).
        model: for ``openai`` the name the server serves; else a local path, hub id or preset.
        url: for ``openai``, the base URL including ``/v1`` (e.g. ``http://127.0.0.1:8000/v1``).
        backend_options: the backend's options (its ``Options``: for ``openai`` timeout, max_retries,
            concurrency, max_wait, breaker_failures, breaker_cooldown, api_key_env, api_key; for ``hf`` device,
            dtype, batch_size, ...); those not given take :data:`JUDGE_OPTION_DEFAULTS`, then the backend's own
            defaults. An unknown key is an error that suggests the closest.
        max_tokens: the most tokens the reply may have (one word is enough).
        cache_path: a JSONL file of verdicts, loaded at start and appended to; None keeps the cache in
            memory only.
    """

    backend: str = "openai"
    model: str = "Qwen/Qwen2.5-1.5B-Instruct"
    url: str | None = None
    backend_options: dict[str, Any] = field(default_factory=dict)
    max_tokens: int = 8
    cache_path: str | None = None

    def __post_init__(self) -> None:
        backend_class(self.backend)  # an unknown name answers "did you mean"
        if not self.model:
            raise LongmillError(
                "judge model is empty; name the served model (openai) or a local path or hub id (hf)"
            )
        if self.max_tokens < 1:
            raise LongmillError(f"judge max_tokens must be >= 1, got {self.max_tokens}")
        self.options()  # validates the backend's options (url, timeouts, concurrency, key, batch size) now

    def options(self) -> Any:
        """The backend's ``Options``: ``backend_options``, then :data:`JUDGE_OPTION_DEFAULTS` and ``url`` where the
        backend has such options, then the backend's own defaults."""
        names = option_names(self.backend)
        values = {k: v for k, v in JUDGE_OPTION_DEFAULTS.items() if k in names}
        if "url" in names:
            values["url"] = self.url
        values.update(self.backend_options)
        opts = backend_options(self.backend, values, what="judge backend option")
        if getattr(opts, "batch_size", 1) < 1:
            raise LongmillError(f"judge batch_size must be >= 1, got {opts.batch_size}")
        return opts

    def endpoint(self) -> EndpointConfig:
        """The endpoint settings of the ``openai`` backend."""
        return self.options().endpoint(self.model)

    def summary(self) -> dict[str, Any]:
        """What produced the verdicts, for reports: no key, and the URL without credentials."""
        opts = self.options()
        return {
            "backend": self.backend,
            "model": self.model,
            "url": redact_url(self.url),
            # an in-process judge has neither; the figures reported before these were options are kept
            "timeout": getattr(opts, "timeout", JUDGE_OPTION_DEFAULTS["timeout"]),
            "max_retries": getattr(opts, "max_retries", EndpointOptions.max_retries),
        }


@dataclass
class JudgeResult:
    """The judge's answer for one item.

    Args:
        verdict: True (equivalent), False (not), or None when the judge failed.
        failed: the judge could not give a verdict; never score it as a judge YES or NO.
        error: why it failed (``unparseable: ...``, ``endpoint: ...``), else None.
        cached: the verdict came from the cache, without a model call.
        raw: the model's reply, when there was one.
        reason: the failure category (``unparseable``, ``endpoint``, ``generation``), else None.
    """

    verdict: bool | None
    failed: bool
    error: str | None = None
    cached: bool = False
    raw: str | None = None
    reason: str | None = None

    @property
    def score(self) -> float | None:
        """1.0, 0.0, or None when the judge failed (for :func:`eval.reward.max_em_judge`)."""
        return None if self.verdict is None else float(self.verdict)


class _RateLimitedLog:
    """Logs the first few messages in full, then at most one per ``interval`` seconds with a count."""

    def __init__(self, first: int = 3, interval: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.first, self.interval, self.clock = first, interval, clock
        self.seen = 0
        self.suppressed = 0
        self.last = float("-inf")
        self._lock = threading.Lock()

    def warning(self, msg: str, *args: Any) -> None:
        with self._lock:
            self.seen += 1
            now = self.clock()
            if self.seen > self.first and now - self.last < self.interval:
                self.suppressed += 1
                return
            if self.suppressed:
                msg += f" ({self.suppressed} similar messages suppressed)"
            self.suppressed = 0
            self.last = now
        log.warning(msg, *args)


class Judge:
    """Grades (question, prediction, golds) items with a judge model, with a cache and failure counts.

    Args:
        backend: the generation backend that runs the judge model (``openai``, ``hf``, ``vllm``, or any
            registered one); asked greedily, one reply per prompt, at most ``max_tokens`` tokens. A prompt
            it fails on (endpoint down, out of memory) fails that item; the run goes on.
        model: the judge model's name, stored with each cached verdict; a JSONL cache only serves
            verdicts of the same model.
        cache_path: a JSONL verdict cache, loaded now and appended to; None keeps it in memory.

    ``stats`` holds ``items`` (asked for), ``cache_hits``, ``calls`` (prompts sent to the model),
    ``verdicts`` (successful model verdicts), ``failures`` and ``failures_by_reason``, and, when the cache
    file had lines it could not read (torn, not JSON, not UTF-8), ``cache_skipped``.
    """

    def __init__(
        self,
        backend: GenerationBackend,
        *,
        model: str = "",
        cache_path: str | os.PathLike | None = None,
        max_tokens: int = 8,
    ):
        self.backend = backend
        self.sampling = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=max_tokens, seed=0)
        self.model = model
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self._cache: dict[CacheKey, tuple[bool, str | None]] = {}
        self._lock = threading.Lock()
        self._warn = _RateLimitedLog()
        self._stats = Stats(items=0, cache_hits=0, calls=0, verdicts=0, failures=0, failures_by_reason={})
        if self.cache_path is not None:
            self._load_cache(self.cache_path)

    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters."""
        return self._stats.to_dict()

    # -- cache -------------------------------------------------------------------------------------
    def _load_cache(self, path: Path) -> None:
        if not path.exists():
            return
        bad = other_model = 0
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    # A line that is not UTF-8 (a damaged or foreign file) is skipped and counted like
                    # any other malformed record.
                    rec = json.loads(raw.decode("utf-8"))
                    key = _key(rec["question"], rec["prediction"], rec["golds"])
                    verdict = rec["verdict"]
                    if not isinstance(verdict, bool):
                        raise TypeError("verdict is not a boolean")
                except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, LongmillError) as e:
                    bad += 1
                    if bad == 1:
                        log.warning(
                            "%s: line %d: skipping a malformed judge cache record (%s)", path, lineno, e
                        )
                    continue
                if self.model and rec.get("model") not in (None, self.model):
                    other_model += 1
                    continue
                self._cache[key] = (verdict, rec.get("raw"))
        if bad:
            self._stats.add("cache_skipped", bad)
        log.info(
            "loaded %d judge verdicts from %s (%d malformed lines skipped, %d from other models)",
            len(self._cache),
            path,
            bad,
            other_model,
        )

    def _append_cache(self, records: list[dict[str, Any]]) -> None:
        if self.cache_path is None or not records:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.cache_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            # A killed run can leave a torn last line; the next record must not be glued onto it (the
            # whole line would be unreadable at the next load). Append-only, so concurrent writers are
            # safe: at worst an extra empty line, which loading skips.
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                os.write(fd, b"\n")
            for rec in records:
                # One write() per line on an O_APPEND file: concurrent writers never interleave a line,
                # and an interrupted run leaves at most one partial last line, which loading skips.
                os.write(fd, (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8"))
        finally:
            os.close(fd)

    # -- judging -----------------------------------------------------------------------------------
    def _fail(self, reason: str, error: str, raw: str | None) -> JudgeResult:
        self._stats.add("failures")
        self._stats.add_to("failures_by_reason", reason)
        self._warn.warning("judge failed (%s): %s", reason, error)
        return JudgeResult(
            verdict=None, failed=True, error=f"{reason}: {error}", cached=False, raw=raw, reason=reason
        )

    def judge_many(
        self, items: Sequence[tuple[str, str, Sequence[str]]], progress: Progress | None = None
    ) -> list[JudgeResult]:
        """Grade many items; cached ones are served at once and the rest are sent together.

        Args:
            items: ``(question, prediction, golds)`` tuples; ``golds`` lists every accepted answer.
            progress: called with the number of items finished (once for the cache hits, once for the
                rest).

        Returns:
            One :class:`JudgeResult` per item, in order. A failed item has ``verdict=None, failed=True``.

        Raises:
            LongmillError: an item is malformed (not a string, or no gold answers).
        """
        keys = [_key(*_unpack(i, item)) for i, item in enumerate(items)]
        results: list[JudgeResult | None] = [None] * len(keys)
        todo: dict[CacheKey, list[int]] = {}
        self._stats.add("items", len(keys))
        with self._lock:
            for i, key in enumerate(keys):
                hit = self._cache.get(key)
                if hit is not None:
                    results[i] = JudgeResult(verdict=hit[0], failed=False, cached=True, raw=hit[1])
                    self._stats.add("cache_hits")
                else:
                    todo.setdefault(key, []).append(i)
        hits = len(keys) - sum(len(v) for v in todo.values())
        if progress is not None and hits:
            progress(hits)
        if not todo:
            return results  # type: ignore[return-value]

        unique = list(todo)
        self._stats.add("calls", len(unique))
        outs = self.backend.generate_or_errors(
            [build_judge_messages(q, p, g) for q, p, g in unique],
            n=1,
            sampling=self.sampling,
            progress=progress,
        )
        if len(outs) != len(unique):
            raise LongmillError(
                f"judge backend {type(self.backend).__name__} returned {len(outs)} replies "
                f"for {len(unique)} prompts (a bug in the backend)"
            )
        replies = [o if isinstance(o, GenerationError) else o[0] for o in outs]
        new_records = []
        for key, reply in zip(unique, replies, strict=True):
            if isinstance(reply, GenerationError):
                res = self._fail(reply.reason, str(reply), None)
            else:
                verdict = parse_verdict(reply)
                if verdict is None:
                    res = self._fail("unparseable", f"reply {reply[:80]!r} is not YES or NO", reply)
                else:
                    res = JudgeResult(verdict=verdict, failed=False, cached=False, raw=reply)
                    self._stats.add("verdicts")
                    with self._lock:
                        self._cache[key] = (verdict, reply)
                    new_records.append(
                        {
                            "question": key[0],
                            "prediction": key[1],
                            "golds": list(key[2]),
                            "verdict": verdict,
                            "raw": reply,
                            "model": self.model,
                        }
                    )
            for i in todo[key]:
                results[i] = res
        with self._lock:
            self._append_cache(new_records)
        if progress is not None and len(keys) - hits > len(unique):
            progress(len(keys) - hits - len(unique))  # repeats of an item sent once
        return results  # type: ignore[return-value]

    def judge(self, question: str, prediction: str, golds: Sequence[str]) -> JudgeResult:
        """Grade one item (see :meth:`judge_many`).

        Args:
            question: the question.
            prediction: the extracted answer.
            golds: every accepted answer.
        """
        return self.judge_many([(question, prediction, golds)])[0]

    def close(self) -> None:
        """Release the backend (HTTP connections or the model)."""
        self.backend.close()

    def __enter__(self) -> Judge:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _unpack(index: int, item: Any) -> tuple[str, str, Sequence[str]]:
    try:
        question, prediction, golds = item
    except (TypeError, ValueError):
        raise LongmillError(
            f"judge item {index}: expected (question, prediction, golds), got {item!r}"
        ) from None
    if not isinstance(question, str) or not isinstance(prediction, str):
        raise LongmillError(
            f"judge item {index}: question and prediction must be strings, got "
            f"{type(question).__name__} and {type(prediction).__name__}; score a missing "
            "prediction as wrong before asking the judge"
        )
    if isinstance(golds, str) or not golds or not all(isinstance(g, str) for g in golds):
        raise LongmillError(
            f"judge item {index}: golds must be a non-empty list of answer strings, got {golds!r}"
        )
    return question, prediction, golds


def _key(question: Any, prediction: Any, golds: Any) -> CacheKey:
    if (
        not isinstance(question, str)
        or not isinstance(prediction, str)
        or isinstance(golds, str)
        or not all(isinstance(g, str) for g in golds)
    ):
        raise LongmillError("judge cache record needs string question and prediction and a list of golds")
    return (question, prediction, tuple(golds))


def judge_from_spec(
    backend: str | None,
    model: str | None,
    url: str | None = None,
    options: Sequence[str] | str | Mapping[str, Any] | None = None,
    cache: str | None = None,
) -> JudgeConfig | None:
    """The judge that ``judge_backend``, ``judge_model``, ``judge_url`` and ``judge_backend_option`` name, or None
    when none was asked for: eval's ``--judge-*`` flags and training's ``judge_*`` settings both come here.

    Args:
        backend: a generation backend (openai when None and ``url`` is given); an in-process one (hf, vllm) needs
            no url.
        model: the served name (openai) or a path, hub id or preset; None: JudgeConfig's default.
        url: the OpenAI-compatible base URL with ``/v1``.
        options: the backend's options as ``KEY=VALUE`` items (or a mapping), typed and checked by its
            ``Options``; those not given take :class:`JudgeConfig`'s defaults.
        cache: a JSONL verdict cache.

    Raises:
        LongmillError: a model without a url or in-process backend, an unknown backend or option.
    """
    if not url and backend in (None, "openai"):  # an in-process backend (hf, vllm, ...) needs no url
        if model:
            raise LongmillError(
                "--judge-model (judge_model) needs --judge-url (judge_url, an OpenAI-compatible server) or an "
                "in-process --judge-backend (hf, vllm)"
            )
        return None
    backend = backend or "openai"
    if not isinstance(options, Mapping):
        options = parse_option_items(backend, options, "judge_backend_option")
    kw: dict[str, Any] = {
        "backend": backend,
        "url": url,
        "cache_path": cache,
        "backend_options": dict(options),
    }
    if model:
        kw["model"] = model
    return JudgeConfig(**kw)


def make_judge(config: JudgeConfig) -> Judge:
    """Build the judge that ``config`` describes, on the generation backend it names.

    Args:
        config: the judge settings.

    Example:
        >>> make_judge(JudgeConfig(backend="openai"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        longmill.errors.LongmillError: the openai backend needs url=, ...
    """
    backend = backend_class(config.backend).from_options(config.model, config.options())
    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is not None and getattr(tokenizer, "chat_template", None) is None:
        backend.close()
        raise LongmillError(
            f"the {config.backend} judge model {config.model!r} has no chat template; use an instruct model"
        )
    return Judge(backend, model=config.model, cache_path=config.cache_path, max_tokens=config.max_tokens)
