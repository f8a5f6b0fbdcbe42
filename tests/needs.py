"""Real-client suites skip when their client is missing, except under CI."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(reason: str) -> NoReturn:
    """Skip the test for ``reason``; fail instead when the ``CI`` variable is set,
    so that CI cannot pass without the real client (Node, Chromium...)."""
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason} CI is set, so this test must run.")
    pytest.skip(reason)
