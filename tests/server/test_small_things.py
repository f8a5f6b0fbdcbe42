"""The smaller things of issue 16 (item 6), over real sockets: a repeated query
parameter in a signed request, deeply nested client JSON, what ``/ready`` and
the ``Server`` header give away, and control characters in log lines."""

from __future__ import annotations

import hmac
import http.client
import json
import logging
import socket
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from flask_pusher.server import LocalServer
from flask_pusher.server import logsafe
from flask_pusher.server.protocol import MAX_JSON_DEPTH
from flask_pusher.server.protocol import MAX_MEMBER_BYTES

from .helpers import channel_auth
from .helpers import KEY
from .helpers import SECRET
from .rawsock import Raw

TIMEOUT = 10.0


def raw_get(server: LocalServer, target: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=TIMEOUT)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, headers, response.read()
    finally:
        connection.close()


def signed_query(method: str, path: str, params: dict[str, str]) -> str:
    """The query string of a request signed as reference §4.3 says."""
    query = {"auth_key": KEY, "auth_timestamp": str(int(time.time())), "auth_version": "1.0"}
    query.update(params)
    canonical = "&".join(f"{k}={query[k]}" for k in sorted(query))
    to_sign = f"{method}\n{path}\n{canonical}"
    query["auth_signature"] = hmac.new(SECRET.encode(), to_sign.encode(), "sha256").hexdigest()
    return "&".join(f"{k}={quote(v)}" for k, v in query.items())


@pytest.fixture
def occupied(server: LocalServer) -> Iterator[Raw]:
    """A raw client subscribed to ``news`` and ``private-a``."""
    with Raw(server.port) as ws:
        socket_id = json.loads(ws.read_event()["data"])["socket_id"]
        ws.send_json({"event": "pusher:subscribe", "data": {"channel": "news"}})
        auth = channel_auth(socket_id, "private-a")
        ws.send_json({"event": "pusher:subscribe", "data": {"channel": "private-a", **auth}})
        succeeded = 0
        while succeeded < 2:
            event = ws.read_event()["event"]
            assert event.startswith("pusher_internal:subscription_"), event
            succeeded += event == "pusher_internal:subscription_succeeded"
        yield ws


def test_a_repeated_query_parameter_is_a_400(server: LocalServer, occupied: Raw) -> None:
    """A captured signed ``GET /channels?filter_by_prefix=private-`` with
    ``filter_by_prefix=`` put before it: the signature covered the last value
    and the operation read the first, listing every channel for 600 s."""
    path = "/apps/3/channels"
    query = signed_query("GET", path, {"filter_by_prefix": "private-"})
    status, _, body = raw_get(server, f"{path}?{query}")
    assert (status, json.loads(body)) == (200, {"channels": {"private-a": {}}})
    status, _, body = raw_get(server, f"{path}?filter_by_prefix=&{query}")
    assert status == 400, body
    assert b"Repeated query parameter 'filter_by_prefix'" in body
    status, _, body = raw_get(server, f"{path}?{query}&FILTER_BY_PREFIX=")
    assert status == 400, body


def nested(depth: int) -> object:
    value: object = "x"
    for _ in range(depth - 1):
        value = [value]
    return {"deep": value}


def test_deeply_nested_user_info_is_refused_clearly(
    server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A signed presence user_info nested 900 deep broke the channel for every
    later joiner (an internal error and a traceback per join); now it is
    refused with a message that says why, and the channel works."""
    caplog.set_level(logging.DEBUG)
    with Raw(server.port) as deep, Raw(server.port) as later:
        for ws, info in ((deep, nested(900)), (later, {"name": "Ann"})):
            socket_id = json.loads(ws.read_event()["data"])["socket_id"]
            data = {"user_id": str(id(ws)), "user_info": info}
            auth = channel_auth(socket_id, "presence-room", data)
            frame = {"event": "pusher:subscribe", "data": {"channel": "presence-room", **auth}}
            ws.send_json(frame)
            answer = ws.read_event()
            if ws is deep:
                assert answer["event"] == "pusher:subscription_error"
                error = answer["data"]
                error = json.loads(error) if isinstance(error, str) else error
                assert f"nested more than {MAX_JSON_DEPTH} deep" in error["error"]
            else:
                assert answer["event"] == "pusher_internal:subscription_succeeded"
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []


def test_the_json_depth_limit_is_exact(server: LocalServer) -> None:
    """A client event or frame nested just within the limit passes; one more is refused."""
    with Raw(server.port) as ws:
        ws.read_event()
        ws.send_json({"event": "pusher:ping", "data": nested(MAX_JSON_DEPTH - 1)})
        assert ws.read_event()["event"] == "pusher:pong"
        ws.send_json({"event": "pusher:ping", "data": nested(MAX_JSON_DEPTH)})
        answer = ws.read_event()
        assert answer["event"] == "pusher:error", answer


def test_no_version_in_the_server_header(server: LocalServer) -> None:
    """``Server`` named aiohttp's and Python's versions on every answer: the
    HTTP API, a probe, an unknown path and the WebSocket handshake."""
    for target in ("/health", "/ready", "/apps/3/channels", "/nowhere"):
        _, headers, _ = raw_get(server, target)
        assert headers["server"] == "flask-pusher", (target, headers)
    with Raw(server.port) as ws:
        assert b"\r\nServer: flask-pusher\r\n" in ws.head + b"\r\n"


def test_control_characters_in_a_request_never_split_a_log_line(
    server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    """``%0A`` in a path forged a second log line under ``--debug``."""
    caplog.set_level(logging.DEBUG, logger="flask_pusher.server")
    forged = "/apps/3/channels/news%0D%0AINFO%20forged%20line%1B[31m"
    status, _, _ = raw_get(server, forged)
    assert status == 401
    lines = [r.getMessage() for r in caplog.records if "/apps/3/channels" in r.getMessage()]
    assert lines, caplog.records
    for line in lines:
        assert not any(ord(c) < 0x20 for c in line), line
        assert "\\x0d\\x0aINFO forged line\\x1b[31m" in line


def test_a_presence_member_over_2_kb_is_refused_clearly(server: LocalServer) -> None:
    """Every member's user_info goes to every subscriber: soketi refuses over
    2 KB (reference servers §3), and so does this server now; up to 2 KB passes."""
    with Raw(server.port) as ws:
        socket_id = json.loads(ws.read_event()["data"])["socket_id"]
        for size, accepted in ((MAX_MEMBER_BYTES, True), (MAX_MEMBER_BYTES + 1, False)):
            channel = f"presence-{size}"
            info = "x" * (size - 2)  # a JSON string: two quotes
            auth = channel_auth(socket_id, channel, {"user_id": "u", "user_info": info})
            ws.send_json({"event": "pusher:subscribe", "data": {"channel": channel, **auth}})
            answer = ws.read_event()
            while answer["event"] == "pusher_internal:subscription_count":
                answer = ws.read_event()
            if accepted:
                assert answer["event"] == "pusher_internal:subscription_succeeded", answer
            else:
                assert answer["event"] == "pusher:subscription_error", answer
                data = answer["data"]
                data = json.loads(data) if isinstance(data, str) else data
                assert f"over the {MAX_MEMBER_BYTES} a presence member may have" in data["error"]


@pytest.mark.parametrize(
    "request_bytes",
    [b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"],
)
def test_no_version_in_the_answer_to_a_malformed_request(
    server: LocalServer, request_bytes: bytes
) -> None:
    """aiohttp answers these itself, before any route or signal."""
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        sock.sendall(request_bytes)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.0 400") or head.startswith(b"HTTP/1.1 400"), head
    assert b"\r\nServer: flask-pusher" in head and b"aiohttp" not in head, head


def test_the_escaping_filter_never_breaks_a_log_call(caplog: pytest.LogCaptureFixture) -> None:
    """A record whose arguments do not fit its format is left to the handler
    (which reports it) instead of raising where the server logs."""
    broken = logging.LogRecord("flask_pusher.server", logging.DEBUG, "", 0, "%s %s", ("a",), None)
    assert logsafe.EscapeControls().filter(broken) is True
    logsafe.install()
    caplog.set_level(logging.DEBUG, logger="flask_pusher.server")
    logging.getLogger("flask_pusher.server").debug("line\nbreak \u2028 and \x7f")
    assert caplog.records[-1].getMessage() == "line\\x0abreak \\u2028 and \\x7f"
