"""The debug console on the public internet (issue 16, items 1 and 2): its
buffers bounded in bytes, its secret asked for unless the request provably
comes from this machine, its login rate-limited, its cookie ``Secure`` over
TLS. Raw HTTP over real sockets; reference §5 for the frames that feed it."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from flask_pusher.server import AppConfig
from flask_pusher.server import LocalServer
from flask_pusher.server.console import WATCHER_BYTES

from .helpers import APP_ID
from .helpers import KEY
from .helpers import SECRET
from .rawsock import frame
from .rawsock import Raw

TIMEOUT = 10.0


@pytest.fixture
def console_server() -> Iterator[LocalServer]:
    with LocalServer([AppConfig(APP_ID, KEY, SECRET)], console=True) as running:
        yield running


def http(
    port: int, request: str, body: bytes = b"", host: str = "127.0.0.1"
) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` (the head, without its blank line) and ``body`` over
    a raw socket to ``host:port``; the status, headers (lower-case names) and
    body of the answer."""
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        head = request.rstrip("\r\n").replace("\n", "\r\n")
        if body:
            head += f"\r\nContent-Length: {len(body)}"
        sock.sendall(head.encode() + b"\r\nConnection: close\r\n\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    top, _, rest = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    return int(lines[0].split()[1]), headers, rest


def test_a_page_that_stops_reading_holds_a_bounded_number_of_bytes(
    console_server: LocalServer,
) -> None:
    """Anonymous clients send subscribes with 200 KB channel names (each
    refusal is a console event carrying the name); a console page that never
    reads keeps at most WATCHER_BYTES of them (it kept up to 1000 events,
    252 MB), and what is dropped is counted."""
    running = console_server.server
    assert running is not None and running.console is not None
    console = running.console
    port = console_server.port
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as page:
        page.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        page.sendall(
            f"GET /console/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        assert page.recv(4096).startswith(b"HTTP/1.1 200")
        deadline = time.monotonic() + TIMEOUT
        while not console.watching:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        name = "!" * 200_000
        with Raw(port) as ws:
            ws.read_event()
            for _ in range(50):
                ws.sock.sendall(
                    frame(
                        0x1,
                        json.dumps(
                            {"event": "pusher:subscribe", "data": {"channel": name}}
                        ).encode(),
                    )
                )
                assert ws.read_event()["event"] == "pusher:subscription_error"
        (watcher,) = console.watchers
        held = sum(map(len, list(watcher.queue)))
        assert held <= WATCHER_BYTES, f"{held / 1e6:.0f} MB held"
        assert watcher.dropped > 0
