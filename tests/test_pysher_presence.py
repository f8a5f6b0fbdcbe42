"""pysher 1.0.8 joins a presence channel through the extension's auth endpoint.

pysher sends ``channel_data`` as its own ``json.dumps(user_data)`` (default separators)
beside the signature it got from the endpoint, so the endpoint must sign the member
exactly as the official library encodes it (issue 10 item 5, reference §1.3).
"""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from typing import Any

import pysher
import pytest
from flask import Flask

from flask_pusher import Pusher
from flask_pusher.server import LocalServer
from flask_pusher.testing import TEST_KEY

from .serving import serve_http

MEMBER = {"user_id": "7", "user_info": {"name": "Ann", "langs": ["fr", "en"]}}


@pytest.fixture
def auth_url(pusher_config: dict[str, Any]) -> Iterator[str]:
    app = Flask(__name__)
    app.config.update(pusher_config)
    pusher = Pusher(app)
    pusher.auth(lambda channel_name, socket_id: True)
    pusher.channel_data(lambda channel_name, socket_id: MEMBER)
    with serve_http(app) as url:
        yield f"{url}/pusher/auth"


def test_channel_data_is_encoded_as_the_official_library_does(
    pusher_app: Flask, pusher_config: dict[str, Any]
) -> None:
    pusher = pusher_app.extensions["pusher"]
    pusher.channel_data(lambda channel_name, socket_id: MEMBER)
    with pusher_app.app_context():
        body = pusher.authenticate("presence-room", "1.2", MEMBER)
        signed_in = pusher.authenticate_user("1.2", {"id": "7", "user_info": {"a": 1}})
    assert body["channel_data"] == json.dumps(MEMBER)
    assert signed_in["user_data"] == json.dumps({"id": "7", "user_info": {"a": 1}})


def test_pysher_joins_a_presence_channel_through_the_endpoint(
    pusher_server: LocalServer, auth_url: str
) -> None:
    members: queue.Queue[Any] = queue.Queue()
    socket = pysher.Pusher(
        TEST_KEY,
        custom_host="127.0.0.1",
        port=pusher_server.port,
        secure=False,
        auth_endpoint=auth_url,
        user_data=MEMBER,
    )

    def on_connect(data: str) -> None:
        channel = socket.subscribe("presence-room")
        channel.bind("pusher_internal:subscription_succeeded", members.put)

    socket.connection.bind("pusher:connection_established", on_connect)
    socket.connect()
    try:
        data = members.get(timeout=15)
        presence = json.loads(data)["presence"]
        assert presence["hash"] == {"7": MEMBER["user_info"]}
    finally:
        socket.disconnect(timeout=5)
