"""CLI plumbing shared by ``datagen``, ``eval``, ``curriculum`` and ``train``.

Options are generated from config dataclasses, so a field has the same name in code, in params.yaml
and on the command line (``num_chains`` <-> ``--num-chains``), and its help text is the ``Args:``
entry of the dataclass docstring.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import inspect
import logging
import re
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from datagen.core.errors import LongmillError
from datagen.core.secrets import SECRETS, redact_text

log = logging.getLogger(__name__)

NOISY_LOGGERS = ("bm25s", "httpx", "httpcore", "urllib3", "filelock", "datasets", "matplotlib")
_ARG_LINE = re.compile(r"^\s{4,}(\w+)(?: \([^)]*\))?:\s*(.*)$")


def docstring_args(cls: type) -> dict[str, str]:
    """``{name: help}`` from the ``Args:`` blocks of ``cls`` and its bases (subclass entries win)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        doc = inspect.getdoc(klass) if klass.__doc__ else None
        if not doc or "Args:" not in doc:
            continue
        block = doc.split("Args:", 1)[1]
        current = None
        for line in block.splitlines():
            if line.strip() and not line.startswith(" "):
                break  # the next section
            m = (
                _ARG_LINE.match("    " + line)
                if line.startswith("    ") and not line.startswith("        ")
                else None
            )
            if m:
                current = m.group(1)
                out[current] = m.group(2).strip()
            elif current and line.strip():
                out[current] += " " + line.strip()
    return {k: _clean_help(v) for k, v in out.items()}


def _clean_help(text: str) -> str:
    return re.sub(r"``(.*?)``", r"\1", text).strip()


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def dataclass_options(
    cls: type, exclude: tuple[str, ...] = (), defaults: dict[str, Any] | None = None
) -> Callable:
    """A decorator adding one click option per field of dataclass ``cls``.

    Field metadata ``{"parse": fn}`` converts the string given on the command line (e.g. ``60k``).
    """
    hints = typing.get_type_hints(cls)
    helps = docstring_args(cls)
    defaults = defaults or {}

    def deco(fn: Callable) -> Callable:
        for f in reversed(dataclasses.fields(cls)):
            if f.name in exclude or not f.init:
                continue
            tp, optional = _unwrap_optional(hints[f.name])
            flag = "--" + f.name.replace("_", "-")
            has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            if f.name in defaults:
                default = defaults[f.name]
            elif f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = None
            if isinstance(default, list | tuple):  # shown and parsed as the CLI spells it: 20000,40000
                default = ",".join(map(str, default))
            required = not has_default and f.name not in defaults
            # A required option gets no default at all: click (8.2+) does not enforce `required` on an
            # option whose default is given, even as None, and the command would then run with None.
            kw: dict[str, Any] = {"help": helps.get(f.name, "")}
            if not required:
                kw["default"] = default
            parse = f.metadata.get("parse")
            if tp is bool:
                opt = click.option(
                    f"{flag}/--no-{f.name.replace('_', '-')}",
                    f.name,
                    **{**kw, "default": None if default is None else bool(default)},
                    show_default="auto" if default is None else True,
                )
            elif parse is not None or optional:
                # Parsed in a callback: lengths like 60k, and "None"/"null" for optional values (what `dvc`
                # writes when it unpacks a params dict with a null into flags).
                convert = parse or {int: int, float: float, Path: Path}.get(tp, str)
                opt = click.option(
                    flag,
                    f.name,
                    type=click.STRING,
                    show_default=default is not None,
                    required=required,
                    callback=lambda ctx, p, v, _c=convert, _o=optional: _convert(_c, v, p, _o, ctx),
                    **kw,
                )
            else:
                ctype = {
                    int: click.INT,
                    float: click.FLOAT,
                    str: click.STRING,
                    Path: click.Path(path_type=Path),
                }.get(tp, click.STRING)
                opt = click.option(
                    flag, f.name, type=ctype, show_default=default is not None, required=required, **kw
                )
            fn = opt(fn)
        return fn

    return deco


NULLS = ("None", "none", "null", "~")


def _convert(
    parse: Callable[[str], Any],
    value: Any,
    param: click.Parameter,
    optional: bool = False,
    ctx: click.Context | None = None,
) -> Any:
    if ctx is not None and param.name:  # the value as the user typed it (a length shown as "60k")
        ctx.meta[f"longmill.raw.{param.name}"] = value
    if value is None or (optional and isinstance(value, str) and value in NULLS):
        return None
    if not isinstance(value, str):
        return value
    try:
        return parse(value)
    except ValueError as e:
        raise click.BadParameter(str(e), param=param) from None


class FlexibleCommand(click.Command):
    """Accepts ``--num_chains`` for ``--num-chains``: flags spelled as params.yaml keys (``dvc`` unpacks dicts so)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        fixed = []
        for a in args:
            if a.startswith("--") and "_" in a.split("=", 1)[0]:
                name, eq, rest = a.partition("=")
                a = name.replace("_", "-") + eq + rest
            fixed.append(a)
        return super().parse_args(ctx, fixed)


class FlexibleGroup(click.Group):
    """A group whose commands are :class:`FlexibleCommand` s."""

    command_class = FlexibleCommand


def fields_of(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``values`` that are fields of ``cls``."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in values.items() if k in names}


def explicit_options(values: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``values`` the user typed on the command line (so they can override a config file)."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    return {
        k: v
        for k, v in values.items()
        if ctx.get_parameter_source(k) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    }


def parse_kv(values: tuple[str, ...] | list[str], what: str) -> dict[str, str]:
    """``("a=1", "b=x")`` -> ``{"a": "1", "b": "x"}`` with an error naming ``what`` on bad items."""
    out: dict[str, str] = {}
    for item in values:
        if "=" not in item:
            raise click.BadParameter(f"{what} expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


class _QuietLibraries(logging.Filter):
    """Drops records of chatty libraries below WARNING.

    A filter on the handler, not a level on their loggers: bm25s sets its logger to DEBUG when it is
    imported, which happens after logging is set up (it is imported lazily).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.split(".", 1)[0] not in NOISY_LOGGERS


def setup_logging(verbose: int) -> None:
    """Log to stderr through rich; ``-v`` shows INFO, ``-vv`` DEBUG (WARNING by default).

    Libraries' own INFO and DEBUG records (bm25s, httpx, ...) appear only with ``-vvv``.
    """
    from rich.console import Console
    from rich.logging import RichHandler

    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    # rich's default console is stdout; logs go to stderr so that a command's output (JSON, paths) stays clean
    handler = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False, markup=False)
    if verbose < 3:
        handler.addFilter(_QuietLibraries())
    handler.addFilter(SECRETS)  # every record of every logger: keys and URL credentials masked
    logging.basicConfig(level=level, format="%(message)s", datefmt="[%X]", handlers=[handler], force=True)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose >= 3 else max(level, logging.WARNING))


def raw_value(name: str, default: Any = None) -> Any:
    """The value of option ``name`` as the user typed it (before a parse callback converted it)."""
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get(f"longmill.raw.{name}", default) if ctx is not None else default


#: OS errors that come from the user's paths or machine (not from a bug): reported in one line.
USER_OS_ERRORS = (
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOENT,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
    errno.ENAMETOOLONG,
)


def friendly_errors(fn: Callable) -> Callable:
    """Turn user mistakes into a one-line message and exit status 2 (no traceback).

    :class:`LongmillError`, a path the OS refuses (missing, read-only, disk full) and a broken YAML file
    are the user's to fix; anything else is a bug and keeps its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LongmillError as e:
            message = str(e)
        except OSError as e:
            if e.errno not in USER_OS_ERRORS:
                raise
            what = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded"}.get(
                e.errno, e.strerror or str(e)
            )
            message = f"{e.filename}: {what}" if e.filename else what
        except Exception as e:
            import yaml

            if not isinstance(e, yaml.YAMLError):
                raise
            mark = getattr(e, "problem_mark", None)
            name = getattr(mark, "name", "") or ""
            if name.startswith("<"):  # parsed from a string: name the --config file the command was given
                ctx = click.get_current_context(silent=True)
                name = (
                    str((ctx.params.get("config_file") or ctx.params.get("config")) if ctx else "")
                    or "the YAML file"
                )
            where = f"{name}, line {mark.line + 1}" if mark is not None else name or "the YAML file"
            message = f"{where}: not valid YAML ({getattr(e, 'problem', None) or e}); fix the file's syntax"
        click.secho(f"error: {redact_text(message)}", fg="red", err=True)
        sys.exit(2)

    return wrapper


class progress_bar:  # noqa: N801 - used like tqdm
    """A tqdm progress bar on stderr that appears on the first update.

    Work that fails before making progress (bad options, a missing file) then prints its error
    without an empty bar above it. Use as a context manager; pass ``bar.update`` as the callback.
    """

    def __init__(self, total: int | None, desc: str, unit: str = "sample"):
        self.total, self.desc, self.unit = total, desc, unit
        self._bar: Any = None

    def update(self, n: int = 1) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total,
                desc=self.desc,
                unit=self.unit,
                dynamic_ncols=True,
                file=sys.stderr,
                mininterval=0.5,
            )
        self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> progress_bar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
