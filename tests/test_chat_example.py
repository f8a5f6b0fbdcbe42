"""The chat example's server side, without a browser: who may subscribe to what,
and what each POST triggers (tests/browser/test_chat.py runs it in Chromium)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from flask import Flask
from flask import render_template
from flask.testing import FlaskClient

from examples.chat import create_app
from examples.chat import realtime
from flask_pusher.testing import auth_body
from flask_pusher.testing import AUTH_CONTENT_TYPE
from flask_pusher.testing import record_events
from flask_pusher.testing import user_auth_body
from flask_pusher.testing import webhook_request

from .conftest import json_body

SOCKET_ID = "1234.5678"


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    monkeypatch.delenv("PUSHER_URL", raising=False)
    # Credentials given, so no local server starts; record_events keeps triggers here.
    app = create_app(
        {
            "TESTING": True,
            "PUSHER_APP_ID": "1",
            "PUSHER_KEY": "chat-key",
            "PUSHER_SECRET": "chat-secret",
        }
    )
    with record_events(app) as events:
        app.config["EVENTS"] = events
        yield app


def sign_in(client: FlaskClient, name: str) -> None:
    assert client.post("/signin", data={"name": name}).status_code == 302


def subscribe(client: FlaskClient, channel: str) -> int:
    r = client.post(
        "/pusher/auth", data=auth_body(SOCKET_ID, channel), content_type=AUTH_CONTENT_TYPE
    )
    return r.status_code


def test_pages_link_to_the_local_servers_debug_console_only_when_it_runs(app: Flask) -> None:
    page = app.test_client().get("/").data.decode()
    assert "<form" in page and "debug-console" not in page
    local_app = create_app({"TESTING": True, "PUSHER_LOCAL_SERVER": True})
    with local_app.test_request_context():
        page = render_template("signin.html")
    assert 'id="debug-console" href="http://127.0.0.1:6001/console"' in page


def test_local_server_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PUSHER_URL", "PUSHER_APP_ID", "FLASK_PUSHER_URL", "FLASK_PUSHER_APP_ID"):
        monkeypatch.delenv(name, raising=False)
    assert create_app().config["PUSHER_LOCAL_SERVER"] is True
    monkeypatch.setenv("PUSHER_URL", "https://key:secret@api-eu.pusher.com/apps/7")
    app = create_app()
    assert app.config["PUSHER_LOCAL_SERVER"] is False
    with app.app_context():
        assert app.extensions["pusher"].settings.app_id == "7"


@pytest.mark.parametrize("name", ["", "a b", "x" * 21, "a-b", "<script>"])
def test_signin_refuses_bad_names(app: Flask, name: str) -> None:
    client = app.test_client()
    client.post("/signin", data={"name": name})
    assert "Your name" in client.get("/").text
    assert subscribe(client, "presence-room") == 403


@pytest.mark.parametrize(
    ("channel", "status"),
    [
        ("presence-room", 200),
        ("private-encrypted-room", 200),
        ("private-dm-alice-bob", 200),
        ("private-dm-bob-carol", 403),
        ("private-dm-bob-alice", 403),  # the names are sorted
        ("private-other", 403),
    ],
)
def test_who_may_subscribe(app: Flask, channel: str, status: int) -> None:
    client = app.test_client()
    assert subscribe(client, channel) == 403
    sign_in(client, "alice")
    assert subscribe(client, channel) == status


def test_presence_member_and_signin_are_the_name(app: Flask) -> None:
    client = app.test_client()
    sign_in(client, "alice")
    r = client.post(
        "/pusher/auth",
        data=auth_body(SOCKET_ID, "presence-room"),
        content_type=AUTH_CONTENT_TYPE,
    )
    assert json.loads(json_body(r)["channel_data"])["user_id"] == "alice"
    r = client.post(
        "/pusher/user-auth", data=user_auth_body(SOCKET_ID), content_type=AUTH_CONTENT_TYPE
    )
    assert json.loads(json_body(r)["user_data"])["id"] == "alice"


def test_posts_trigger_events(app: Flask) -> None:
    events = app.config["EVENTS"]
    client = app.test_client()
    assert client.post("/messages", json={"text": "hi"}).status_code == 401
    sign_in(client, "bob")
    assert client.post("/messages", json={"text": "  "}).status_code == 400
    assert client.post("/messages", json={"text": "hi all"}).status_code == 201
    assert client.post("/dm", json={"to": "alice", "text": "psst"}).status_code == 201
    assert client.post("/dm", json={"to": "bob", "text": "me?"}).status_code == 400
    assert client.post("/secret", json={"text": "hush"}).status_code == 201
    assert client.post("/welcome").status_code == 201
    sent = [(e.channels, e.name) for e in events]
    assert sent == [
        (("room",), "message"),
        (("private-dm-alice-bob",), "message"),
        (("#server-to-user-alice",), "notification"),
        (("private-encrypted-room",), "message"),
        (("#server-to-user-bob",), "notification"),
    ]
    assert events[0].json["text"] == "hi all"
    assert "hush" not in events[3].data and "ciphertext" in events[3].json


def test_webhooks_fill_the_activity_log(app: Flask) -> None:
    realtime.activity.clear()
    with app.app_context():
        hook = webhook_request(
            [
                {"name": "channel_occupied", "channel": "presence-room"},
                {"name": "member_added", "channel": "presence-room", "user_id": "alice"},
            ]
        )
    client = app.test_client()
    assert client.post("/pusher/events", data=hook.body, headers=hook.headers).status_code == 200
    log = json_body(client.get("/activity"))
    assert [(e["name"], e["user_id"]) for e in log] == [
        ("channel_occupied", None),
        ("member_added", "alice"),
    ]
    assert [e.channels for e in app.config["EVENTS"]] == [("activity",), ("activity",)]
