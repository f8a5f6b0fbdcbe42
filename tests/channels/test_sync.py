"""The sync facade over real sockets: a background loop thread, channels that keep
their events in order, typed errors raised in the caller's thread."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from flask_pusher.channels import AuthError
from flask_pusher.channels import AuthOptions
from flask_pusher.channels import ConnectionRefused
from flask_pusher.channels import History
from flask_pusher.channels import SyncChannelsClient
from flask_pusher.channels.protocol import Event
from flask_pusher.server import LocalServer
from flask_pusher.testing import TEST_KEY

from .conftest import AuthApp


def sync_client(server: LocalServer, key: str = TEST_KEY, **kwargs: Any) -> SyncChannelsClient:
    return SyncChannelsClient(key, host=server.host, port=server.port, use_tls=False, **kwargs)


def test_sync_client_receives_in_order_even_events_that_came_first(
    pusher_server: LocalServer, auth_app: AuthApp
) -> None:
    threads = threading.active_count()
    with sync_client(pusher_server, **auth_app.options()) as client:
        assert client.state == "connected" and client.socket_id
        room = client.subscribe("private-room")
        assert room.subscribed
        with auth_app.app.app_context():
            for i in range(3):
                auth_app.pusher.trigger("private-room", "n", {"i": i})
            auth_app.pusher.trigger("private-room", "other", {})
        # All four arrived before these calls: still returned, in order.
        assert [room.wait_for("n").data["i"] for _ in range(3)] == [0, 1, 2]
        assert room.wait_for("other").data == {}
        with pytest.raises(TimeoutError):
            room.wait_for("n", timeout=0.2)
        names = [e.name for e in room.events() if e.name != "pusher:subscription_count"]
        assert names == ["pusher:subscription_succeeded", "n", "n", "n", "other"]
        with pytest.raises(AuthError) as info:
            client.subscribe("private-forbidden-x")
        assert info.value.status == 403
        assert client.signin() == {"id": "u1"}
    assert client.state == "disconnected"
    client.disconnect()  # twice is fine
    assert threading.active_count() == threads


def test_sync_client_wrong_key_raises_in_the_callers_thread(pusher_server: LocalServer) -> None:
    client = sync_client(pusher_server, key="wrong")
    with pytest.raises(ConnectionRefused) as info:
        client.connect(5)
    assert info.value.code == 4001
    client.disconnect()


def test_sync_client_setup_mistake_raises_and_leaves_no_thread() -> None:
    threads = threading.active_count()
    with pytest.raises(ValueError, match="cluster"):
        SyncChannelsClient("key")
    assert threading.active_count() == threads
    with pytest.raises(ValueError, match="endpoint"):
        AuthOptions()


def test_history_is_bounded_and_counts_what_it_forgot() -> None:
    history = History(max_history=2)
    for i in range(5):
        history.add(Event("e", "c", i))
    assert [e.data for e in history.events()] == [3, 4] and history.forgotten == 3
    assert history.wait_for("e", 0).data == 3
