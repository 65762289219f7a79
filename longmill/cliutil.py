"""CLI plumbing shared by ``datagen``, ``eval``, ``curriculum`` and ``train``.

Options are generated from config dataclasses, so a field has the same name in code, in params.yaml
and on the command line (``num_chains`` <-> ``--num-chains``), and its help text is the ``Args:``
entry of the dataclass docstring.
"""

from __future__ import annotations

import copy
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

from longmill.errors import LongmillError
from longmill.secrets import SECRETS, redact_text

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


def field_defaults(cls: type) -> dict[str, Any]:
    """``{name: default}`` of the fields of dataclass ``cls`` that have one (factories called)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


NULLS = ("None", "none", "null", "~")
_TYPE_NAMES = {int: "integer", float: "float"}  # click's words in "'x' is not a valid integer."


def _int_or_str(text: str) -> int | str:
    return int(text) if text.lstrip("-").isdigit() else text


def _json_or_str(text: str) -> Any:
    import json

    return json.loads(text) if text.strip().startswith(("{", "[")) else text


_METAVARS = {int: "INTEGER", float: "FLOAT", Path: "PATH", _json_or_str: "JSON"}


def _spelling(tp: Any, parse: Callable | None) -> tuple[str, Callable, bool] | None:
    """How a flag spells a field of type ``tp``: ``(kind, convert, optional)``, kind ``flag`` (a boolean),
    ``list`` (``a,b`` or the flag repeated) or ``value``; None for a type no flag can spell."""
    union = typing.get_origin(tp) in (typing.Union, types.UnionType)
    args = [a for a in typing.get_args(tp) if a is not type(None)] if union else [tp]
    optional = union and len(args) < len(typing.get_args(tp))
    if parse is not None:  # metadata {"parse": fn}: the field reads its own spelling (60k, 20k,40k)
        return "value", parse, optional
    if args == [bool]:
        return "flag", bool, optional
    for a in args:
        if typing.get_origin(a) is list:
            inner = (typing.get_args(a) or (str,))[0]
            return "list", inner if inner in (int, float) else str, optional
    if any(a is dict or typing.get_origin(a) is dict for a in args):
        return "value", _json_or_str, optional
    if len(args) == 1 and args[0] in (int, float, Path):
        return "value", args[0], optional
    if set(args) == {int, str}:
        return "value", _int_or_str, optional
    if all(isinstance(a, type) and issubclass(a, str) for a in args if a is not bool):
        return "value", str, optional
    return None


def dataclass_options(
    cls: type,
    exclude: tuple[str, ...] = (),
    defaults: dict[str, Any] | None = None,
    shown: tuple[str, ...] | None = None,
) -> Callable:
    """A decorator adding one click option per field of dataclass ``cls``: the project's one options builder.

    The flag is the field's name in kebab case (``--num-chains``; :class:`FlexibleCommand` also takes
    ``--num_chains``, what DVC writes from params.yaml), its help the field's ``Args:`` entry (or its
    ``metadata["help"]``, as TRL's fields carry it), its default the field's. Booleans get ``--x/--no-x``;
    lists take ``a,b`` or a repeated flag; dicts take JSON; optional fields take ``None``/``null`` (what DVC
    writes for a null); field metadata ``{"parse": fn}`` converts the text typed (``60k``). A value the user
    typed is found by click's parameter source (:func:`typed_options`), so a default never hides a YAML value.

    Args:
        cls: the config dataclass.
        exclude: fields that get no flag (the command sets them).
        defaults: defaults of this command that differ from the dataclass's.
        shown: when given, only these fields and those documented in an ``Args:`` block of ``cls`` (or a
            base) appear in ``--help``; the others are hidden but accepted (TRL's hundreds of fields).
    """
    hints = typing.get_type_hints(cls)
    documented = docstring_args(cls)
    helps = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)} | documented
    values = field_defaults(cls) | (defaults or {})

    def deco(fn: Callable) -> Callable:
        for f in reversed(dataclasses.fields(cls)):
            spelling = _spelling(hints[f.name], f.metadata.get("parse"))
            if f.name in exclude or not f.init or spelling is None:
                continue
            kind, convert, optional = spelling
            flag = "--" + f.name.replace("_", "-")
            default = values.get(f.name)
            kw: dict[str, Any] = {
                "help": " ".join(str(helps.get(f.name, "")).split()).replace("%%", "%"),
                "hidden": shown is not None and f.name not in documented and f.name not in shown,
            }
            if f.name in values:
                # A required option gets no default at all: click (8.2+) does not enforce `required` on an
                # option whose default is given, even as None, and the command would then run with None.
                kw["default"] = default
            if kind == "flag":
                opt = click.option(
                    f"{flag}/--no-{f.name.replace('_', '-')}",
                    f.name,
                    **{**kw, "default": None if default is None else bool(default)},
                    show_default=default is not None,
                )
            else:
                if kind == "list" and default is not None and not isinstance(default, list | tuple):
                    kw["default"] = [default]  # report_to: "none" (TRL's str-or-list fields)
                elif isinstance(default, list | tuple) and kind != "list":  # as the CLI spells it: 20k,40k
                    kw["default"] = ",".join(map(str, default))
                opt = click.option(
                    flag,
                    f.name,
                    type=click.STRING,
                    metavar="A,B" if kind == "list" else _METAVARS.get(convert, "TEXT"),
                    multiple=kind == "list",
                    show_default=default is not None and not isinstance(default, dict),
                    required=f.name not in values,
                    callback=functools.partial(_convert, convert, kind == "list", optional, default),
                    **kw,
                )
            fn = opt(fn)
        return fn

    return deco


def _convert(
    convert: Callable[[str], Any],
    is_list: bool,
    optional: bool,
    default: Any,
    ctx: click.Context,
    param: click.Parameter,
    value: Any,
) -> Any:
    """A typed flag's value: the field's own default object when it was not typed, else ``value`` parsed."""
    from click.core import ParameterSource

    if ctx.get_parameter_source(param.name) is ParameterSource.DEFAULT:
        return copy.deepcopy(default)  # a list default is the command's own, not shared between runs
    ctx.meta[f"longmill.raw.{param.name}"] = value  # as the user typed it (a length shown as "60k")
    texts = [x for v in value for x in str(v).split(",") if x != ""] if is_list else [value]
    if not is_list and (value is None or (optional and value in NULLS)):
        return None
    out = []
    for text in texts:
        try:
            out.append(convert(text))
        except ValueError as e:
            name = _TYPE_NAMES.get(convert)
            raise click.BadParameter(
                f"{text!r} is not a valid {name}." if name else str(e), ctx, param
            ) from None
    return (out or None) if is_list else out[0]


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


def typed_options(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The values of ``cls``'s fields that the user typed (by click's parameter source: a typed value equal
    to the default counts), so that they can override a config file or be checked against each other."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return {
        k: v
        for k, v in values.items()
        if k in names
        and ctx.get_parameter_source(k) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
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
