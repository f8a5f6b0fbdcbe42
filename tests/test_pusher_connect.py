"""The ``pusher_connect`` fixture: clients on the local server authorized through
the app's own routes with the Flask test client, so login state applies; what a
view triggers reaches the right connections (reference §1.2, §5.8)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import abort
from flask import Flask
from flask import session

from flask_pusher import Pusher
from flask_pusher.channels import AuthError
from flask_pusher.channels import SyncChannelsClient

Connect = Callable[..., SyncChannelsClient]


@pytest.fixture
def app(pusher_app: Flask) -> Flask:
    pusher_app.secret_key = "test"
    pusher: Pusher = pusher_app.extensions["pusher"]

    @pusher_app.post("/login/<name>")
    def login(name: str) -> str:
        session["name"] = name
        return ""

    @pusher_app.post("/say")
    def say() -> str:
        if "name" not in session:
            abort(401)
        pusher.trigger("private-team", "said", {"by": session["name"]}, to_others=True)
        return ""

    @pusher.auth
    def team_only(channel_name: str, socket_id: str) -> bool:
        return session.get("name") in ("alice", "bob")

    @pusher.channel_data
    def member(channel_name: str, socket_id: str) -> dict[str, Any]:
        return {"user_id": session["name"]}

    @pusher.user_data
    def user(socket_id: str) -> dict[str, Any] | None:
        return {"id": session["name"]} if "name" in session else None

    return pusher_app


def logged_in(app: Flask, name: str) -> Any:
    client = app.test_client()
    assert client.post(f"/login/{name}").status_code == 200
    return client


def test_to_others_reaches_bob_and_not_alice(app: Flask, pusher_connect: Connect) -> None:
    alice_http, bob_http = logged_in(app, "alice"), logged_in(app, "bob")
    alice_client = pusher_connect(alice_http)
    alice = alice_client.subscribe("private-team")
    bob = pusher_connect(bob_http).subscribe("private-team")
    headers = {"X-Socket-ID": alice_client.socket_id}
    assert alice_http.post("/say", headers=headers).status_code == 200
    assert bob.wait_for("said").data == {"by": "alice"}
    # Alice's page said it, so her connection is left out; the next event
    # reaches her first: the server keeps a channel's order per connection.
    assert bob_http.post("/say").status_code == 200
    assert alice.wait_for("said").data == {"by": "bob"}
    assert [e.data for e in alice.events("said")] == [{"by": "bob"}]


def test_presence_list_and_refused_channel(app: Flask, pusher_connect: Connect) -> None:
    alice = pusher_connect(logged_in(app, "alice")).subscribe("presence-team")
    bob = pusher_connect(logged_in(app, "bob")).subscribe("presence-team")
    assert sorted(m.id for m in bob.members) == ["alice", "bob"]
    assert bob.members.me is not None and bob.members.me.id == "bob"
    assert alice.wait_for("pusher:member_added").data.id == "bob"
    carol = pusher_connect(logged_in(app, "carol"))
    with pytest.raises(AuthError) as info:
        carol.subscribe("private-team")
    assert info.value.status == 403
    anonymous = pusher_connect(app.test_client())
    with pytest.raises(AuthError):
        anonymous.signin()
    assert anonymous.subscribe("public").subscribed


def test_signin_as_the_logged_in_user(app: Flask, pusher_connect: Connect) -> None:
    bob = pusher_connect(logged_in(app, "bob"), signin=True)
    with app.app_context():
        app.extensions["pusher"].send_to_user("bob", "hello", {"x": 1})
    assert bob.user.wait_for("hello").data == {"x": 1}


def test_an_app_with_another_key_is_a_setup_error(pusher_connect: Connect) -> None:
    other = Flask("other")
    other.config.update(PUSHER_APP_ID="1", PUSHER_KEY="other", PUSHER_SECRET="s")
    Pusher(other)
    with pytest.raises(RuntimeError, match="pusher_config"):
        pusher_connect(other.test_client())
