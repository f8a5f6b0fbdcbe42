"""Channel authorization and user authentication through a Flask test client, for
the ``pusher_connect`` fixture (:mod:`flask_pusher.pytest_plugin`): the client's
requests reach the app's own routes with the test's cookies, as a browser's
pusher-js requests would."""

from __future__ import annotations

import json
import threading
from typing import Any

from flask.testing import FlaskClient

from .channels import AuthError
from .channels import AuthOptions
from .channels import AuthRequest
from .testing import auth_body
from .testing import AUTH_CONTENT_TYPE
from .testing import user_auth_body


def flask_auth_options(flask_client: FlaskClient, key: str) -> dict[str, AuthOptions]:
    """``channel_authorization`` and ``user_authentication`` options that ``POST``
    through ``flask_client`` to its app's auth routes.

    :param flask_client: the test client (its cookies are the user's login).
    :param key: the key the client connects with.
    :raises RuntimeError: if the app has no Pusher extension, or another key.
    """
    app = flask_client.application
    ext = app.extensions.get("pusher")
    if ext is None:
        raise RuntimeError("The test client's app has no Pusher extension: call Pusher(app).")
    with app.app_context():
        settings = ext.settings
    if settings.key != key:
        raise RuntimeError(
            f"The app's PUSHER_KEY is {settings.key!r}, but the local server's is {key!r}:"
            " configure the app with the pusher_config fixture."
        )
    lock = threading.Lock()  # a test client is not for two threads at once

    def post(path: str, body: str, request: AuthRequest) -> dict[str, Any]:
        with lock:
            response = flask_client.post(path, data=body, content_type=AUTH_CONTENT_TYPE)
        text = response.get_data(as_text=True)
        if response.status_code != 200:
            raise AuthError(
                request.channel_name or "", "AuthError", text[:200], response.status_code
            )
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise AuthError(
                request.channel_name or "", "AuthError", "Invalid JSON from the auth route", 200
            )
        return data

    def channel(request: AuthRequest) -> dict[str, Any]:
        assert request.channel_name is not None
        body = auth_body(request.socket_id, request.channel_name)
        return post(settings.url_prefix + settings.auth_path, body, request)

    def user(request: AuthRequest) -> dict[str, Any]:
        return post(
            settings.url_prefix + settings.user_auth_path,
            user_auth_body(request.socket_id),
            request,
        )

    return {
        "channel_authorization": AuthOptions(handler=channel),
        "user_authentication": AuthOptions(handler=user),
    }
