"""The generation backend interface: ``generate(prompts, n, sampling) -> completions``.

Each backend class owns its options: ``Options`` is a dataclass of the keyword arguments its constructor
takes (besides the model), with their defaults and docs. :func:`backend_options` builds and checks them
from any mapping or object (a CLI config, the judge's config, ``KEY=VALUE`` strings), so generic code
never lists a backend's options, and an unknown key answers "did you mean ...?".
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from longmill.errors import LongmillError, UnknownNameError
from longmill.registry import Registry, did_you_mean
from longmill.types import Messages, Progress


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


@dataclass
class BackendOptions:
    """Options of a backend that takes none besides the model (backends subclass it with their own)."""


class GenerationError(LongmillError):
    """One prompt produced no completions.

    Args:
        reason: a short category, counted by callers (``endpoint``, ``generation``).
        message: the details.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):
        return (type(self), (self.reason, str(self)))


class GenerationBackend:
    """Generates ``n`` completions per chat prompt.

    ``generate`` returns one entry per prompt: a list of ``n`` completion strings, or ``None`` when the
    backend could not produce them (an endpoint that kept failing); callers count those as failed and
    never score them as wrong. ``generate_or_errors`` gives the :class:`GenerationError` instead of None.

    A subclass sets ``name``, ``Options`` (the dataclass of its constructor's keyword options) and
    ``failure_reason`` (the category of a failed prompt).
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = BackendOptions
    failure_reason: ClassVar[str] = "generation"

    @classmethod
    def from_options(cls, model: str, options: Any) -> GenerationBackend:
        """Build the backend for ``model`` from an instance of its ``Options``."""
        return cls(model, **{f.name: getattr(options, f.name) for f in dataclasses.fields(options)})

    def generate(
        self,
        prompts: Sequence[Messages],
        n: int = 1,
        sampling: SamplingParams | None = None,
        progress: Progress | None = None,
    ) -> list[list[str] | None]:
        raise NotImplementedError

    def generate_or_errors(
        self,
        prompts: Sequence[Messages],
        n: int = 1,
        sampling: SamplingParams | None = None,
        progress: Progress | None = None,
    ) -> list[list[str] | GenerationError]:
        """Like :meth:`generate`, with the error of each failed prompt in place of None."""
        outs = self.generate(prompts, n=n, sampling=sampling, progress=progress)
        return [
            GenerationError(
                self.failure_reason, f"the {self.name} backend failed on this prompt (see the log)"
            )
            if o is None
            else o
            for o in outs
        ]

    def close(self) -> None:
        """Release resources (GPU memory, HTTP connections)."""

    def __enter__(self) -> GenerationBackend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


BACKENDS: Registry[type[GenerationBackend]] = Registry("backend")


def backend_class(name: str) -> type[GenerationBackend]:
    """The class of backend ``name`` (``UnknownNameError`` with a suggestion otherwise)."""
    import eval.backends  # noqa: F401  (registers the built-in backends)

    return BACKENDS.get(name)


def option_names(name: str) -> list[str]:
    """The option names backend ``name`` declares."""
    return [f.name for f in dataclasses.fields(backend_class(name).Options)]


def check_option_keys(name: str, keys: Iterable[str], what: str = "option") -> None:
    """Refuse a key that backend ``name`` does not declare, with "did you mean" and the valid names."""
    valid = option_names(name)
    for key in keys:
        if key not in valid:
            raise UnknownNameError(
                f"unknown {what} '{key}' of the {name} backend{did_you_mean(key, valid)} "
                f"Valid options: {', '.join(valid) or '(none)'}"
            )


def backend_options(
    name: str, values: Mapping[str, Any] | None = None, *, defaults_from: Any = None, what: str = "option"
) -> Any:
    """Backend ``name``'s ``Options`` instance.

    Args:
        name: a registered backend.
        values: explicit options; an unknown key is an error that suggests the closest valid one.
        defaults_from: an object (e.g. a CLI config) whose attributes of the same names as the
            backend's options fill those not in ``values``.
        what: what an option is called in messages (``--backend-option``).
    """
    cls = backend_class(name).Options
    values = dict(values or {})
    check_option_keys(name, values, what)
    if defaults_from is not None:
        for f in dataclasses.fields(cls):
            if f.name not in values and hasattr(defaults_from, f.name):
                values[f.name] = getattr(defaults_from, f.name)
    return cls(**values)


def split_option_items(text: str | Sequence[str] | None) -> list[str]:
    """``"a=1,b=2"`` (or a list of such strings) -> ``["a=1", "b=2"]``.

    Example:
        >>> split_option_items(["a=1,b=2", " c=3 "])
        ['a=1', 'b=2', 'c=3']
    """
    items = [text] if isinstance(text, str) else list(text or [])
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


def parse_option_items(
    name: str, items: Sequence[str] | str | None, what: str = "--backend-option"
) -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` (or ``"K=V,K2=V2"``) as backend ``name``'s options, typed by its ``Options``.

    Example:
        >>> parse_option_items("vllm", ["gpu_memory_utilization=0.5", "enforce_eager=true", "max_model_len=None"])
        {'gpu_memory_utilization': 0.5, 'enforce_eager': True, 'max_model_len': None}
    """
    items = split_option_items(items)
    cls = backend_class(name).Options
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise LongmillError(f"{what} expects KEY=VALUE, got {item!r}")
        key, text = (s.strip() for s in item.split("=", 1))
        check_option_keys(name, [key], what)
        out[key] = _convert(text, hints[key], f"{what} {key}")
    return out


def _convert(text: str, tp: Any, what: str) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    optional = len(args) < len(typing.get_args(tp))
    if optional and text.lower() in ("none", "null", ""):
        return None
    base = args[0] if optional and len(args) == 1 else tp
    try:
        if base is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        return base(text) if base in (int, float, str) else text
    except ValueError:
        raise LongmillError(f"{what}: cannot read {text!r} as {getattr(base, '__name__', base)}") from None


def get_backend(name: str, model: str, **options: Any) -> GenerationBackend:
    """Build backend ``name`` for ``model`` (``UnknownNameError`` with a suggestion otherwise).

    ``options`` are checked against the backend's ``Options`` ("did you mean" for a misspelt one).
    """
    cls = backend_class(name)
    return cls.from_options(model, backend_options(name, options))


def options_help() -> str:
    """Each backend's option names, for a CLI's help (``hf: device, dtype, ...; openai: url, ...``)."""
    import eval.backends  # noqa: F401  (registers the built-in backends)

    return "; ".join(f"{name}: {', '.join(option_names(name))}" for name in BACKENDS.names())


def add_options_help(command: Any, param_name: str) -> None:
    """Append :func:`options_help` to the help of ``command``'s option ``param_name`` (a click command)."""
    for param in command.params:
        if param.name == param_name:
            param.help = f"{param.help or ''} Options by backend: {options_help()}."
