"""The front door (issue 19, the storm): a WebSocket opening handshake that
arrives whole in the first read is opened without aiohttp's request
machinery; everything else reaches aiohttp as it did, from the first byte on.
Over real sockets; which way a connection went is told by counting the calls
of :meth:`Handshake.websocket` (aiohttp's way)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any
from typing import cast

import pytest
from aiohttp import web
from aiohttp.http_parser import HttpRequestParserPy

from flask_pusher.server import AppConfig
from flask_pusher.server import frontdoor
from flask_pusher.server import LocalServer
from flask_pusher.server.handshake import Handshake
from flask_pusher.server.timeouts import REQUEST_TIMEOUT
from flask_pusher.server.timeouts import RequestWatchdog

from .helpers import APP_ID
from .helpers import KEY
from .helpers import SECRET
from .helpers import TIMEOUT
from .rawsock import frame
from .rawsock import frame_header

UPGRADE = (
    "Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


def head(key: str = KEY, extra: str = "", version: str = "1.1") -> bytes:
    return f"GET /app/{key}?protocol=7 HTTP/{version}\r\n{UPGRADE}{extra}\r\n".encode()


class Ways:
    """Counts the handshakes aiohttp answered (:meth:`Handshake.websocket`),
    and the connections and first reads the front doors had."""

    def __init__(self, patch: pytest.MonkeyPatch) -> None:
        self.aiohttp = 0
        self.accepted = threading.Semaphore(0)
        self.reads = threading.Semaphore(0)
        websocket, received = Handshake.websocket, frontdoor.FrontDoor.data_received
        made = frontdoor.FrontDoor.connection_made

        async def counted(handshake: Handshake, request: Any) -> Any:
            self.aiohttp += 1
            return await websocket(handshake, request)

        def read(door: frontdoor.FrontDoor, data: bytes) -> None:
            received(door, data)
            self.reads.release()

        def accept(door: frontdoor.FrontDoor, transport: Any) -> None:
            made(door, transport)
            self.accepted.release()

        patch.setattr(Handshake, "websocket", counted)
        patch.setattr(frontdoor.FrontDoor, "data_received", read)
        patch.setattr(frontdoor.FrontDoor, "connection_made", accept)


@pytest.fixture
def ways() -> Iterator[Ways]:
    with pytest.MonkeyPatch.context() as patch:
        yield Ways(patch)


@pytest.fixture
def server(ways: Ways, request: pytest.FixtureRequest) -> Iterator[LocalServer]:
    """A server; ``param``: the app's options, and ``loop``."""
    options = dict(getattr(request, "param", {}))
    loop = options.pop("loop", "auto")
    app = AppConfig(APP_ID, options.pop("key", KEY), SECRET, **options)
    with LocalServer([app], tick_interval=0.1, loop=loop) as running:
        yield running


def read_event(sock: socket.socket, data: bytes = b"") -> tuple[dict[str, Any], bytes]:
    """The first text frame after the ``101``'s head (unmasked, under 126
    bytes) and what follows it."""
    while True:
        body = data.partition(b"\r\n\r\n")[2] if data.startswith(b"HTTP/") else data
        if len(body) >= 2 and len(body) >= 2 + body[1]:
            assert body[0] == 0x81 and body[1] < 126, body
            return json.loads(body[2 : 2 + body[1]]), body[2 + body[1] :]
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk


def connect(server: LocalServer) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=TIMEOUT)


def subscribe(sock: socket.socket, rest: bytes = b"") -> dict[str, Any]:
    """Subscribe to a public channel; the answer."""
    message = json.dumps({"event": "pusher:subscribe", "data": {"channel": "c"}}).encode()
    sock.sendall(frame(0x1, message))
    return read_event(sock, rest)[0]


@pytest.mark.parametrize("server", [{"loop": "asyncio"}, {"loop": "uvloop"}], indirect=True)
@pytest.mark.parametrize("parser", ["c", "python"])
def test_a_handshake_in_one_read_is_opened_by_the_front_door(
    server: LocalServer, ways: Ways, parser: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With aiohttp's C parser, and with its pure-Python one (``AIOHTTP_NO_EXTENSIONS``, PyPy)."""
    if parser == "python":
        monkeypatch.setattr(frontdoor, "HttpRequestParser", HttpRequestParserPy)
    with connect(server) as sock:
        sock.sendall(head())
        event, rest = read_event(sock)
        assert event["event"] == "pusher:connection_established"
        assert subscribe(sock, rest)["event"] == "pusher_internal:subscription_succeeded"
    assert ways.aiohttp == 0


def test_a_head_split_over_two_reads_is_aiohttps(server: LocalServer, ways: Ways) -> None:
    whole = head()
    with connect(server) as sock:
        sock.sendall(whole[:20])
        assert ways.reads.acquire(timeout=TIMEOUT)  # the front door read the first part
        sock.sendall(whole[20:])
        event, rest = read_event(sock)
        assert event["event"] == "pusher:connection_established"
        assert subscribe(sock, rest)["event"] == "pusher_internal:subscription_succeeded"
    assert ways.aiohttp == 1


def test_bytes_after_the_head_are_aiohttps(server: LocalServer, ways: Ways) -> None:
    """A frame sent with the head, before the answer, is dropped as aiohttp's
    hand-off drops it; the connection works."""
    early = b'{"event":"pusher:subscribe","data":{"channel":"early"}}\r\n\r\n'
    # Its zero mask key leaves the payload as it is: the read ends as a head does.
    early = frame_header(0x1, len(early)) + early
    with connect(server) as sock:
        sock.sendall(head() + early)
        event, rest = read_event(sock)
        assert event["event"] == "pusher:connection_established"
        answer = subscribe(sock, rest)
    assert answer["event"] == "pusher_internal:subscription_succeeded"
    assert answer["channel"] == "c"  # not "early"
    assert ways.aiohttp == 1


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (head(key="no-such-key"), 4001),
        (head().replace(b"protocol=7", b"protocol=99"), 4007),
    ],
    ids=["unknown-key", "protocol"],
)
def test_a_refusal_is_aiohttps_answer(
    server: LocalServer, ways: Ways, data: bytes, code: int
) -> None:
    with connect(server) as sock:
        sock.sendall(data)
        event = read_event(sock)[0]
    assert event["event"] == "pusher:error" and event["data"]["code"] == code
    assert ways.aiohttp == 1


@pytest.mark.parametrize(
    "data",
    [
        head(version="1.0"),
        head(key="%32" + KEY[1:]),  # "2...": aiohttp's router decodes it
        head().replace(b"GET /app/", b"GET  /app/"),  # llhttp lets the extra space by
    ],
    ids=["http-1.0", "percent-encoded-key", "two-spaces"],
)
def test_what_the_front_door_does_not_take_aiohttp_opens(
    server: LocalServer, ways: Ways, data: bytes
) -> None:
    with connect(server) as sock:
        sock.sendall(data)
        event, rest = read_event(sock)
        assert event["event"] == "pusher:connection_established"
        assert subscribe(sock, rest)["event"] == "pusher_internal:subscription_succeeded"
    assert ways.aiohttp == 1


def test_an_expect_header_is_aiohttps(server: LocalServer, ways: Ways) -> None:
    with connect(server) as sock:
        sock.sendall(head(extra="Expect: 100-continue\r\n"))
        answer = b""
        while b"connection_established" not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 100 Continue"), answer
    assert ways.aiohttp == 1


def test_a_malformed_head_gets_aiohttps_400(server: LocalServer, ways: Ways) -> None:
    with connect(server) as sock:
        sock.sendall(head(extra="No colon here\r\n"))
        answer = sock.recv(65536)
    assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), answer
    assert ways.aiohttp == 0 and server.server is not None and not server.server.writer.sockets


@pytest.mark.parametrize("server", [{"max_connections_per_address": 2}], indirect=True)
def test_a_quota_of_this_process_is_decided_by_the_front_door(
    server: LocalServer, ways: Ways
) -> None:
    """The local backend's quota is decided at once: two connections open
    there; the third is aiohttp's, refused with 4004 (counted once)."""
    socks = [connect(server) for _ in range(3)]
    try:
        for sock in socks[:2]:
            sock.sendall(head())
            assert read_event(sock)[0]["event"] == "pusher:connection_established"
        assert ways.aiohttp == 0
        socks[2].sendall(head())
        event = read_event(socks[2])[0]
        assert event["event"] == "pusher:error" and event["data"]["code"] == 4004
        assert ways.aiohttp == 1
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_connection_waiting_at_the_door_is_closed_at_shutdown(ways: Ways, loop: str) -> None:
    with LocalServer([AppConfig(APP_ID, KEY, SECRET)], tick_interval=0.1, loop=loop) as server:
        sock = connect(server)
        assert ways.accepted.acquire(timeout=TIMEOUT)
    with sock:
        assert sock.recv(1) == b""  # closed (FIN), not left open


class _Transport:
    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


class _Conn:
    def __init__(self) -> None:
        self.transport = _Transport()


class _Accepting:
    def __init__(self) -> None:
        self.connections: set[_Conn] = set()


def test_the_watchdog_times_a_connection_from_the_door_on() -> None:
    """A client that waits at the front door, then sends a partial head, has
    :data:`REQUEST_TIMEOUT` in all, not twice that (``RequestWatchdog.moved``)."""
    doors, handlers = _Accepting(), _Accepting()
    watchdog = RequestWatchdog()
    watchdog.watch(doors)
    watchdog.watch(handlers)
    door, handler = _Conn(), _Conn()
    doors.connections.add(door)
    watchdog.sweep(0.0)  # seen at the door
    doors.connections.discard(door)
    handlers.connections.add(handler)
    watchdog.moved(door, handler)
    watchdog.sweep(REQUEST_TIMEOUT / 2)
    assert not handler.transport.aborted
    watchdog.sweep(REQUEST_TIMEOUT + 1)
    assert handler.transport.aborted


@pytest.mark.parametrize(
    ("host", "name"), [("127.0.0.1", "http://127.0.0.1:6001"), ("::1", "http://[::1]:6001")]
)
def test_the_site_is_named_as_aiohttps_tcp_site(host: str, name: str) -> None:
    async def names() -> tuple[str, str]:
        runner = web.AppRunner(web.Application())
        await runner.setup()
        try:
            site = frontdoor.FrontDoorSite(runner, host, 6001, cast(Handshake, None))
            return site.name, web.TCPSite(runner, host, 6001).name
        finally:
            await runner.cleanup()

    assert asyncio.run(names()) == (name, name)
