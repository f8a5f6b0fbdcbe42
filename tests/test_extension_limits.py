"""The extension on the public internet (issue 16, item 5): the webhook route
reads no body over ``PUSHER_WEBHOOK_MAX_BYTES``; ``PUSHER_LOCAL_SERVER`` takes
its webhook URL from nothing a client sends and has no published secret.
Raw HTTP over real sockets to werkzeug's server (reference §3)."""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from flask import Flask

from flask_pusher import local
from flask_pusher import Pusher
from flask_pusher.testing import webhook_request

from .serving import serve_http

TIMEOUT = 10.0


@pytest.fixture
def served(app: Flask, pusher: Pusher) -> Iterator[int]:
    with serve_http(app) as url:
        yield int(url.rsplit(":", 1)[1])


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(served: int) -> None:
    """Content-Length of 200 MiB: 413 at once (the route read the whole body
    first, 200 MB of memory, before checking anything)."""
    with socket.create_connection(("127.0.0.1", served), timeout=TIMEOUT) as sock:
        sock.sendall(
            b"POST /pusher/events HTTP/1.1\r\nHost: app.example\r\n"
            b"Content-Type: application/json\r\nContent-Length: 209715200\r\n\r\n" + b"x" * 1024
        )
        status, headers, body = read_response(sock)
    assert status == 413
    assert headers["content-type"] == "application/json"
    assert "PUSHER_WEBHOOK_MAX_BYTES" in json.loads(body)["error"]


def test_a_chunked_body_is_refused_once_it_passes_the_limit(served: int) -> None:
    """No Content-Length: the route stops reading just past 1 MiB and answers
    413 while the client is still sending."""
    sent = 0
    with socket.create_connection(("127.0.0.1", served), timeout=TIMEOUT) as sock:
        sock.sendall(
            b"POST /pusher/events HTTP/1.1\r\nHost: app.example\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"10000\r\n" + b"x" * 65536 + b"\r\n"
        while sent < 64 * 1024 * 1024:
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(chunk)
            except OSError:
                break
            sent += 65536
        else:
            sock.sendall(b"0\r\n\r\n")
        status, _, body = read_response(sock)
    assert status == 413, body
    assert sent < 16 * 1024 * 1024, sent  # the limit, plus what the kernel buffers


def test_a_chunked_webhook_within_the_limit_is_verified(
    app: Flask, pusher: Pusher, served: int
) -> None:
    seen: list[str] = []
    pusher.webhooks.on("channel_occupied")(lambda event: seen.append(event["channel"]))
    with app.app_context():
        signed = webhook_request([{"name": "channel_occupied", "channel": "c1"}])
    body = signed.body
    head = "POST /pusher/events HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: chunked\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in signed.headers.items())
    with socket.create_connection(("127.0.0.1", served), timeout=TIMEOUT) as sock:
        sock.sendall(head.encode() + b"\r\n")
        for start in range(0, len(body), 7):
            piece = body[start : start + 7]
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        status, _, answer = read_response(sock)
    assert (status, json.loads(answer), seen) == (200, {}, ["c1"])


def test_the_limit_is_a_setting() -> None:
    app = Flask(__name__)
    app.config.update(
        PUSHER_APP_ID="1", PUSHER_KEY="k", PUSHER_SECRET="s", PUSHER_WEBHOOK_MAX_BYTES="100"
    )
    Pusher(app)
    client = app.test_client()
    assert client.post("/pusher/events", data=b"x" * 101).status_code == 413
    assert client.post("/pusher/events", data=b"x" * 100).status_code == 401


# -- PUSHER_LOCAL_SERVER ----------------------------------------------------------


@pytest.fixture
def local_app() -> Iterator[tuple[Flask, int]]:
    """An app with PUSHER_LOCAL_SERVER on a free port; its servers stopped after."""
    app = Flask(__name__)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    app.config.update(PUSHER_LOCAL_SERVER=True, PUSHER_LOCAL_SERVER_PORT=port)
    Pusher(app)
    app.get("/")(lambda: "ok")
    try:
        yield app, port
    finally:
        local.stop_all()


def get_with_host(url: str, host: str) -> int:
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        return read_response(sock)[0]


def test_the_local_servers_webhooks_never_follow_a_host_header(
    local_app: tuple[Flask, int],
) -> None:
    """The first request's Host decided where webhooks, signed with the app's
    secret, went: now the address the request arrived on."""
    app, port = local_app
    pytest.importorskip("aiohttp")
    with serve_http(app) as url:
        get_with_host(url, "attacker.example:9999")
        server = local.running(port)
        assert server is not None
        assert [hook.url for hook in server.apps[0].webhooks] == [f"{url}/pusher/events"]


def test_the_local_servers_webhooks_go_to_server_name(local_app: tuple[Flask, int]) -> None:
    app, port = local_app
    pytest.importorskip("aiohttp")
    app.config.update(SERVER_NAME="myapp.test:5000", PREFERRED_URL_SCHEME="https")
    with serve_http(app) as url:
        get_with_host(url, "myapp.test:5000")
        server = local.running(port)
        assert server is not None
        assert [hook.url for hook in server.apps[0].webhooks] == [
            "https://myapp.test:5000/pusher/events"
        ]


def test_without_credentials_the_secret_is_random_per_process(
    local_app: tuple[Flask, int],
) -> None:
    """The published built-in secret signed webhooks the app accepted."""
    app, _ = local_app
    code = "from flask_pusher.settings import LOCAL_DEFAULTS; print(LOCAL_DEFAULTS['secret'])"
    drawn = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(drawn) == 2 and all(len(secret) == 40 for secret in drawn)
    with app.app_context():
        secret = app.extensions["pusher"].settings.secret
    assert secret not in drawn | {"flask-pusher-local-secret"}
    published = webhook_request(
        [{"name": "channel_occupied", "channel": "c"}],
        key="flask-pusher-local",
        secret="flask-pusher-local-secret",
    )
    response = app.test_client().post(
        "/pusher/events", data=published.body, headers=published.headers
    )
    assert response.status_code == 401
