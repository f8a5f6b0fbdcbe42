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
from flask import Flask

from flask_pusher import local
from flask_pusher import Pusher
from flask_pusher.cli import pusher_cli
from flask_pusher.server import AppConfig
from flask_pusher.server import LocalServer
from flask_pusher.server.access import RateLimit
from flask_pusher.server.console import LOGIN_ATTEMPTS
from flask_pusher.server.console import WATCHER_BYTES

from .helpers import APP_ID
from .helpers import KEY
from .helpers import SECRET
from .rawsock import frame
from .rawsock import Raw
from .redis_server import free_port

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
    headers: dict[str, str] = {}
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


# -- who needs the secret ---------------------------------------------------------


def console_requests(port: int, headers: str) -> dict[str, int]:
    """The status of the console's state, stream and event creator for a
    request with ``headers`` (a ``Host`` line and more), over raw HTTP."""
    trigger = json.dumps(
        {"app_id": APP_ID, "channel": "private-x", "event": "e", "data": "{}"}
    ).encode()
    found = {}
    for name, method, path, body in (
        ("state", "GET", "/console/state", b""),
        ("page", "GET", "/console", b""),
        ("trigger", "POST", "/console/trigger", trigger),
    ):
        head = f"{method} {path} HTTP/1.1\n{headers}"
        if body:
            head += "\nContent-Type: application/json"
        found[name] = http(port, head, body)[0]
    # The stream answers at once when refused; when allowed, it is read no further.
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        head = f"GET /console/events HTTP/1.1\r\n{headers.replace(chr(10), chr(13) + chr(10))}"
        sock.sendall(head.encode() + b"\r\n\r\n")
        found["events"] = int(sock.recv(4096).split(b" ", 2)[1])
    return found


ALLOWED = {"state": 200, "page": 200, "trigger": 200, "events": 200}
REFUSED = {"state": 403, "page": 401, "trigger": 403, "events": 403}


def test_the_local_machine_needs_no_secret(console_server: LocalServer) -> None:
    """The one case without a secret: loopback peer, loopback Host with the
    server's port, no proxy header (each name the issue lists)."""
    port = console_server.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
        assert console_requests(port, f"Host: {host}") == ALLOWED, host


@pytest.mark.parametrize(
    "headers",
    [
        # DNS rebinding: the page's own name, and an Origin that matches it.
        "Host: rebound.example:{port}\nOrigin: http://rebound.example:{port}",
        "Host: rebound.example:{port}",
        # A loopback name with another port (a proxy on :80 passing the Host on).
        "Host: 127.0.0.1:1{port}",
        "Host: localhost",
        "Host: 127.0.0.2:{port}",
        "Host: 127.0.0.1:{port}x",
        # A proxy on this machine that says so in any way.
        "Host: 127.0.0.1:{port}\nX-Real-IP: 203.0.113.9",
        "Host: 127.0.0.1:{port}\nVia: 1.1 proxy",
        "Host: 127.0.0.1:{port}\nX-Forwarded-Proto: https",
        "Host: 127.0.0.1:{port}\nX-Forwarded-Host: example.com",
        "Host: 127.0.0.1:{port}\nForwarded: for=203.0.113.9",
        "Host: 127.0.0.1:{port}\nTrue-Client-IP: 203.0.113.9",
    ],
)
def test_anything_else_needs_the_secret(console_server: LocalServer, headers: str) -> None:
    """No state, no stream and no trigger without the secret (a rebinding page
    read the state, streamed events and triggered on private channels)."""
    port = console_server.port
    assert console_requests(port, headers.format(port=port)) == REFUSED


def test_an_allowed_host_name_counts_as_this_machine() -> None:
    app = AppConfig(APP_ID, KEY, SECRET)
    with LocalServer([app], console=True, console_allow_hosts=["MyApp.test"]) as server:
        port = server.port
        assert console_requests(port, f"Host: myapp.test:{port}") == ALLOWED
        assert console_requests(port, f"Host: other.test:{port}") == REFUSED
        assert console_requests(port, "Host: myapp.test:1") == REFUSED


# -- the login ----------------------------------------------------------------


def login(port: int, secret: str, headers: str = "") -> tuple[int, dict[str, str]]:
    body = f"secret={secret}".encode()
    head = f"POST /console/login HTTP/1.1\nHost: example.com\n{headers}"
    head = head.rstrip("\n") + "\nContent-Type: application/x-www-form-urlencoded"
    status, found, _ = http(port, head, body)
    return status, found


def test_login_attempts_are_rate_limited_per_address(console_server: LocalServer) -> None:
    """LOGIN_ATTEMPTS per minute from one address; then 429 with Retry-After,
    even for the right secret (before: as many guesses as the network carries)."""
    port = console_server.port
    for _ in range(LOGIN_ATTEMPTS):
        assert login(port, "wrong")[0] == 401
    status, headers = login(port, SECRET)
    assert status == 429
    assert 0 < int(headers["retry-after"]) <= 61


def test_the_cookie_is_secure_over_tls_through_a_trusted_proxy() -> None:
    """X-Forwarded-Proto is believed from a trusted proxy only."""
    app = AppConfig(APP_ID, KEY, SECRET)
    with LocalServer([app], console=True, trusted_proxies=["127.0.0.0/8"]) as server:
        status, headers = login(server.port, SECRET, "X-Forwarded-Proto: https")
        assert status == 303
        assert "Secure" in headers["set-cookie"].split("; ")
        status, headers = login(server.port, SECRET, "X-Forwarded-Proto: http")
        assert "Secure" not in headers["set-cookie"].split("; ")
    with LocalServer([app], console=True) as untrusted:
        status, headers = login(untrusted.port, SECRET, "X-Forwarded-Proto: https")
        assert status == 303 and "Secure" not in headers["set-cookie"].split("; ")


def test_the_config_key_reaches_the_local_server_and_flask_pusher_serve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PUSHER_SERVER_CONSOLE_ALLOW_HOSTS, for PUSHER_LOCAL_SERVER's console and
    for ``flask pusher serve`` without ``--console-allow-host``."""
    port = free_port()
    app = Flask(__name__)
    app.config.update(
        PUSHER_APP_ID=APP_ID,
        PUSHER_KEY=KEY,
        PUSHER_SECRET=SECRET,
        PUSHER_LOCAL_SERVER=True,
        PUSHER_LOCAL_SERVER_PORT=port,
        PUSHER_SERVER_CONSOLE_ALLOW_HOSTS="myapp.test, other.test",
    )
    Pusher(app)
    try:
        with app.app_context():
            local.ensure_started(app.extensions["pusher"].settings)
        assert console_requests(port, f"Host: myapp.test:{port}") == ALLOWED
        assert console_requests(port, f"Host: third.test:{port}") == REFUSED
    finally:
        local.stop_all()
    seen: list[dict[str, object]] = []
    monkeypatch.setattr("flask_pusher.server.serve.run", lambda *args, **kw: seen.append(kw))
    runner = app.test_cli_runner()
    assert runner.invoke(pusher_cli, ["serve"]).exit_code == 0
    argv = ["serve", "--console-allow-host", "cli.test"]
    assert runner.invoke(pusher_cli, argv).exit_code == 0  # the command line wins
    assert [kw["console_allow_hosts"] for kw in seen] == [
        ("myapp.test", "other.test"),
        ("cli.test",),
    ]


def test_the_rate_limit_counts_per_key_in_all_and_forgets() -> None:
    """Many addresses gain nothing past the total; the window slides; the
    table of keys is bounded."""
    limit = RateLimit(limit=2, period=10.0, total=3, keys=2)
    assert [limit.retry_after("a", 0.0), limit.retry_after("a", 1.0)] == [0.0, 0.0]
    assert limit.retry_after("a", 2.0) == 8.0  # the first attempt leaves the window at 10
    assert limit.retry_after("b", 2.0) == 0.0
    assert limit.retry_after("c", 3.0) == 7.0  # the total: 3 in the window
    assert limit.retry_after("a", 10.5) == 0.0  # 0.0 has left the window
    assert len(limit._by_key) <= 2
