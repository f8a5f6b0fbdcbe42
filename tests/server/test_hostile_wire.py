"""Bytes a client controls, sent over raw sockets: answered with a 4xx or a close,
never a 500 and never a traceback in the log (issue 7; reference §4.5, §5.12)."""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import socket
import string
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st

from flask_pusher.server import AppConfig
from flask_pusher.server import LocalServer

from .helpers import APP_ID
from .helpers import KEY
from .helpers import pusher_client
from .helpers import SECRET
from .helpers import user_auth
from .rawsock import frame
from .rawsock import Raw

TIMEOUT = 10.0


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    records = caplog.get_records("call")
    return [r for r in records if r.exc_info or r.levelno >= logging.ERROR]


def raw_request(server: LocalServer, data: bytes) -> bytes:
    """Send ``data`` on a new connection; return everything the server answers."""
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog
    assert tracebacks(caplog) == []


def test_a_gzip_body_that_is_not_gzip_is_a_400(
    server: LocalServer, logged: pytest.LogCaptureFixture
) -> None:
    body = b"this is not gzip"
    request = (
        f"POST /apps/{APP_ID}/events?auth_key={KEY} HTTP/1.1\r\nHost: x\r\n"
        f"Content-Encoding: gzip\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    response = raw_request(server, request)
    assert status_of(response) == 400, response
    assert b"could not be read" in response


@pytest.mark.parametrize("expect", [b"100-contin\xffue", b"\xe2\x98\x83", b"something-else"])
@pytest.mark.parametrize(
    "request_line",
    [f"POST /apps/{APP_ID}/events", f"GET /apps/{APP_ID}/events", "POST /", "GET /nowhere"],
)
def test_an_expect_header_nobody_can_meet_is_a_417(
    server: LocalServer, logged: pytest.LogCaptureFixture, expect: bytes, request_line: str
) -> None:
    """On every path and method, a route of the API's or not: aiohttp's default
    handler answered 500 for a value it could not encode, even on a 404 or 405."""
    request = (
        f"{request_line} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n".encode()
        + b"Expect: "
        + expect
        + b"\r\n\r\n{}"
    )
    assert status_of(raw_request(server, request)) == 417


@pytest.mark.parametrize(
    ("request_line", "status", "allow"),
    [("PROPFIND /", 405, "GET"), (f"GET /apps/{APP_ID}/events", 405, "POST"), ("GET /x", 404, "")],
)
def test_unknown_paths_and_methods_get_404_and_405(
    server: LocalServer, request_line: str, status: int, allow: str
) -> None:
    request = f"{request_line} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    response = raw_request(server, request.encode())
    assert status_of(response) == status
    assert (f"Allow: {allow}\r\n".encode() in response) == bool(allow)


def test_expect_100_continue_still_works(server: LocalServer) -> None:
    request = f"POST /apps/{APP_ID}/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
    request += "Connection: close\r\n"
    response = raw_request(server, request.encode() + b"Expect: 100-Continue\r\n\r\n{}")
    assert response.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 401"), response


MALFORMED = [
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
    # 200 headers: a 400 since aiohttp 3.11, a 200 before; Connection: close either way.
    b"GET / HTTP/1.1\r\nConnection: close\r\n"
    + b"".join(b"X-%d: 1\r\n" % i for i in range(200))
    + b"\r\n",
    b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET " + b"/a" * 5000 + b" HTTP/1.1\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
]


def test_malformed_requests_get_no_500_and_no_traceback(
    server: LocalServer, logged: pytest.LogCaptureFixture
) -> None:
    for _ in range(10):
        for request in MALFORMED:
            response = raw_request(server, request)
            assert status_of(response) < 500, (request[:60], response[:200])
    # At most one line about them, whoever sends how many (rate-limited).
    lines = [r for r in logged.records if r.name == "flask_pusher.server.http"]
    assert len(lines) <= 1, [r.getMessage() for r in lines]


def test_nothing_is_sent_after_the_close_frame(server: LocalServer) -> None:
    """RFC 6455 §5.5.1: once the server has sent its Close frame (here for a
    terminated user, 4009) it sends no more data frames, although the client
    stays subscribed until it answers the close, which this one never does."""
    client = pusher_client(server.port)
    with Raw(server.port, server.host) as ws:
        check_nothing_after_close(client, ws)


def check_nothing_after_close(client: Any, ws: Raw) -> None:
    established = ws.read_event()
    socket_id = json.loads(established["data"])["socket_id"]
    ws.send_json({"event": "pusher:subscribe", "data": {"channel": "news"}})
    ws.send_json({"event": "pusher:signin", "data": user_auth(socket_id, {"id": "u1"})})
    seen = {ws.read_event()["event"] for _ in range(3)}
    assert "pusher:signin_success" in seen
    assert "pusher_internal:subscription_succeeded" in seen
    client.terminate_user_connections("u1")
    for i in range(5):
        client.trigger("news", "after-close", {"i": i})
    frames = []
    try:
        while True:
            frames.append(ws.read())
    except EOFError:
        pass  # the server closes the TCP connection once it stops waiting
    opcodes = [opcode for opcode, _ in frames]
    assert 0x8 in opcodes, frames
    after_close = frames[opcodes.index(0x8) + 1 :]
    assert after_close == []
    close_payload = frames[opcodes.index(0x8)][1]
    assert struct.unpack("!H", close_payload[:2])[0] == 4009
    # The server forgot the subscription as soon as the close began.
    assert client.channel_info("news") == {"occupied": False}


def test_a_ping_flood_then_a_reset_leaves_no_traceback(
    server: LocalServer, logged: pytest.LogCaptureFixture
) -> None:
    """A client that sends pings and never reads its pongs, then resets the
    connection: aiohttp's automatic pong fails on the closed transport."""
    with Raw(server.port, server.host, rcvbuf=4096) as ws:
        for _ in range(20_000):
            try:
                ws.send(0x9, b"x" * 100)
            except OSError:
                break
        ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # closed with SO_LINGER 0: a reset
    wait_for_no_connections(server)
    # One more request through the event loop: the handler's step has ended.
    assert pusher_client(server.port).channels_info() == {"channels": {}}


def wait_for_no_connections(server: LocalServer) -> None:
    """Wait (bounded) until the server has forgotten every connection."""
    assert server._server is not None
    core = server._server.core
    deadline = time.monotonic() + TIMEOUT
    while any(app.connections for app in core.apps_by_id.values()):
        assert time.monotonic() < deadline, "connections were not forgotten"
        time.sleep(0.01)


# -- property test: arbitrary requests ------------------------------------------

TOKEN = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=20)
HEADER_VALUE = st.one_of(
    st.binary(max_size=64).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from([b"gzip", b"deflate", b"br", b"identity", b"100-continue", b"x" * 9000]),
)
PATHS = [
    f"/apps/{APP_ID}/events",
    f"/apps/{APP_ID}/batch_events",
    f"/apps/{APP_ID}/channels",
    f"/apps/{APP_ID}/channels/news",
    f"/apps/{APP_ID}/channels/presence-a/users",
    f"/apps/{APP_ID}/users/u1/terminate_connections",
    "/users/u1/terminate_connections",
    "/apps/nope/events",
    "/",
    "/health",
    "/metrics",
    "/app/" + KEY,
    "/nowhere",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.one_of(
        st.sampled_from(["GET", "POST", "PUT", "DELETE", "TRACE", "PROPFIND", "OPTIONS"]), TOKEN
    ),
    path=st.sampled_from(PATHS),
    query=st.sampled_from(["", f"?auth_key={KEY}", "?auth_key=x&auth_signature=%ff"]),
    headers=st.lists(
        st.tuples(
            st.one_of(
                st.sampled_from(
                    ["Content-Encoding", "Expect", "Content-Type", "Transfer-Encoding"]
                ),
                TOKEN,
            ),
            HEADER_VALUE,
        ),
        max_size=8,
    ),
    many=st.integers(0, 150),
    body=st.binary(max_size=300),
)
def test_arbitrary_requests_get_no_500_and_no_traceback(
    method: str,
    path: str,
    query: str,
    headers: list[tuple[str, bytes]],
    many: int,
    body: bytes,
) -> None:
    server = PROPERTY_SERVER.get()
    lines = [f"{method} {path}{query} HTTP/1.1".encode(), b"Host: x", b"Connection: close"]
    lines += [name.encode() + b": " + value for name, value in headers]
    lines += [b"X-Filler-%d: 1" % i for i in range(many)]
    if not any(name.lower() == "transfer-encoding" for name, _ in headers):
        lines.append(b"Content-Length: %d" % len(body))
    with capture_server_log() as records:
        response = raw_request(server, b"\r\n".join(lines) + b"\r\n\r\n" + body)
    if response:  # aiohttp may close at once on a request it cannot frame
        assert status_of(response) < 500, response[:300]
    assert [r for r in records if r.exc_info or r.levelno >= logging.ERROR] == []


class _PropertyServer:
    """One server for every example (hypothesis cannot use function-scoped fixtures)."""

    def __init__(self) -> None:
        self.server: LocalServer | None = None

    def get(self) -> LocalServer:
        if self.server is None:
            self.server = LocalServer([AppConfig(APP_ID, KEY, SECRET)]).start()
            atexit.register(self.server.stop)
        return self.server


PROPERTY_SERVER = _PropertyServer()


@contextlib.contextmanager
def capture_server_log() -> Iterator[list[logging.LogRecord]]:
    """Every record the server's and aiohttp's loggers emit meanwhile, at any level."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("flask_pusher.server", "aiohttp")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


def test_a_client_that_never_reads_its_pongs_is_dropped(
    server: LocalServer, logged: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading is never paused, so the Pong frames of a client that sends pings
    and never reads would queue without end (RFC 6455 §5.5.2: each ping is
    answered): past the write buffer's limit the connection is dropped, as the
    writer drops a subscriber that does not read."""
    from flask_pusher.server import wsocket

    monkeypatch.setattr(wsocket, "MAX_WRITE_BUFFER", 64 * 1024)
    pings = frame(0x9, b"x" * 125) * 100
    with Raw(server.port, server.host, rcvbuf=4096) as ws:
        with contextlib.suppress(OSError):  # the drop: a reset, or a broken pipe
            for _ in range(2_000):  # 200,000 pings: 25 MB of Pongs owed
                ws.sock.sendall(pings)
        wait_for_no_connections(server)
