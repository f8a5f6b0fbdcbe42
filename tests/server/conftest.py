"""Fixtures for the local server's tests: a running server and its clients."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import pytest

from flask_pusher.server import AppConfig
from flask_pusher.server import LocalServer

from ..needs import unavailable
from .helpers import APP_ID
from .helpers import KEY
from .helpers import pusher_client
from .helpers import SECRET
from .redis_server import redis_server_binary
from .redis_server import RedisServer


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


@pytest.fixture(scope="session")
def redis_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], RedisServer]]:
    """Make started :class:`~tests.server.redis_server.RedisServer`\\ s, each on
    a free port in a directory of its own; all are stopped at the session's end.
    Skips (fails under CI) without a ``redis-server`` binary on PATH."""
    if redis_server_binary() is None:
        unavailable("no redis-server on PATH (Debian: apt-get install redis-server).")
    made: list[RedisServer] = []

    def make() -> RedisServer:
        server = RedisServer(tmp_path_factory.mktemp("redis"))
        made.append(server)
        return server.start()

    yield make
    for server in made:
        server.close()


@pytest.fixture
def redis_server(redis_factory: Callable[[], RedisServer]) -> Iterator[RedisServer]:
    """A running, empty redis-server of this test's own (``.url``, ``.stop()``,
    ``.restart()`` on the same port, ``.kill()``, ``.client()``)."""
    server = redis_factory()
    yield server
    server.close()
