"""Secrets never reach a file: the one redaction every record writer and every log handler goes through.

Three kinds of secret reach longmill: API keys (``--api-key``, ``--backend-option api_key=...``, a key
read from an environment variable), credentials in URLs (``http://user:pass@host/v1``), and whatever a
server echoes back in an error. :func:`redact` removes all three from a JSON-like object, and
:func:`redact_text` from a string:

- a field whose name is a secret's (``api_key``, ``judge_api_key``, ``password``, ``secret``...) keeps
  its key but its value becomes ``***`` (an unset value stays unset, so a reader can still tell);
- ``user:pass@`` after ``://`` becomes ``***@``;
- ``api_key=VALUE`` (an option item, a query string) becomes ``api_key=***``;
- every value registered with :data:`SECRETS` (the keys and URL credentials a client was given) becomes
  ``***`` wherever it appears.

:func:`longmill.io.atomic_write_json` (every ``stats.json``, ``manifest.json``, ``metrics.json``,
``--stats-out`` copy and meta file) redacts what it writes, and :data:`SECRETS` is a logging filter that
the CLIs put on their log handler and the HTTP client puts on its loggers (and the SDK's).

Example:
    >>> redact({"url": "http://alice:s3cret@judge:8000/v1", "api_key": "sk-123456789",
    ...         "api_key_env": "JUDGE_KEY", "backend_option": ["api_key=sk-123456789", "timeout=5"]})
    {'url': 'http://***@judge:8000/v1', 'api_key': '***', 'api_key_env': 'JUDGE_KEY', 'backend_option': ['api_key=***', 'timeout=5']}
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

#: ``user:pass@`` (or ``token@``) right after a URL's scheme.
USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_NAMES = r"api_?key|password|passwd|secret|access_token|auth_token|hf_token|authorization"
#: A field that holds a secret: the name itself or a prefixed one (``judge_api_key``), never a longer
#: name that merely starts with one (``api_key_env`` names a variable, not a key).
SECRET_FIELD = re.compile(rf"^(?:\w+_)?(?:{_NAMES})$", re.IGNORECASE)
#: ``NAME=VALUE`` with a secret's name: backend option items, query strings, command lines.
_SECRET_ITEM = re.compile(rf"(?i)\b((?:\w+_)?(?:{_NAMES}))(\s*=\s*)([^\s,&;'\"()<>\[\]{{}}]+)")
#: Registered values shorter than this are not searched for as text (they would match ordinary words:
#: vLLM's placeholder key ``EMPTY``); the field, item and URL rules above still cover them.
MIN_SECRET_LEN = 8
MASK = "***"


def redact_url(url: str | None) -> str | None:
    """The URL with any ``user:pass@`` replaced by ``***@``.

    Example:
        >>> redact_url("http://alice:s3cret@judge.local:8000/v1")
        'http://***@judge.local:8000/v1'
        >>> redact_url("http://127.0.0.1:8000/v1")
        'http://127.0.0.1:8000/v1'
    """
    return None if url is None else USERINFO.sub(MASK + "@", url)


def url_credentials(url: str | None) -> str | None:
    """The ``user:pass`` part of a URL, or None when it has none.

    Example:
        >>> url_credentials("http://alice:s3cret@judge:8000/v1"), url_credentials("http://judge/v1")
        ('alice:s3cret', None)
    """
    m = USERINFO.search(url or "")
    return m.group(0)[:-1] if m else None


class SecretRegistry(logging.Filter):
    """The secrets this process was given, and a logging filter that redacts them (and any URL
    credentials) from the records that pass through it."""

    def __init__(self) -> None:
        super().__init__()
        self.values: set[str] = set()
        self._lock = threading.Lock()

    def add(self, *values: str | None) -> None:
        """Register secret values (an API key, the ``user:pass`` of a URL); short ones are ignored."""
        with self._lock:
            self.values.update(v for v in values if v and len(v) >= MIN_SECRET_LEN)

    def redact(self, text: str) -> str:
        """``text`` with URL credentials, ``api_key=...`` items and every registered value masked."""
        text = USERINFO.sub(MASK + "@", text)
        text = _SECRET_ITEM.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
        with self._lock:
            values = sorted(self.values, key=len, reverse=True)
        for secret in values:
            text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is logging's problem, not ours
            return True
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


#: The process-wide registry (and logging filter).
SECRETS = SecretRegistry()


def redact_text(text: str) -> str:
    """A string with every kind of secret masked (see the module's docstring)."""
    return SECRETS.redact(text)


def redact(obj: Any) -> Any:
    """A copy of a JSON-like object (dicts, lists, strings, numbers) with every secret masked.

    Example:
        >>> redact({"judge_url": "https://u:pw@h/v1", "judge_api_key": None, "n": 3})
        {'judge_url': 'https://***@h/v1', 'judge_api_key': None, 'n': 3}
    """
    if isinstance(obj, dict):
        return {
            k: (MASK if obj[k] not in (None, "") else obj[k])
            if isinstance(k, str) and SECRET_FIELD.match(k)
            else redact(obj[k])
            for k in obj
        }
    if isinstance(obj, list | tuple):
        return type(obj)(redact(v) for v in obj) if isinstance(obj, list) else tuple(redact(v) for v in obj)
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


def protect_loggers(*names: str) -> None:
    """Put the :data:`SECRETS` filter on these loggers (a logger's filter sees only records logged
    through that very logger, so every one that may mention an endpoint needs it)."""
    for name in names:
        logger = logging.getLogger(name)
        if SECRETS not in logger.filters:
            logger.addFilter(SECRETS)
