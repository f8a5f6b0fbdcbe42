"""Slow and silent peers (issue 16, item 4, one node): raw sockets that send
nothing, drip a request's head or body, or never finish the WebSocket
handshake are closed after the timeouts of :mod:`flask_pusher.server.timeouts`
(1 s here instead of 60; 0 of 40 such sockets were closed after 600 s),
while a console stream and a used keep-alive connection stay."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from flask_pusher.server import AppConfig
from flask_pusher.server import LocalServer
from flask_pusher.server import timeouts

from .helpers import APP_ID
from .helpers import KEY
from .helpers import SECRET
from .rawsock import Raw

LIMIT = 1.0
#: The longest a connection may live: the limit, a sweep, and slack for a busy machine.
BOUND = LIMIT + 4.0


@pytest.fixture
def quick() -> Iterator[LocalServer]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(timeouts, "REQUEST_TIMEOUT", LIMIT)
        patch.setattr(timeouts, "BODY_TIMEOUT", LIMIT)
        app = AppConfig(APP_ID, KEY, SECRET)
        with LocalServer([app], tick_interval=0.1, console=True) as server:
            yield server


def closed_after(sock: socket.socket, drip: bytes = b"", every: float = 0.2) -> tuple[float, bytes]:
    """Send ``drip`` a byte every ``every`` seconds (nothing if empty) until the
    server closes the connection; the seconds that took and what it answered.
    Gives up after 3 x BOUND."""
    start = time.monotonic()
    sock.settimeout(every)
    answer = b""
    sent = 0
    while time.monotonic() - start < 3 * BOUND:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            if sent < len(drip):
                try:
                    sock.send(drip[sent : sent + 1])
                except OSError:
                    break
                sent += 1
            continue
        except OSError:  # reset
            break
        if not chunk:
            break
        answer += chunk
    return time.monotonic() - start, answer


def connect(server: LocalServer) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=10)


def test_a_socket_that_never_sends_is_closed(quick: LocalServer) -> None:
    with connect(quick) as sock:
        took, answer = closed_after(sock)
    assert took < BOUND and answer == b""


def test_a_request_head_sent_a_byte_at_a_time_is_cut_off(quick: LocalServer) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"x" * 200 + b"\r\n\r\n"
    with connect(quick) as sock:
        took, answer = closed_after(sock, head)
    assert took < BOUND and answer == b""


def test_a_websocket_handshake_that_never_ends_is_cut_off(quick: LocalServer) -> None:
    with connect(quick) as sock:
        sock.sendall(
            f"GET /app/{KEY}?protocol=7 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n".encode()
        )
        took, answer = closed_after(sock, b"Sec-WebSocket-Version: 13\r\n" * 10)
    assert took < BOUND and answer == b""


def test_a_body_sent_a_byte_at_a_time_is_a_408(quick: LocalServer) -> None:
    body = b'{"name":"e","channels":["c"],"data":"' + b"x" * 100 + b'"}'
    with connect(quick) as sock:
        sock.sendall(
            b"POST /apps/3/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
        )
        took, answer = closed_after(sock, body)
    assert took < BOUND
    assert answer.startswith(b"HTTP/1.1 408"), answer


def test_an_idle_keep_alive_connection_is_closed_and_a_used_one_is_not(
    quick: LocalServer,
) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with connect(quick) as sock:
        start = time.monotonic()
        while time.monotonic() - start < 2 * LIMIT:  # within the limit each time
            sock.sendall(request)
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):  # head, JSON body
                chunk = sock.recv(65536)
                assert chunk, answer
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200"), answer
            sock.settimeout(LIMIT / 4)  # the client's pause between two requests
            with contextlib.suppress(TimeoutError):
                pytest.fail(f"closed or answered unasked while in use: {sock.recv(65536)!r}")
            sock.settimeout(10)
        took, answer = closed_after(sock)
    assert took < BOUND and answer == b""


def test_a_console_stream_outlives_the_request_timeout(quick: LocalServer) -> None:
    with connect(quick) as sock:
        sock.sendall(
            f"GET /console/events HTTP/1.1\r\nHost: 127.0.0.1:{quick.port}\r\n\r\n".encode()
        )
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        # Open for three times the limit, although it sends nothing after its hello.
        deadline = time.monotonic() + 3 * LIMIT
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                assert sock.recv(65536) != b"", "the stream was closed"
            except TimeoutError:
                break


def test_a_websocket_that_never_speaks_is_closed_by_the_heartbeat() -> None:
    """After the handshake, the Pusher protocol's own bound (reference §5.4):
    pinged after activity_timeout, closed with 4201 pong_timeout later. A
    guard (it held on 03ffb6b too), with 1 s and 0.5 s instead of 120 and 30."""
    app = AppConfig(APP_ID, KEY, SECRET, activity_timeout=1, pong_timeout=0.5)
    with LocalServer([app], tick_interval=0.1) as server, Raw(server.port) as ws:
        start = time.monotonic()
        events, code = ws.read_until_close()
        took = time.monotonic() - start
    kinds = [e["event"] for e in events]
    assert kinds == ["pusher:connection_established", "pusher:ping", "pusher:error"]
    assert events[-1]["data"]["code"] == code == 4201
    assert took < 1.5 + 4.0


def test_a_head_begun_late_has_the_time_left_since_the_accept() -> None:
    """A client that waits at the front door, then starts its head, is cut
    off ``REQUEST_TIMEOUT`` after it connected, not that long after its
    first byte (the watchdog's time goes on when aiohttp takes the connection)."""
    limit = 2.0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(timeouts, "REQUEST_TIMEOUT", limit)
        app = AppConfig(APP_ID, KEY, SECRET)
        with LocalServer([app], tick_interval=0.1) as server, connect(server) as sock:
            start = time.monotonic()
            sock.settimeout(0.9 * limit)
            with contextlib.suppress(TimeoutError):  # the client's pause before its head
                pytest.fail(f"answered unasked: {sock.recv(1)!r}")
            sock.sendall(b"GET /app/" + KEY.encode() + b" HTTP/1.1\r\n")
            sock.settimeout(3 * limit)
            assert sock.recv(1) == b""
            took = time.monotonic() - start
    # Cut off at the limit (plus a sweep): restarting the count would take 1.9 x.
    assert took < 1.5 * limit, took
