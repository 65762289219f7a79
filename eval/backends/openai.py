"""The ``openai`` generation backend: completions from any OpenAI-compatible chat endpoint.

Use it for ``vllm serve`` or SGLang running on other machines, or for hosted APIs. Each prompt is one
``/chat/completions`` request with ``n`` choices; when a server returns fewer choices than asked (some
ignore ``n``), the missing ones are requested again until ``n`` are collected. A prompt whose requests
keep failing comes back as ``None`` and is counted, never scored as wrong.

Example (against ``vllm serve Qwen/Qwen2.5-7B-Instruct --port 8000``)::

    from eval.backends.base import SamplingParams, get_backend

    with get_backend("openai", "Qwen/Qwen2.5-7B-Instruct", url="http://127.0.0.1:8000/v1") as backend:
        outs = backend.generate([[{"role": "user", "content": "2+2?"}]], n=4,
                                sampling=SamplingParams(temperature=0.7, max_tokens=32))
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eval.backends.base import (
    BACKENDS,
    GenerationBackend,
    GenerationError,
    Messages,
    Progress,
    SamplingParams,
)
from eval.http import ChatClient, ChatRequest, EndpointConfig, EndpointError, EndpointOptions
from longmill.errors import LongmillError
from longmill.stats import Stats

log = logging.getLogger(__name__)


@dataclass
class OpenAIOptions(EndpointOptions):
    """Options of the ``openai`` backend: those of :class:`eval.http.EndpointOptions` (url, api_key,
    api_key_env, timeout, max_retries, concurrency, max_wait, breaker_failures, breaker_cooldown), and:

    Args:
        max_rounds: how many times a prompt may be asked for missing choices when the server returns
            fewer than ``n`` (None: up to ``n`` rounds, enough since every round yields at least one).
    """

    max_rounds: int | None = None

    def __post_init__(self) -> None:
        if not self.url:
            raise LongmillError(
                "the openai backend needs url=, the server's base URL including /v1, among its backend options "
                "(e.g. url=http://127.0.0.1:8000/v1): start one with e.g. `vllm serve MODEL --port 8000`"
            )
        if self.max_rounds is not None and self.max_rounds < 1:
            raise LongmillError(f"max_rounds must be >= 1 or None, got {self.max_rounds}")
        self.endpoint("-")  # checks timeout, retries, concurrency and the key now, not at the first request

    def endpoint(self, model: str) -> EndpointConfig:
        """The HTTP client's settings for ``model``."""
        return EndpointConfig(**(self.endpoint_fields() | {"url": self.url or ""}), model=model)


class OpenAIBackend(GenerationBackend):
    """Generates through an OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        model: the name the server serves (the argument of ``vllm serve``).
        client: an already built chat client (tests inject one with a fake clock); its config then
            names the endpoint and the model, and the other options are not used.
        **options: see :class:`OpenAIOptions`.

    ``stats`` counts ``prompts``, ``failed_prompts``, ``requests`` and ``topup_requests`` (requests made
    because a server returned fewer than ``n`` choices).
    """

    name = "openai"
    Options = OpenAIOptions
    failure_reason = "endpoint"

    def __init__(self, model: str, *, client: ChatClient | None = None, **options: Any):
        if client is None:
            opts = OpenAIOptions(**options)
            client = ChatClient(opts.endpoint(model))
            self.max_rounds = opts.max_rounds
        else:
            self.max_rounds = options.get("max_rounds")
        self.config = client.config
        self.client = client
        self._stats = Stats(prompts=0, failed_prompts=0, requests=0, topup_requests=0)

    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (the HTTP client's own are in ``client.stats``)."""
        return self._stats.to_dict()

    def _add(self, key: str, k: int = 1) -> None:
        self._stats.add(key, k)

    def generate(
        self,
        prompts: Sequence[Messages],
        n: int = 1,
        sampling: SamplingParams | None = None,
        progress: Progress | None = None,
    ) -> list[list[str] | None]:
        """Sample ``n`` completions for each chat prompt.

        Args:
            prompts: chat prompts (lists of ``{role, content}`` messages).
            n: completions per prompt.
            sampling: temperature, top_p, max_tokens, seed and stop; defaults to greedy.
            progress: called with 1 as each prompt is finished (completed or given up).

        Returns:
            Per prompt, ``n`` completions, or None when its requests failed after retries.
        """
        outs = self.generate_or_errors(prompts, n=n, sampling=sampling, progress=progress)
        failed = [i for i, o in enumerate(outs) if isinstance(o, GenerationError)]
        if failed:  # generate_or_errors leaves the logging to its caller (the judge rate-limits its own)
            log.warning(
                "openai backend: %d of %d prompts failed after retries and are returned as None; "
                "first (prompt %d): %s",
                len(failed),
                len(prompts),
                failed[0],
                outs[failed[0]],
            )
        return [None if isinstance(o, GenerationError) else o for o in outs]

    def generate_or_errors(
        self,
        prompts: Sequence[Messages],
        n: int = 1,
        sampling: SamplingParams | None = None,
        progress: Progress | None = None,
    ) -> list[list[str] | GenerationError]:
        """Like :meth:`generate`, with each failed prompt's endpoint error (reason ``endpoint``) in place of
        None; it counts failures in ``stats`` but does not log them."""
        if n < 1:
            raise LongmillError(f"n must be >= 1, got {n}")
        sampling = sampling or SamplingParams()
        got: list[list[str]] = [[] for _ in prompts]
        results: list[list[str] | None] = [None] * len(prompts)
        errors: dict[int, EndpointError] = {}
        pending = list(range(len(prompts)))
        self._add("prompts", len(prompts))
        max_rounds = self.max_rounds or n
        for round_ in range(max_rounds):
            if not pending:
                break
            # A top-up round gets another seed: the same seed would make the server repeat the
            # completions it already returned.
            seed = None if sampling.seed is None else sampling.seed + round_
            requests = [
                ChatRequest(
                    messages=prompts[i],
                    n=n - len(got[i]),
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    max_tokens=sampling.max_tokens,
                    seed=seed,
                    stop=sampling.stop,
                )
                for i in pending
            ]
            self._add("requests", len(requests))
            if round_:
                self._add("topup_requests", len(requests))
            still: list[int] = []
            last_round = round_ == max_rounds - 1

            def on_result(
                j: int,
                res: list[str] | EndpointError,
                _pending: list[int] = pending,
                _still: list[int] = still,
                _last: bool = last_round,
            ) -> None:
                i = _pending[j]
                if isinstance(res, EndpointError):
                    errors[i] = res
                elif len(got[i]) + len(res) >= n:
                    results[i] = (got[i] + res)[:n]
                elif not _last:
                    got[i].extend(res)
                    _still.append(i)
                    return
                else:
                    errors[i] = EndpointError(
                        f"{self.client.url}: only {len(got[i]) + len(res)} of {n} choices after "
                        f"{max_rounds} requests",
                        url=self.client.url,
                        reason="too_few_choices",
                        attempts=max_rounds,
                    )
                if progress is not None:
                    progress(1)

            self.client.chat_many(requests, on_result=on_result)
            pending = sorted(still)
        if errors:
            self._add("failed_prompts", len(errors))
        return [
            GenerationError(self.failure_reason, str(errors[i])) if i in errors else r  # type: ignore[misc]
            for i, r in enumerate(results)
        ]

    def close(self) -> None:
        self.client.close()


BACKENDS.add("openai", OpenAIBackend)
