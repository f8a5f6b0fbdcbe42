"""pysher 1.0.8, a quirky second client (servers doc §7): it advertises
protocol 6, pings before the handshake, omits ``auth`` on public channels and
needs ``connection_established`` data as a JSON string."""

from __future__ import annotations

import json
import queue
import threading
from typing import Any

import pysher

from flask_pusher.server import LocalServer

from .helpers import KEY
from .helpers import SECRET


def test_pysher_subscribes_and_receives_events(server: LocalServer, client: Any) -> None:
    received: queue.Queue[tuple[str, Any]] = queue.Queue()
    subscribed = threading.Event()
    socket = pysher.Pusher(
        KEY, custom_host="127.0.0.1", port=server.port, secure=False, secret=SECRET
    )

    def on_connect(data: str) -> None:
        json.loads(data)  # pysher itself parses it too: it must be a JSON string
        public = socket.subscribe("news")
        private = socket.subscribe("private-room")
        public.bind("update", lambda data: received.put(("news", data)))
        private.bind("update", lambda data: received.put(("private-room", data)))
        private.bind("pusher_internal:subscription_succeeded", lambda data: subscribed.set())

    socket.connection.bind("pusher:connection_established", on_connect)
    socket.connect()
    try:
        assert subscribed.wait(15), "pysher's private subscription did not succeed"
        assert client.channel_info("news")["occupied"]
        client.trigger(["news", "private-room"], "update", {"price": 1})
        got = dict(received.get(timeout=10) for _ in range(2))
        assert {k: json.loads(v) for k, v in got.items()} == {
            "news": {"price": 1},
            "private-room": {"price": 1},
        }
    finally:
        # websocket-client may miss the close reply and sit in select() for
        # pysher's ping_timeout (100 s): do not wait for its thread that long.
        socket.disconnect(timeout=5)
