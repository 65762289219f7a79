"""Run a longmill command line in-process with click's CliRunner.

A subprocess costs each call a fresh interpreter and fresh imports of torch, transformers and pyarrow
(seconds each on 2 cores), so ordinary CLI checks run in-process. The result has the shape of
``subprocess.run``'s (``returncode``, ``stdout``, ``stderr``), so a test reads the same either way. A few
tests stay true end-to-end subprocess runs (``python -m ...``); they say so in a comment.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from pathlib import Path


def run_cli(main, *args: str, prog_name: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Invoke the click command ``main`` with ``args`` as ``prog_name`` would be run from a shell.

    An exception that escapes the command (what a subprocess would show as a traceback and exit 1)
    propagates, so a test never mistakes a crash for the exit code it expected. The root logger's
    handlers and level, which the CLIs' ``setup_logging`` replaces, are restored afterwards.
    """
    from click.testing import CliRunner

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext():
            res = CliRunner().invoke(
                main, [os.fspath(a) for a in args], prog_name=prog_name, catch_exceptions=False
            )
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return subprocess.CompletedProcess([prog_name, *args], res.exit_code, res.stdout, res.stderr)


def files_holding(root: Path, *secrets: str) -> list[str]:
    """``"path: secret"`` for every file under ``root`` (hidden ones and subfolders included) whose bytes
    hold one of ``secrets``: what a test of "secrets never reach a file" greps every written file with."""
    found = []
    for path in sorted(Path(root).rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {s}" for s in secrets if s.encode() in data]
    return found
