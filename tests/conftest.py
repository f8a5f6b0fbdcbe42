"""Fixtures for the extension's tests: an app with the Pusher docs' test credentials
(reference §1.3), the extension, and a test client."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from flask_pusher import Pusher

from .needs import unavailable
from .server.redis_server import redis_server_binary
from .server.redis_server import RedisServer

#: The credentials of the Pusher docs' worked examples (reference §1.3).
APP_ID = "3"
KEY = "278d425bdf160c739803"
SECRET = "7ad3773142a6692b25b8"
#: 32 bytes, base64: an encryption master key for encrypted channels.
MASTER_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
SOCKET_ID = "1234.1234"


@pytest.fixture
def app() -> Iterator[Flask]:
    app = Flask(__name__)
    app.config.update(
        TESTING=True,
        PUSHER_APP_ID=APP_ID,
        PUSHER_KEY=KEY,
        PUSHER_SECRET=SECRET,
        PUSHER_ENCRYPTION_MASTER_KEY_BASE64=MASTER_KEY,
    )
    yield app


@pytest.fixture
def pusher(app: Flask) -> Pusher:
    return Pusher(app)


@pytest.fixture
def client(app: Flask, pusher: Pusher) -> FlaskClient:
    return app.test_client()


def json_body(response: TestResponse) -> Any:
    """The response's JSON body; fails the test when it has none."""
    body = response.get_json(silent=True)
    assert body is not None, response.get_data(as_text=True)
    return body


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
