"""Fixtures for the local server's tests: a running server and its clients."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from flask_pusher.server import AppConfig
from flask_pusher.server import LocalServer

from .helpers import APP_ID
from .helpers import KEY
from .helpers import pusher_client
from .helpers import SECRET


@pytest.fixture
def app_config() -> AppConfig:
    """The app served, with the Pusher docs' test credentials."""
    return AppConfig(APP_ID, KEY, SECRET)


@pytest.fixture
def server(app_config: AppConfig) -> Iterator[LocalServer]:
    """A running LocalServer on a free port, stopped after the test."""
    with LocalServer([app_config], tick_interval=0.1) as running:
        yield running


@pytest.fixture
def client(server: LocalServer) -> Any:
    """The official ``pusher`` library pointed at the server."""
    return pusher_client(server.port)
