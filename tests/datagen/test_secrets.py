"""The one redaction: record files (atomic_write_json), CLI log handlers and CLI error lines."""

from __future__ import annotations

import json
import logging

import click
import pytest

from longmill.errors import LongmillError
from longmill.io import atomic_write_json
from longmill.secrets import SECRETS, redact, redact_text

from ..cli import run_cli


def test_redact_masks_fields_items_urls_and_registered_values():
    SECRETS.add("sk-registered-42", "EMPTY")  # vLLM's placeholder key: too short to be searched for
    record = {
        "api_key": "sk-plain-1234567",
        "judge_api_key": None,
        "api_key_env": "JUDGE_KEY",
        "url": "https://alice:pw-in-url@judge.local/v1",
        "backend_option": ["api_key=sk-option-7654321", "max_rounds=3"],
        "problems": ["401 from server: key sk-registered-42 rejected"],
        "nested": [{"password": "hunter2"}, ("http://bob@host/v1",)],
        "question": "Who was EMPTY's owner?",  # short words are never searched for as secrets
        "n": 3,
    }
    out = redact(record)
    text = json.dumps(out)
    for secret in ("sk-plain", "pw-in-url", "sk-option", "sk-registered", "hunter2", "bob@"):
        assert secret not in text
    assert out["api_key"] == "***" and out["judge_api_key"] is None and out["api_key_env"] == "JUDGE_KEY"
    assert out["url"] == "https://***@judge.local/v1" and out["backend_option"][1] == "max_rounds=3"
    assert out["question"] == record["question"] and out["n"] == 3
    assert redact_text("GET /v1?api_key=abc123&x=1") == "GET /v1?api_key=***&x=1"


def test_every_json_record_is_written_redacted(tmp_path):
    atomic_write_json(
        tmp_path / "stats.json", {"generation": {"url": "http://u:pa55word@h/v1", "api_key": "k" * 12}}
    )
    text = (tmp_path / "stats.json").read_text()
    assert "pa55word" not in text and "k" * 12 not in text and "http://***@h/v1" in text


def test_cli_logs_and_errors_are_redacted_whatever_logger_wrote_them():
    from longmill.cliutil import friendly_errors, setup_logging

    @click.command()
    @friendly_errors
    def cmd():
        setup_logging(0)
        logging.getLogger("some.other.library").warning("calling http://carol:pa55-log-word@h/v1")
        raise LongmillError("cannot reach http://carol:pa55-log-word@h/v1 (api_key=sk-err-1234567)")

    proc = run_cli(cmd, prog_name="cmd")
    assert proc.returncode == 2 and "calling http://***@h/v1" in proc.stderr
    assert (
        "pa55-log-word" not in proc.stderr and "sk-err" not in proc.stderr and "(api_key=***)" in proc.stderr
    )


@pytest.mark.parametrize(
    "name", ["api_key", "OPENAI_API_KEY", "difficulty_api_key", "password", "client_secret"]
)
def test_secret_field_names(name):
    assert redact({name: "value-1234"}) == {name: "***"}


@pytest.mark.parametrize("name", ["api_key_env", "max_tokens", "prompt_tokens", "tokenizer", "secretary"])
def test_ordinary_field_names(name):
    assert redact({name: "value-1234"}) == {name: "value-1234"}
