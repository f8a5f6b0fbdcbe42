"""Helpers for testing apps that use Flask-Pusher.

- :func:`auth_body`, :func:`batch_auth_body` and :func:`user_auth_body` build the
  exact request bodies that pusher-js 8 (``src/core/auth/channel_authorizer.ts``,
  ``src/core/auth/user_authenticator.ts``) and pusher-js-auth 4 (``lib/pusher-auth.js``)
  send.
- :func:`webhook_request` builds a signed webhook, as Pusher sends it
  (https://pusher.com/docs/channels/server_api/webhooks/).
- :func:`record_events` records what an app triggers instead of sending it, like
  Flask-Mail's ``record_messages()``.
- :data:`TEST_APP_ID`, :data:`TEST_KEY`, :data:`TEST_SECRET` and
  :data:`TEST_MASTER_KEY`: the credentials of the pytest plugin's local server
  (:mod:`flask_pusher.pytest_plugin`, loaded automatically once Flask-Pusher is
  installed, with the fixtures ``pusher_server``, ``pusher_config`` and ``pusher_app``).

Example::

    from flask_pusher.testing import AUTH_CONTENT_TYPE, auth_body, record_events

    def test_subscribe(client):
        r = client.post("/pusher/auth", data=auth_body("1.2", "private-room"),
                        content_type=AUTH_CONTENT_TYPE)
        assert r.status_code == 200

    def test_message(app, client):
        with record_events(app) as events:
            client.post("/messages", data={"text": "hi"})
        assert events[0].name == "message" and events[0].json == {"text": "hi"}
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any
from typing import NamedTuple
from urllib.parse import quote

from flask import current_app
from flask import Flask
from pusher.signature import sign

#: The ``Content-Type`` pusher-js sends to the auth endpoints.
AUTH_CONTENT_TYPE = "application/x-www-form-urlencoded"


def _uri_component(value: object) -> str:
    # JavaScript's encodeURIComponent: a space is %20, never +.
    return quote(str(value), safe="-_.!~*'()")


def _params(params: Mapping[str, object] | None) -> str:
    return "".join(f"&{_uri_component(k)}={_uri_component(v)}" for k, v in (params or {}).items())


def auth_body(socket_id: str, channel_name: str, params: Mapping[str, object] | None = None) -> str:
    """The form body pusher-js 8 POSTs for channel authorization.

    :param socket_id: the connection's ``socket_id``, ``digits.digits``.
    :param channel_name: the channel to authorize.
    :param params: the ``channelAuthorization.params`` entries, appended in order.
    """
    return (
        f"socket_id={_uri_component(socket_id)}"
        f"&channel_name={_uri_component(channel_name)}{_params(params)}"
    )


def batch_auth_body(
    socket_id: str, channel_names: Iterable[str], params: Mapping[str, object] | None = None
) -> str:
    """The form body pusher-js-auth 4.0.1 POSTs for a batch.

    It starts with ``&``, and the brackets of ``channel_name[N]`` are not encoded.
    """
    channels = "".join(
        f"&channel_name[{i}]={_uri_component(name)}" for i, name in enumerate(channel_names)
    )
    return f"&socket_id={_uri_component(socket_id)}{channels}{_params(params)}"


def user_auth_body(socket_id: str, params: Mapping[str, object] | None = None) -> str:
    """The form body pusher-js 8 POSTs for user authentication."""
    return f"socket_id={_uri_component(socket_id)}{_params(params)}"


class WebhookRequest(NamedTuple):
    """A signed webhook: post ``body`` with ``headers``.

    ``client.post("/pusher/events", data=req.body, headers=req.headers)``
    """

    body: bytes
    headers: dict[str, str]


def webhook_request(
    events: Iterable[Mapping[str, Any]],
    *,
    key: str | None = None,
    secret: str | None = None,
    time_ms: int | None = None,
) -> WebhookRequest:
    """Build a webhook as Pusher sends it.

    :param events: event dicts, such as ``{"name": "channel_occupied", "channel": "c"}``.
    :param key: the app key for ``X-Pusher-Key``; default: the current app's.
    :param secret: the secret that signs the body; default: the current app's.
    :param time_ms: the creation time in milliseconds since the epoch; default: now.
    :raises RuntimeError: when ``key`` or ``secret`` is left out and no app with the
        extension is current.
    """
    if key is None or secret is None:
        settings = current_app.extensions["pusher"].settings
        key = settings.key if key is None else key
        secret = settings.secret if secret is None else secret
    if time_ms is None:
        time_ms = int(time.time() * 1000)
    text = json.dumps({"time_ms": time_ms, "events": [dict(e) for e in events]})
    headers = {
        "Content-Type": "application/json",
        "X-Pusher-Key": key,
        "X-Pusher-Signature": sign(secret, text),
    }
    return WebhookRequest(text.encode(), headers)


@dataclasses.dataclass(frozen=True)
class RecordedEvent:
    """One event an app triggered while :func:`record_events` was active.

    :param channels: the channels it was sent to.
    :param name: the event name.
    :param data: the ``data`` string exactly as Pusher would receive it (for an
        encrypted channel, the ``{"nonce", "ciphertext"}`` JSON).
    :param socket_id: the excluded connection, or ``None``.
    :param deferred: whether it was deferred to after the response
        (``defer=True`` or ``PUSHER_DEFER``).
    """

    channels: tuple[str, ...]
    name: str
    data: str
    socket_id: str | None = None
    deferred: bool = False

    @property
    def json(self) -> Any:
        """``data`` decoded from JSON."""
        return json.loads(self.data)


class _Recorder:
    """Put on the client by :func:`record_events`: records event requests."""

    def __init__(self, events: list[RecordedEvent]) -> None:
        self._events = events

    def record(self, request: Any, deferred: bool) -> bool:
        if request.method != "POST" or not request.path.endswith(("/events", "/batch_events")):
            return False
        body = json.loads(request.body)
        for event in body.get("batch", [body]):
            channels = event.get("channels") or [event["channel"]]
            self._events.append(
                RecordedEvent(
                    tuple(channels), event["name"], event["data"], event.get("socket_id"), deferred
                )
            )
        return True


@contextmanager
def record_events(app: Flask | None = None) -> Iterator[list[RecordedEvent]]:
    """Record the events an app triggers instead of sending them.

    Within the block, ``trigger``, ``trigger_batch`` and ``send_to_user`` and their
    ``*_async`` twins reach no server: each event is appended to the yielded list as
    a :class:`RecordedEvent`, encoded as Pusher would receive it. Other HTTP API
    calls (``channels_info``...) still go to the configured host.

    Deferred events are recorded when the response is ready (not when it is
    closed, which Flask's test client leaves to the test), with ``deferred=True``,
    one per channel, as they would be sent; the events of a 5xx response are
    dropped and not recorded. Events held for a commit (``after_commit``,
    ``PUSHER_OUTBOX``, model broadcasting) are recorded when ``db.session``
    commits, and never for a rollback; the outbox table is left alone.

    :param app: the app; default: the current app.
    """
    app = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]
    with app.app_context():
        client = current_app.extensions["pusher"].client
    events: list[RecordedEvent] = []
    previous = client.recorder
    client.recorder = _Recorder(events)
    try:
        yield events
    finally:
        client.recorder = previous


#: The app id of the ``pusher_server`` fixture's app (:mod:`flask_pusher.pytest_plugin`).
TEST_APP_ID = "1"
#: The key of the ``pusher_server`` fixture's app.
TEST_KEY = "flask-pusher-test"
#: The secret of the ``pusher_server`` fixture's app.
TEST_SECRET = "flask-pusher-test-secret"
#: The encryption master key of the ``pusher_config`` fixture: 32 bytes, base64.
TEST_MASTER_KEY = "Zmxhc2stcHVzaGVyLXRlc3QtbWFzdGVyLWtleS0zMmI="
