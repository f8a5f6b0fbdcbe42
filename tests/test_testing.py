"""flask_pusher.testing: the helpers our users test with."""

from __future__ import annotations

import base64
import json
from typing import Any

import pusher as pusher_http
import pytest
from flask import Flask
from nacl.secret import SecretBox

from flask_pusher import Pusher
from flask_pusher.testing import record_events
from flask_pusher.testing import RecordedEvent
from flask_pusher.testing import webhook_request

from .conftest import APP_ID
from .conftest import KEY
from .conftest import SECRET


def test_record_events_from_a_view(app: Flask, pusher: Pusher) -> None:
    @app.post("/messages")
    def send() -> dict[str, Any]:
        pusher.trigger(["room", "lobby"], "message", {"text": "hi"}, socket_id="1.2")
        pusher.trigger_batch([{"channel": "a", "name": "x", "data": "raw"}])
        pusher.send_to_user("u1", "note", [1, 2])
        return {}

    with record_events(app) as events:
        assert app.test_client().post("/messages").status_code == 200
    assert events == [
        RecordedEvent(("room", "lobby"), "message", '{"text": "hi"}', "1.2"),
        RecordedEvent(("a",), "x", "raw", None),
        RecordedEvent(("#server-to-user-u1",), "note", "[1, 2]", None),
    ]
    assert events[0].json == {"text": "hi"}


def test_record_events_keeps_encrypted_payloads_as_sent(app: Flask, pusher: Pusher) -> None:
    with app.app_context(), record_events() as events:
        pusher.trigger("private-encrypted-x", "e", {"secret": 1})
        shared = base64.b64decode(
            pusher.authenticate("private-encrypted-x", "1.2")["shared_secret"]
        )
    sent = events[0].json
    plain = SecretBox(shared).decrypt(
        base64.b64decode(sent["ciphertext"]), base64.b64decode(sent["nonce"])
    )
    assert json.loads(plain) == {"secret": 1}


def test_record_events_restores_the_backend(app: Flask, pusher: Pusher) -> None:
    with app.app_context():
        backend = pusher.client._pusher_client.http
        with pytest.raises(ZeroDivisionError), record_events():
            raise ZeroDivisionError
        assert pusher.client._pusher_client.http is backend


def test_webhook_request_is_valid_for_the_official_library() -> None:
    req = webhook_request([{"name": "channel_occupied", "channel": "c"}], key=KEY, secret=SECRET)
    body = pusher_http.Pusher(APP_ID, KEY, SECRET).validate_webhook(
        req.headers["X-Pusher-Key"], req.headers["X-Pusher-Signature"], req.body
    )
    assert body["events"] == [{"name": "channel_occupied", "channel": "c"}]


def test_webhook_request_needs_an_app_for_defaults() -> None:
    with pytest.raises(RuntimeError):
        webhook_request([])
