"""The chat example as its users' browsers see it, without a browser: clients on the
local server authorized by the chat's own routes through the Flask test client
(the ``pusher_connect`` fixture); what each POST triggers reaches exactly the
connections it should."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from examples.chat import create_app
from examples.chat import realtime
from flask_pusher.channels import AuthError
from flask_pusher.channels import SyncChannelsClient

Connect = Callable[..., SyncChannelsClient]


@pytest.fixture
def chat(pusher_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Flask:
    monkeypatch.delenv("PUSHER_URL", raising=False)
    return create_app({"TESTING": True, **pusher_config})


def signed_in(app: Flask, name: str) -> FlaskClient:
    client = app.test_client()
    assert client.post("/signin", data={"name": name}).status_code == 302
    return client


def test_presence_room_lists_who_is_online(chat: Flask, pusher_connect: Connect) -> None:
    ann = pusher_connect(signed_in(chat, "ann")).subscribe(realtime.PRESENCE)
    bob = pusher_connect(signed_in(chat, "bob")).subscribe(realtime.PRESENCE)
    assert {m.id: m.info for m in bob.members} == {
        "ann": realtime.user_info("ann"),
        "bob": realtime.user_info("bob"),
    }
    assert ann.wait_for("pusher:member_added").data.id == "bob"


def test_room_message_and_typing_client_event(chat: Flask, pusher_connect: Connect) -> None:
    ann_http = signed_in(chat, "ann")
    ann = pusher_connect(ann_http)
    bob = pusher_connect(signed_in(chat, "bob"))
    bob_room = bob.subscribe(realtime.ROOM)
    assert ann_http.post("/messages", json={"text": "hello"}).status_code == 201
    assert bob_room.wait_for("message").data["text"] == "hello"
    ann_presence = ann.subscribe(realtime.PRESENCE)
    bob_presence = bob.subscribe(realtime.PRESENCE)
    assert ann_presence.trigger("client-typing", {"typing": True})
    typing = bob_presence.wait_for("client-typing")
    assert typing.user_id == "ann" and typing.data == {"typing": True}


def test_direct_message_reaches_the_two_users_only(chat: Flask, pusher_connect: Connect) -> None:
    ann_http = signed_in(chat, "ann")
    channel = realtime.dm_channel("ann", "bob")
    bob = pusher_connect(signed_in(chat, "bob"), signin=True)
    bob_dm = bob.subscribe(channel)
    with pytest.raises(AuthError) as refused:
        pusher_connect(signed_in(chat, "eve")).subscribe(channel)
    assert refused.value.status == 403
    assert ann_http.post("/dm", json={"to": "bob", "text": "psst"}).status_code == 201
    assert bob_dm.wait_for("message").data == {"from": "ann", "to": "bob", "text": "psst"}
    note = bob.user.wait_for("notification")
    assert note.data == {"text": "ann sent you a direct message."}


def test_encrypted_room_is_decrypted_for_members(chat: Flask, pusher_connect: Connect) -> None:
    ann_http = signed_in(chat, "ann")
    bob = pusher_connect(signed_in(chat, "bob")).subscribe(realtime.ENCRYPTED)
    assert ann_http.post("/secret", json={"text": "hush"}).status_code == 201
    assert bob.wait_for("message").data == {"from": "ann", "text": "hush"}
    with pytest.raises(AuthError) as refused:
        pusher_connect(chat.test_client()).subscribe(realtime.ENCRYPTED)
    assert refused.value.status == 403
