"""When the writer flushes (issue 19): a lone client event or small trigger goes
out at the end of the same loop iteration; only after a big fan-out does the
next flush wait, so that back-to-back fan-outs share system calls.

The sockets are real: each connection's transport is one end of a
``socket.socketpair()`` opened by the running loop, and the test reads the
other end. A counting wrapper around ``transport.write`` counts the writes
(one system call each).
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from flask_pusher.server.app import Server
from flask_pusher.server.config import AppConfig
from flask_pusher.server.state import Connection
from flask_pusher.server.writer import BUSY_WINDOW
from flask_pusher.server.writer import COALESCE_DELAY
from flask_pusher.server.writer import COALESCE_MIN_AUDIENCE

from .helpers import APP_ID
from .helpers import channel_auth
from .helpers import KEY
from .helpers import SECRET


class CountingSocket:
    """Stands for an open ``PusherSocket``: a real transport, its writes counted."""

    closing = False

    def __init__(self, transport: asyncio.Transport) -> None:
        self.real = transport
        self.writes = 0
        self.transport = self

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.real.write(data)

    def is_closing(self) -> bool:
        return self.real.is_closing()

    def get_write_buffer_size(self) -> int:
        return self.real.get_write_buffer_size()


class Peer:
    """A connection in the core, a real socket pair, and the client's end."""

    def __init__(self, conn: Connection, sock: CountingSocket, client: socket.socket) -> None:
        self.conn, self.sock, self.client = conn, sock, client

    def received(self) -> bytes:
        """What reached the client's end so far (without waiting)."""
        chunks = []
        while True:
            try:
                chunks.append(self.client.recv(1 << 20))
            except BlockingIOError:
                return b"".join(chunks)


async def connect(server: Server, n: int, channel: str) -> list[Peer]:
    loop = asyncio.get_running_loop()
    app = server.core.apps_by_id[APP_ID]
    peers = []
    for _ in range(n):
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
        conn = server.core.connect(app).result
        sock = CountingSocket(transport)
        server.writer.sockets[conn] = sock  # type: ignore[assignment]
        data: dict[str, Any] = {"channel": channel}
        if channel.startswith("private-"):
            data.update(channel_auth(conn.socket_id, channel))
        server.apply(
            server.core.receive(conn, json.dumps({"event": "pusher:subscribe", "data": data}))
        )
        peers.append(Peer(conn, sock, theirs))
    OPEN.extend(peers)
    await asyncio.sleep(BUSY_WINDOW * 2)  # the subscriptions' flush is long past
    for peer in peers:
        peer.received()
        peer.sock.writes = 0
    return peers


def trigger(server: Server, channel: str, seq: int) -> None:
    app = server.core.apps_by_id[APP_ID]
    payload = {
        "name": "tick",
        "channels": [channel],
        "data": json.dumps({"seq": seq}, separators=(",", ":")),
    }
    server.apply(server.core.trigger(app, payload))


async def one_iteration() -> None:
    """Let the loop run the callbacks scheduled now (``call_soon``), no timers."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


#: The peers of the running test, closed after it.
OPEN: list[Peer] = []


def run(test: Any) -> None:
    async def main() -> None:
        server = Server([AppConfig(APP_ID, KEY, SECRET)], metrics=False)
        try:
            await test(server)
        finally:
            for peer in OPEN:
                peer.sock.real.close()
                peer.client.close()
            OPEN.clear()
            await asyncio.sleep(0)  # the transports' connection_lost

    asyncio.run(main())


def test_lone_client_event_goes_out_in_the_same_iteration() -> None:
    """A client event right after another flush is written at once, not after a delay."""

    async def test(server: Server) -> None:
        alice, bob = await connect(server, 2, "private-room")
        msg = {"event": "client-move", "channel": "private-room", "data": {"x": 1}}
        for x in range(5):  # back to back: each within BUSY_WINDOW of the last flush
            msg["data"] = {"x": x}
            server.apply(server.core.receive(alice.conn, json.dumps(msg)))
            await one_iteration()
            got = bob.received()
            assert b"client-move" in got and f'"x":{x}'.encode() in got, got
        assert alice.received() == b""  # never to the sender

    run(test)


def test_lone_trigger_after_a_small_flush_goes_out_at_once() -> None:
    async def test(server: Server) -> None:
        peers = await connect(server, 3, "news")
        trigger(server, "news", 1)
        await one_iteration()
        trigger(server, "news", 2)  # within BUSY_WINDOW of the first flush
        await one_iteration()
        for peer in peers:
            got = peer.received()
            assert b'\\"seq\\":1' in got and b'\\"seq\\":2' in got, got
            assert peer.sock.writes == 2

    run(test)


def test_burst_after_a_big_fan_out_coalesces() -> None:
    """After a flush to COALESCE_MIN_AUDIENCE sockets, what follows within
    BUSY_WINDOW waits COALESCE_DELAY and shares one write per socket."""

    async def test(server: Server) -> None:
        peers = await connect(server, COALESCE_MIN_AUDIENCE, "big")
        trigger(server, "big", 0)
        await one_iteration()
        assert all(p.sock.writes == 1 for p in peers)
        assert server.writer.last_audience == COALESCE_MIN_AUDIENCE
        for seq in range(1, 4):  # a burst, each trigger in its own loop iteration
            trigger(server, "big", seq)
            await one_iteration()
        assert all(p.sock.writes == 1 for p in peers)  # still waiting
        await asyncio.sleep(COALESCE_DELAY * 3)
        for peer in peers:
            assert peer.sock.writes == 2  # the three triggers in one write
            got = peer.received()
            assert all(f'\\"seq\\":{seq}'.encode() in got for seq in range(4)), got

    run(test)


def test_small_fan_out_does_not_hold_up_the_next() -> None:
    """One socket fewer than COALESCE_MIN_AUDIENCE: nothing waits."""

    async def test(server: Server) -> None:
        peers = await connect(server, COALESCE_MIN_AUDIENCE - 1, "medium")
        for seq in range(3):
            trigger(server, "medium", seq)
            await one_iteration()
        assert all(p.sock.writes == 3 for p in peers)

    run(test)


def test_many_small_events_at_once_do_not_make_the_next_wait() -> None:
    """Client events to many small channels, arriving in one loop iteration, make
    a flush of many writes; the next client event still goes out at once (the
    rule looks at audiences, which waiting does not grow)."""

    async def test(server: Server) -> None:
        rooms = [await connect(server, 4, f"private-room-{i}") for i in range(25)]
        msg: dict[str, Any] = {"event": "client-move", "data": {"x": 0}}
        for i, room in enumerate(rooms):  # 25 events x 3 others: 75 writes at once
            msg["channel"] = f"private-room-{i}"
            server.apply(server.core.receive(room[0].conn, json.dumps(msg)))
        await one_iteration()
        assert all(p.sock.writes == 1 for room in rooms for p in room[1:])
        msg["channel"], msg["data"] = "private-room-0", {"x": 1}
        server.apply(server.core.receive(rooms[0][0].conn, json.dumps(msg)))
        await one_iteration()
        assert all(p.sock.writes == 2 for p in rooms[0][1:])

    run(test)


def answered(conn: Connection) -> bool:
    """The server no longer waits for a pong from ``conn``."""
    return conn.ping_sent is None


def test_a_ping_is_answered_with_one_write_at_once() -> None:
    """pusher-js's ``pusher:ping`` (pusher-protocol §5.4) gets its ``pusher:pong``
    in the same callback, in one write: no effects, no flush in a later iteration."""

    async def test(server: Server) -> None:
        (alice,) = await connect(server, 1, "news")
        conn: Connection = alice.conn
        conn.ping_sent = 1.0  # the server's own ping awaits an answer
        server.handshake.on_text(alice.conn, '{"event":"pusher:ping","data":{}}')
        assert alice.sock.writes == 1  # before the loop runs anything
        assert answered(conn)  # the client is alive
        got = alice.received()
        assert json.loads(got[2:])["event"] == "pusher:pong", got
        server.handshake.on_text(alice.conn, '{"event": "pusher:ping"}')  # another spelling
        assert alice.sock.writes == 1
        await one_iteration()  # takes the core's way, to the same answer
        assert alice.sock.writes == 2
        assert alice.received() == got
        conn.closing = True  # a close began: the ping is ignored, as every frame
        server.handshake.on_text(conn, '{"event":"pusher:ping","data":{}}')
        await one_iteration()
        assert alice.sock.writes == 2

    run(test)


def test_the_101_and_connection_established_share_one_write() -> None:
    """A storm's first answers: the handshake's ``101`` and
    ``pusher:connection_established`` (pusher-protocol §5.1) in one system call."""

    async def test(server: Server) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
        greeting = server.core.connect(server.core.apps_by_id[APP_ID])
        conn = greeting.result
        sock = CountingSocket(transport)
        server.writer.sockets[conn] = sock  # type: ignore[assignment]
        OPEN.append(Peer(conn, sock, theirs))
        server.writer.greet(conn, b"HTTP/1.1 101 Switching Protocols\r\n\r\n", greeting)
        assert sock.writes == 1
        head, _, frame = OPEN[-1].received().partition(b"\r\n\r\n")
        assert head == b"HTTP/1.1 101 Switching Protocols"
        established = json.loads(frame[2:])
        assert established["event"] == "pusher:connection_established"
        assert json.loads(established["data"])["socket_id"] == conn.socket_id
        await one_iteration()
        assert sock.writes == 1  # nothing left over for a later flush

    run(test)
