"""The opening handshake the server writes itself (issue 19): a valid request
(RFC 6455 section 4.2.1) gets its ``101`` without aiohttp's WebSocketResponse;
anything else still gets aiohttp's answer. Over real sockets."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator

import pytest

from flask_pusher.server import AppConfig
from flask_pusher.server import LocalServer

from .helpers import APP_ID
from .helpers import KEY
from .helpers import SECRET
from .helpers import TIMEOUT

#: RFC 6455 section 1.3's example: this key is answered with this accept value.
RFC_KEY, RFC_ACCEPT = "dGhlIHNhbXBsZSBub25jZQ==", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer([AppConfig(APP_ID, KEY, SECRET)], tick_interval=0.1) as running:
        yield running


def opening(server: LocalServer, headers: dict[str, str], key: str = KEY) -> bytes:
    """Send an upgrade request with ``headers``; the answer's head and what
    follows, up to the first frame or the end of a non-101 answer."""
    lines = [f"GET /app/{key}?protocol=7 HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data or (data.startswith(b"HTTP/1.1 101") and b"\x81" not in data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": RFC_KEY,
    "Sec-WebSocket-Version": "13",
}


def test_the_101_answer(server: LocalServer) -> None:
    data = opening(server, UPGRADE)
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 101 Switching Protocols"
    fields = {k.lower(): v for k, _, v in (line.partition(b": ") for line in lines[1:])}
    assert fields[b"upgrade"] == b"websocket"
    assert fields[b"connection"].lower() == b"upgrade"
    assert fields[b"sec-websocket-accept"] == RFC_ACCEPT
    assert fields[b"server"] == b"flask-pusher"  # no versions (logsafe)
    assert b"sec-websocket-protocol" not in fields  # none agreed to
    assert b"sec-websocket-extensions" not in fields  # no compression
    assert rest[0] == 0x81 and b"pusher:connection_established" in rest


@pytest.mark.parametrize(
    "headers",
    [
        {**UPGRADE, "Connection": "keep-alive, Upgrade"},
        {**UPGRADE, "Upgrade": "WebSocket"},
        {**UPGRADE, "Sec-WebSocket-Protocol": "chat"},
        {**UPGRADE, "Sec-WebSocket-Extensions": "permessage-deflate"},
    ],
    ids=["connection-list", "upgrade-case", "subprotocol", "extension"],
)
def test_valid_variants_are_upgraded(server: LocalServer, headers: dict[str, str]) -> None:
    data = opening(server, headers)
    assert data.startswith(b"HTTP/1.1 101"), data
    assert RFC_ACCEPT in data and b"pusher:connection_established" in data
    assert b"Sec-WebSocket-Protocol" not in data and b"Sec-WebSocket-Extensions" not in data


def test_an_unknown_subprotocol_is_not_logged(
    server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp's handshake logs a warning per such request, which any client can
    multiply; the server's own handshake agrees to no subprotocol quietly."""
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            assert opening(server, {**UPGRADE, "Sec-WebSocket-Protocol": "x"}).startswith(
                b"HTTP/1.1 101"
            )
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({k: v for k, v in UPGRADE.items() if k != "Sec-WebSocket-Key"}, b"400"),
        ({**UPGRADE, "Sec-WebSocket-Key": "c2hvcnQ="}, b"400"),  # 5 bytes
        ({**UPGRADE, "Sec-WebSocket-Key": "not base64!"}, b"400"),
        ({**UPGRADE, "Sec-WebSocket-Version": "99"}, b"400"),
        ({**UPGRADE, "Upgrade": "h2c"}, b"400"),
    ],
    ids=["no-key", "short-key", "bad-key", "version", "not-websocket"],
)
def test_invalid_requests_get_aiohttps_answer(
    server: LocalServer, headers: dict[str, str], status: bytes
) -> None:
    data = opening(server, headers)
    assert data.split(b"\r\n", 1)[0].split(b" ")[1] == status, data
    assert server.server is not None and not server.server.writer.sockets


def test_version_8_falls_back_to_aiohttps_handshake(server: LocalServer) -> None:
    """aiohttp takes the drafts' versions 7 and 8 too; those still connect."""
    data = opening(server, {**UPGRADE, "Sec-WebSocket-Version": "8"})
    assert data.startswith(b"HTTP/1.1 101") and b"pusher:connection_established" in data


def test_a_refused_key_still_gets_4001(server: LocalServer) -> None:
    data = opening(server, UPGRADE, key="no-such-key")
    assert data.startswith(b"HTTP/1.1 101"), data
    frame = data.split(b"\r\n\r\n", 1)[1]
    event = json.loads(frame[2 : 2 + frame[1]])
    assert event["event"] == "pusher:error" and event["data"]["code"] == 4001
