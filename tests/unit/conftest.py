"""Unit tests that run ``tagus`` in-process (``ops.cli.main``) configure structlog as the
command does (WARNING and above); put the configuration back after every test so that a
later test's ``capture_logs`` still sees info lines."""

from __future__ import annotations

import pytest
import structlog


@pytest.fixture(autouse=True)
def _structlog_restored():
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
