"""Fixtures shared by eval's tests."""

from __future__ import annotations

import pytest

from .fake_server import FakeServer


@pytest.fixture
def server():
    """A started loopback OpenAI-compatible :class:`FakeServer`, stopped after the test."""
    with FakeServer() as s:
        yield s
