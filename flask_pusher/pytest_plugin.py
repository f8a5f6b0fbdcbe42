"""The pytest plugin of Flask-Pusher: fixtures for testing against a local server.

Registered through the ``pytest11`` entry point, so pytest loads it whenever
Flask-Pusher is installed; nothing to import. Disable it with ``-p no:flask_pusher``.

- :func:`pusher_server`: a running local Pusher Channels server (extra ``server``).
- :func:`pusher_config`: the ``PUSHER_*`` config of an app that uses it.
- :func:`pusher_app`: a Flask app with the extension configured against it.
- :func:`pusher_connect`: clients connected to it, authorized through an app's
  own routes with a Flask test client (extra ``client``).

The helpers that build requests and record events are in :mod:`flask_pusher.testing`.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from typing import Any
from typing import TYPE_CHECKING

import pytest
from flask import Flask
from flask.testing import FlaskClient

from .testing import TEST_APP_ID
from .testing import TEST_KEY
from .testing import TEST_MASTER_KEY
from .testing import TEST_SECRET

if TYPE_CHECKING:
    from .channels import SyncChannelsClient
    from .server import LocalServer


@pytest.fixture(scope="session")
def pusher_server() -> Iterator[LocalServer]:
    """A local Pusher Channels server on a free port, for the whole test session.

    It serves one app, :data:`~flask_pusher.testing.TEST_APP_ID` /
    :data:`~flask_pusher.testing.TEST_KEY` / :data:`~flask_pusher.testing.TEST_SECRET`,
    and holds ``channel_vacated`` and ``member_removed`` webhooks back 0.1 s instead
    of 3 s. Needs the ``server`` extra.
    """
    pytest.importorskip("aiohttp", reason='needs "flask-pusher[server]"')
    from .server import AppConfig
    from .server import LocalServer

    with LocalServer([AppConfig(TEST_APP_ID, TEST_KEY, TEST_SECRET)], webhook_delay=0.1) as server:
        yield server


@pytest.fixture
def pusher_config(pusher_server: LocalServer) -> dict[str, Any]:
    """The ``PUSHER_*`` config of an app that uses :func:`pusher_server`.

    ``app.config.update(pusher_config)`` before ``init_app``.
    """
    return {
        "PUSHER_APP_ID": TEST_APP_ID,
        "PUSHER_KEY": TEST_KEY,
        "PUSHER_SECRET": TEST_SECRET,
        "PUSHER_HOST": pusher_server.host,
        "PUSHER_PORT": pusher_server.port,
        "PUSHER_SSL": False,
        "PUSHER_ENCRYPTION_MASTER_KEY_BASE64": TEST_MASTER_KEY,
    }


@pytest.fixture
def pusher_app(pusher_config: dict[str, Any]) -> Flask:
    """A Flask app with a :class:`~flask_pusher.Pusher` configured for
    :func:`pusher_server`; reach the extension as ``app.extensions["pusher"]``."""
    from .extension import Pusher

    app = Flask("pusher_app")
    app.config.update(TESTING=True, **pusher_config)
    Pusher(app)
    return app


@pytest.fixture
def pusher_connect(pusher_server: LocalServer) -> Iterator[Callable[..., SyncChannelsClient]]:
    """Connect clients to :func:`pusher_server`, each authorized through an app's
    own routes with a Flask test client, so the test's login state applies::

        def test_message_reaches_bob_not_alice(pusher_app, pusher_connect):
            alice, bob = pusher_app.test_client(), pusher_app.test_client()
            log_in(alice, "alice"); log_in(bob, "bob")
            a = pusher_connect(alice).subscribe("private-room")
            b = pusher_connect(bob).subscribe("private-room")
            ...

    ``pusher_connect(flask_client, signin=False, timeout=10.0, **options)`` returns
    a connected :class:`~flask_pusher.channels.SyncChannelsClient`: its channel
    authorization and user authentication ``POST`` pusher-js's exact bodies to the
    app's ``PUSHER_URL_PREFIX`` + ``PUSHER_AUTH`` and ``PUSHER_USER_AUTH`` routes
    through ``flask_client``; a refusal is an
    :class:`~flask_pusher.channels.AuthError` with the route's status. With
    ``signin=True`` it signs in first. ``options`` go to the client
    (``timeouts``, ``max_history``...). Without ``flask_client``, only public
    channels work. Every client is disconnected after the test. Needs the
    ``client`` extra, and an app configured with :func:`pusher_config` (as
    :func:`pusher_app` is).

    :raises RuntimeError: if the app's ``PUSHER_KEY`` is not the server's.
    """
    pytest.importorskip("nacl", reason='needs "flask-pusher[client]"')
    from .channels import SyncChannelsClient
    from .testing_client import flask_auth_options

    made: list[SyncChannelsClient] = []

    def connect(
        flask_client: FlaskClient | None = None,
        *,
        signin: bool = False,
        timeout: float = 10.0,
        **options: Any,
    ) -> SyncChannelsClient:
        if flask_client is not None:
            options.update(flask_auth_options(flask_client, TEST_KEY))
        client = SyncChannelsClient(
            TEST_KEY, host=pusher_server.host, port=pusher_server.port, use_tls=False, **options
        )
        made.append(client)
        client.connect(timeout)
        if signin:
            client.signin(timeout)
        return client

    yield connect
    for client in made:
        client.disconnect()
