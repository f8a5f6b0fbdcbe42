"""WebSocket frames over real sockets with an aiohttp client (reference §5)."""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import logging
import os
import socket
import struct
import threading
from typing import Any

import aiohttp
import pytest

from flask_pusher.server import AppConfig
from flask_pusher.server import LocalServer
from flask_pusher.server import WebhookConfig

from .helpers import APP_ID
from .helpers import channel_auth
from .helpers import data_of
from .helpers import KEY
from .helpers import pusher_client
from .helpers import run_scenario
from .helpers import SECRET
from .helpers import WS

Session = aiohttp.ClientSession


def test_handshake(server: LocalServer) -> None:
    async def scenario(session: Session) -> None:
        ws = await session.ws_connect(f"{server.ws_url}/app/{KEY}?protocol=7&client=js")
        frame = json.loads((await ws.receive(5)).data)
        assert frame["event"] == "pusher:connection_established"
        data = data_of(frame)  # a JSON string, as pysher needs
        assert data["activity_timeout"] == 120
        left, _, right = data["socket_id"].partition(".")
        assert left.isdigit() and right.isdigit()
        await ws.close()

    run_scenario(scenario)


@pytest.mark.parametrize("query", ["protocol=5", "protocol=6", "", "client=Pysher&version=1.0.7"])
def test_protocols_5_to_7_and_missing_are_accepted(server: LocalServer, query: str) -> None:
    async def scenario(session: Session) -> None:
        ws = await WS.connect(session, server.ws_url, query=query)
        await ws.close()

    run_scenario(scenario)


@pytest.mark.parametrize(
    ("key", "query", "code"),
    [
        ("wrongkey", "protocol=7", 4001),
        (KEY, "protocol=4", 4007),
        (KEY, "protocol=x", 4007),
        ("\u00e9" * 60, "protocol=7", 4001),  # a reason cut to 123 bytes stays UTF-8
    ],
)
def test_refusals_send_error_then_close_code(
    server: LocalServer, key: str, query: str, code: int
) -> None:
    async def scenario(session: Session) -> None:
        ws = await session.ws_connect(f"{server.ws_url}/app/{key}?{query}")
        frame = json.loads((await ws.receive(5)).data)
        assert frame["event"] == "pusher:error"
        assert frame["data"]["code"] == code
        msg = await ws.receive(5)
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert msg.data == code

    run_scenario(scenario)


def test_disabled_app_is_refused_with_4003() -> None:
    with LocalServer([AppConfig(APP_ID, KEY, SECRET, enabled=False)]) as server:

        async def scenario(session: Session) -> None:
            ws = await session.ws_connect(f"{server.ws_url}/app/{KEY}?protocol=7")
            frame = json.loads((await ws.receive(5)).data)
            assert frame["event"] == "pusher:error" and frame["data"]["code"] == 4003
            msg = await ws.receive(5)
            assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 4003)

        run_scenario(scenario)


def test_port_in_use_raises_oserror(server: LocalServer, app_config: AppConfig) -> None:
    with pytest.raises(OSError):
        LocalServer([app_config], port=server.port).start()


def test_ping_pong_including_pysher_early_ping(server: LocalServer) -> None:
    async def scenario(session: Session) -> None:
        ws = await session.ws_connect(f"{server.ws_url}/app/{KEY}?protocol=6")
        await ws.send_str('{"event":"pusher:ping","data":""}')  # may precede the greeting
        first = json.loads((await ws.receive(5)).data)
        assert first["event"] == "pusher:connection_established"
        assert json.loads((await ws.receive(5)).data)["event"] == "pusher:pong"
        client = WS(ws)
        await client.send("pusher:ping", {})
        await client.expect("pusher:pong")
        await ws.close()

    run_scenario(scenario)


def test_server_pings_idle_client_then_closes_4201() -> None:
    app = AppConfig(APP_ID, KEY, SECRET, activity_timeout=1, pong_timeout=0.5)
    with LocalServer([app], tick_interval=0.05) as server:

        async def scenario(session: Session) -> None:
            answering = await WS.connect(session, server.ws_url)
            silent = await WS.connect(session, server.ws_url)
            await answering.expect("pusher:ping", timeout=5)
            await answering.send("pusher:pong", {})
            await silent.expect("pusher:ping", timeout=5)
            error = await silent.expect("pusher:error", timeout=5)
            assert error["data"]["code"] == 4201
            msg = await silent.ws.receive(5)
            assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 4201)
            assert not answering.ws.closed
            await answering.close()

        run_scenario(scenario)


@pytest.mark.parametrize(
    "text",
    ["nonsense", "[]", "{}", '{"event": 1}', '{"event":"pusher:subscribe","data":5}', "\x00"],
)
def test_malformed_frames_are_answered_not_fatal(server: LocalServer, text: str) -> None:
    async def scenario(session: Session) -> None:
        ws = await WS.connect(session, server.ws_url)
        await ws.ws.send_str(text)
        error = await ws.expect("pusher:error")
        assert error["data"]["message"]
        await ws.ws.send_bytes(b"\x01\x02")
        await ws.expect("pusher:error")
        await ws.send("pusher:ping")
        await ws.expect("pusher:pong")  # still alive
        await ws.close()

    run_scenario(scenario)


def test_public_private_presence_subscriptions(server: LocalServer) -> None:
    async def scenario(session: Session) -> None:
        ann = await WS.connect(session, server.ws_url)
        bob = await WS.connect(session, server.ws_url)
        # pysher omits auth on public channels; pusher-js sends "".
        await ann.send("pusher:subscribe", {"channel": "public"})
        ok = await ann.expect("pusher_internal:subscription_succeeded")
        assert ok["data"] == "{}"
        await ann.subscribe("private-room")
        frame = await ann.subscribe("presence-room", {"user_id": "ann", "user_info": {"n": "A"}})
        assert frame is not None
        assert data_of(frame)["presence"]["hash"] == {"ann": {"n": "A"}}
        await bob.subscribe("presence-room", {"user_id": "bob"})
        added = await ann.expect("pusher_internal:member_added")
        assert data_of(added) == {"user_id": "bob", "user_info": None}
        await bob.send("pusher:unsubscribe", {"channel": "presence-room"})
        removed = await ann.expect("pusher_internal:member_removed")
        assert data_of(removed) == {"user_id": "bob"}
        await ann.close()
        await bob.close()

    run_scenario(scenario)


def test_refused_subscription_is_a_subscription_error(server: LocalServer) -> None:
    async def scenario(session: Session) -> None:
        ws = await WS.connect(session, server.ws_url)
        await ws.send("pusher:subscribe", {"channel": "private-x", "auth": f"{KEY}:bad"})
        frame = await ws.expect("pusher:subscription_error")
        assert frame["channel"] == "private-x"
        assert frame["data"]["type"] == "AuthError" and frame["data"]["status"] == 401
        await ws.close()

    run_scenario(scenario)


def test_client_events_relay_and_rate_limit(server: LocalServer) -> None:
    async def scenario(session: Session) -> None:
        ann = await WS.connect(session, server.ws_url)
        bob = await WS.connect(session, server.ws_url)
        await ann.subscribe("presence-chat", {"user_id": "ann"})
        await bob.subscribe("presence-chat", {"user_id": "bob"})
        await ann.expect("pusher_internal:member_added")
        for i in range(10):
            await ann.send("client-msg", {"i": i}, channel="presence-chat")
        for i in range(10):
            frame = await bob.expect("client-msg")
            assert frame["data"] == {"i": i} and frame["user_id"] == "ann"
        await ann.send("client-msg", {"i": 10}, channel="presence-chat")
        error = await ann.expect("pusher:error")  # the 11th within a second
        assert error["data"]["code"] == 4301
        await bob.send("client-public", "x", channel="public")
        assert (await bob.expect("pusher:error"))["data"]["code"] is None
        await ann.silent()  # nothing echoed back to the sender
        await ann.close()
        await bob.close()

    run_scenario(scenario)


def test_signin_server_to_user_and_watchlist(server: LocalServer) -> None:
    client = pusher_client(server.port)

    async def scenario(session: Session) -> None:
        loop = asyncio.get_running_loop()
        watcher = await WS.connect(session, server.ws_url)
        await watcher.signin({"id": "w", "watchlist": ["u1"]})
        initial = await watcher.expect("pusher_internal:watchlist_events")
        assert data_of(initial) == {"events": [{"name": "offline", "user_ids": ["u1"]}]}
        u1 = await WS.connect(session, server.ws_url)
        success = await u1.signin({"id": "u1", "user_info": {"name": "Ann"}})
        assert data_of(success) == {
            "user_data": json.dumps({"id": "u1", "user_info": {"name": "Ann"}})
        }
        online = await watcher.expect("pusher_internal:watchlist_events")
        assert data_of(online) == {"events": [{"name": "online", "user_ids": ["u1"]}]}
        # pusher-js joins #server-to-user-<id> with auth "" after signin.
        await u1.subscribe("#server-to-user-u1")
        await watcher.subscribe("#server-to-user-u1", expect="pusher:subscription_error")
        await loop.run_in_executor(None, client.send_to_user, "u1", "hello", {"x": 1})
        frame = await u1.expect("hello")
        assert frame["channel"] == "#server-to-user-u1" and json.loads(frame["data"]) == {"x": 1}
        await watcher.silent()
        await u1.close()
        offline = await watcher.expect("pusher_internal:watchlist_events")
        assert data_of(offline) == {"events": [{"name": "offline", "user_ids": ["u1"]}]}
        await watcher.close()

    run_scenario(scenario)


def test_cache_channel_miss_then_replay(server: LocalServer) -> None:
    client = pusher_client(server.port)

    async def scenario(session: Session) -> None:
        loop = asyncio.get_running_loop()
        first = await WS.connect(session, server.ws_url)
        await first.subscribe("cache-prices")
        miss = await first.expect("pusher:cache_miss")
        assert miss["channel"] == "cache-prices" and "data" not in miss
        await loop.run_in_executor(None, client.trigger, "cache-prices", "price", {"eur": 1})
        await first.expect("price")
        late = await WS.connect(session, server.ws_url)
        await late.subscribe("cache-prices")
        replay = await late.expect("price")
        assert json.loads(replay["data"]) == {"eur": 1}
        await first.close()
        await late.close()

    run_scenario(scenario)


def test_subscription_count_frames(server: LocalServer) -> None:
    async def scenario(session: Session) -> None:
        a = await WS.connect(session, server.ws_url)
        b = await WS.connect(session, server.ws_url)

        async def count(ws: WS) -> int:
            frame: dict[str, Any] = await ws.recv()
            assert frame["event"] == "pusher_internal:subscription_count", frame
            value: int = data_of(frame)["subscription_count"]
            return value

        await a.send("pusher:subscribe", {"channel": "room", "auth": ""})
        await a.expect("pusher_internal:subscription_succeeded")
        assert await count(a) == 1
        await b.send("pusher:subscribe", {"channel": "room", "auth": ""})
        await b.expect("pusher_internal:subscription_succeeded")
        assert await count(a) == 2 and await count(b) == 2
        await b.close()
        assert await count(a) == 1
        await a.close()

    run_scenario(scenario)


def test_stop_closes_connections_with_4200(app_config: AppConfig) -> None:
    server = LocalServer([app_config]).start()

    async def scenario(session: Session) -> None:
        loop = asyncio.get_running_loop()
        ws = await WS.connect(session, server.ws_url)
        stopping = loop.run_in_executor(None, server.stop)
        error = await ws.expect("pusher:error")
        assert error["data"]["code"] == 4200
        msg = await ws.ws.receive(5)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 4200)
        await stopping

    run_scenario(scenario)


def test_stop_refuses_clients_that_reconnect_at_once(caplog: pytest.LogCaptureFixture) -> None:
    """pusher-js answers 4200 by reconnecting at once (reference §5.12). The
    server must stop listening before it closes connections, or a client
    reconnecting while webhooks are flushed holds up the shutdown."""
    caplog.set_level(logging.WARNING)
    reconnected = threading.Event()

    class SlowHook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            reconnected.wait(2)  # the shutdown flushes this webhook meanwhile
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowHook)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = WebhookConfig(f"http://127.0.0.1:{receiver.server_address[1]}/")
    server = LocalServer([AppConfig(APP_ID, KEY, SECRET, webhooks=[hook])]).start()
    subscribed = threading.Event()
    connections = 0

    async def reconnect_like_pusher_js() -> None:
        nonlocal connections
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    ws = WS(await session.ws_connect(f"{server.ws_url}/app/{KEY}?protocol=7"))
                except aiohttp.ClientError:
                    return  # refused: the server is gone
                connections += 1
                if connections > 1:
                    reconnected.set()
                await ws.expect("pusher:connection_established")
                await ws.send("pusher:subscribe", {"channel": "news"})
                await ws.expect("pusher_internal:subscription_succeeded")
                subscribed.set()
                async for _ in ws.ws:  # until the server closes it
                    pass

    thread = threading.Thread(
        target=lambda: asyncio.run(asyncio.wait_for(reconnect_like_pusher_js(), 30))
    )
    thread.start()
    try:
        assert subscribed.wait(10)
        server.stop()  # raised TimeoutError after 10 s
        thread.join(30)
        assert connections == 1
        assert "did not close in time" not in caplog.text
    finally:
        receiver.shutdown()
        receiver.server_close()


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_frame_bytes_length_encodings(size: int) -> None:
    from flask_pusher.server.app import frame_bytes

    frame = frame_bytes("x" * size)
    assert frame[0] == 0x81  # FIN, text, no mask
    if size < 126:
        assert frame[1] == size and len(frame) == 2 + size
    elif size < 65536:
        assert frame[1] == 126 and int.from_bytes(frame[2:4], "big") == size
        assert len(frame) == 4 + size
    else:
        assert frame[1] == 127 and int.from_bytes(frame[2:10], "big") == size
        assert len(frame) == 10 + size


def test_large_event_reaches_the_client(server: LocalServer, client: Any) -> None:
    async def scenario(session: Session) -> None:
        loop = asyncio.get_running_loop()
        ws = await WS.connect(session, server.ws_url)
        await ws.subscribe("news")
        data = "y" * 10000  # a 2-byte extended length frame
        await loop.run_in_executor(None, client.trigger, "news", "big", data)
        frame = await ws.expect("big")
        assert frame["data"] == data
        await ws.close()

    run_scenario(scenario)


class StalledClient:
    """A raw WebSocket client that subscribes, then never reads again (a
    suspended laptop, a stuck process): its server-side buffers fill up."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        nonce = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /app/{KEY}?protocol=7 HTTP/1.1\r\nHost: localhost\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        received = b""
        while b"\r\n\r\n" not in received:
            received += self.sock.recv(4096)
        received = received.split(b"\r\n\r\n", 1)[1]
        while len(received) < 2 or len(received) < 2 + received[1]:
            received += self.sock.recv(4096)
        hello = json.loads(received[2 : 2 + received[1]])
        self.socket_id = json.loads(hello["data"])["socket_id"]

    def send(self, event: str, data: Any) -> None:
        payload = json.dumps({"event": event, "data": data}).encode()
        mask = os.urandom(4)
        size = len(payload)
        header = bytes((0x81, 0x80 | size)) if size < 126 else struct.pack("!BBH", 0x81, 254, size)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def subscribe(self, channel: str, channel_data: dict[str, Any] | None = None) -> None:
        data = {"channel": channel, "auth": ""}
        if channel.startswith("presence-"):
            data.update(channel_auth(self.socket_id, channel, channel_data))
        self.send("pusher:subscribe", data)


def test_stalled_client_is_dropped_and_leaves_presence(server: LocalServer) -> None:
    """A subscriber that stops reading is dropped and forgotten: the
    others see it leave, the channels it held are vacated."""
    flood = [f"flood-{i}" for i in range(100)]
    client = pusher_client(server.port)
    bob = StalledClient(server.port)

    async def scenario(session: Session) -> None:
        ann = await WS.connect(session, server.ws_url)
        await ann.subscribe("presence-room", {"user_id": "ann"})
        for name in flood:
            bob.subscribe(name)
        bob.subscribe("presence-room", {"user_id": "bob"})
        await ann.expect("pusher_internal:member_added")
        for _ in range(20):  # 20 MB for bob, more than the kernel and the server buffer
            await asyncio.to_thread(client.trigger, flood, "big", "x" * 10_000)
        removed = await ann.expect("pusher_internal:member_removed")
        assert data_of(removed) == {"user_id": "bob"}
        info = await asyncio.to_thread(client.channels_info, "flood-")
        assert info == {"channels": {}}
        await ann.close()

    try:
        run_scenario(scenario)
    finally:
        bob.sock.close()


def test_aiohttp_forgets_a_websocket_once_its_handshake_is_done(server: LocalServer) -> None:
    """After the handshake the socket is the server's PusherSocket's, and aiohttp
    keeps nothing of the connection (its request, parser and tasks: about 11 KB of
    an idle connection's 15; issue 7 item 4). This relies on how aiohttp's
    RequestHandler lets go of a transport: a newer aiohttp that changes it fails here."""
    assert server._runner is not None and server._server is not None
    web_server, ours = server._runner.server, server._server
    assert web_server is not None

    async def scenario(session: aiohttp.ClientSession) -> None:
        clients = [await WS.connect(session, server.ws_url) for _ in range(3)]
        for client in clients:
            await client.subscribe("news")
        assert len(ours._sockets) == 3
        assert web_server.connections == []
        # Still served: an event reaches all three, and a close is answered.
        pusher_client(server.port).trigger("news", "ev", "x")
        for client in clients:
            assert (await client.expect("ev"))["data"] == "x"
        await clients[0].ws.close()
        assert clients[0].ws.close_code == 1000

    run_scenario(scenario)
