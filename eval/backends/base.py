"""The generation backend interface: ``generate(prompts, n, sampling) -> completions``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from datagen.core.errors import LongmillError
from datagen.core.registry import Registry
from datagen.core.types import Messages, Progress


@dataclass
class SamplingParams:
    """How completions are sampled (the same names as vLLM's and the OpenAI API's).

    Args:
        temperature: 0 means greedy.
        top_p: nucleus sampling mass.
        max_tokens: the most tokens a completion may have.
        seed: seed for sampling (per request where the backend supports it).
        stop: strings that end a completion.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 1024
    seed: int = 0
    stop: list[str] | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise LongmillError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise LongmillError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise LongmillError(f"max_tokens must be >= 1, got {self.max_tokens}")


class GenerationBackend:
    """Generates ``n`` completions per chat prompt.

    ``generate`` returns one entry per prompt: a list of ``n`` completion strings, or ``None`` when the
    backend could not produce them (an endpoint that kept failing); callers count those as failed and
    never score them as wrong.
    """

    name: ClassVar[str] = ""

    def generate(self, prompts: Sequence[Messages], n: int = 1, sampling: SamplingParams | None = None,
                 progress: Progress | None = None) -> list[list[str] | None]:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (GPU memory, HTTP connections)."""

    def __enter__(self) -> GenerationBackend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


BACKENDS: Registry[Callable[..., GenerationBackend]] = Registry("backend")


def get_backend(name: str, model: str, **options: Any) -> GenerationBackend:
    """Build backend ``name`` for ``model`` (``UnknownNameError`` with a suggestion otherwise)."""
    import eval.backends  # noqa: F401  (registers the built-in backends)

    return BACKENDS.get(name)(model, **options)
