"""Hostile input found by probing: answered with 4xx or pusher:error, never a crash."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import struct
import time

import aiohttp
import pusher
import pytest
from pusher.signature import sign

from flask_pusher.server import AppConfig
from flask_pusher.server import LocalServer

from .helpers import APP_ID
from .helpers import KEY
from .helpers import run_scenario
from .helpers import SECRET
from .helpers import WS

DEEP = "[" * 100_000 + "]" * 100_000


def signed_query(method: str, path: str, body: bytes, timestamp: str) -> dict[str, str]:
    query = {
        "auth_key": KEY,
        "auth_timestamp": timestamp,
        "auth_version": "1.0",
        "body_md5": hashlib.md5(body).hexdigest(),
    }
    text = "&".join(f"{k}={v}" for k, v in sorted(query.items()))
    query["auth_signature"] = sign(SECRET, f"{method}\n{path}\n{text}")
    return query


@pytest.mark.parametrize(
    ("path", "body", "timestamp", "status", "message"),
    [
        (f"/apps/{APP_ID}/events", b"{}", "1" + "0" * 400, 401, "Timestamp expired"),
        (f"/apps/{APP_ID}/events", b"{}", "-" + "9" * 400, 401, "Timestamp expired"),
        (f"/apps/{APP_ID}/events", DEEP.encode(), None, 400, "JSON object"),
        (f"/apps/{APP_ID}/batch_events", DEEP.encode(), None, 400, "JSON object"),
        (f"/apps/{APP_ID}/users/%20/terminate_connections", b"{}", None, 400, "user id"),
        ("/users/a%23b/terminate_connections", b"{}", None, 400, "user id"),
    ],
)
def test_http_api(
    server: LocalServer, path: str, body: bytes, timestamp: str | None, status: int, message: str
) -> None:
    signed_path = path.replace("%20", " ").replace("%23", "#")
    query = signed_query("POST", signed_path, body, timestamp or str(int(time.time())))

    async def scenario(session: aiohttp.ClientSession) -> None:
        async with session.post(
            server.url + path, params=query, data=body, skip_auto_headers=["Content-Type"]
        ) as r:
            assert r.status == status, await r.text()
            assert message in await r.text()

    run_scenario(scenario)


def test_deeply_nested_frames_are_malformed_not_internal_errors(
    server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario(session: aiohttp.ClientSession) -> None:
        ws = await WS.connect(session, server.ws_url)
        await ws.ws.send_str(DEEP)
        error = await ws.expect("pusher:error")
        assert "JSON nested more than 32 deep" in error["data"]["message"]
        await ws.ws.send_str('{"event": "pusher:subscribe", "data": "{' + "[" * 50_000 + '"}')
        error = await ws.recv()
        assert error["event"] in ("pusher:error", "pusher:subscription_error"), error
        assert "Internal" not in str(error)
        await ws.close()

    run_scenario(scenario)
    assert "Traceback" not in caplog.text


def test_lone_surrogates_are_relayed_and_nan_refused(
    server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    """JSON may escape lone surrogates ("\\ud800"), which UTF-8 cannot encode, and
    Python's decoder accepts NaN and overflows 1e999 to Infinity, which no JSON
    parser (pusher-js's JSON.parse) accepts. Neither may break a write, give a 500
    or reach other clients as invalid JSON."""
    caplog.set_level(logging.DEBUG)
    client = pusher.Pusher(APP_ID, KEY, SECRET, host="127.0.0.1", port=server.port, ssl=False)

    async def scenario(session: aiohttp.ClientSession) -> None:
        ann = await WS.connect(session, server.ws_url)
        bob = await WS.connect(session, server.ws_url)
        await ann.subscribe("private-x")
        await bob.subscribe("private-x")
        await bob.subscribe("presence-p", {"user_id": "\ud800", "user_info": {"n": "\udc00"}})
        await ann.ws.send_str(
            '{"event":"client-\\ud800","channel":"private-x","data":{"v":"\\udc00"}}'
        )
        frame = await bob.expect("client-\ud800")
        assert frame["data"] == {"v": "\udc00"}
        for bad in ("NaN", "-Infinity", "1e999"):
            await ann.ws.send_str(
                '{"event":"client-e","channel":"private-x","data":{"v":' + bad + "}}"
            )
            error = await ann.expect("pusher:error")
            assert "Invalid JSON" in error["data"]["message"], error
        await ann.send("client-ok", {"v": 1}, channel="private-x")
        assert (await bob.expect("client-ok"))["data"] == {"v": 1}
        await asyncio.to_thread(client.trigger, "private-x", "e\ud800", "d\udc00")
        frame = await bob.expect("e\ud800")
        assert frame["data"] == "d\udc00"
        users = await asyncio.to_thread(client.users_info, "presence-p")
        assert users == {"users": [{"id": "\ud800"}]}
        await ann.close()
        await bob.close()

    run_scenario(scenario)
    assert "Traceback" not in caplog.text
    assert "Error" not in caplog.text


def test_clients_leaving_during_the_handshake_log_no_traceback(
    app_config: AppConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """A browser tab closed while it connects resets the socket before the
    server answers the upgrade: no "Error handling request" traceback."""
    caplog.set_level(logging.DEBUG)
    with LocalServer([app_config]) as running:
        for key in (KEY, "wrongkey"):
            for _ in range(20):
                sock = socket.create_connection(("127.0.0.1", running.port))
                sock.sendall(
                    f"GET /app/{key}?protocol=7 HTTP/1.1\r\nHost: localhost\r\n"
                    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n".encode()
                )
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()  # RST

        async def scenario(session: aiohttp.ClientSession) -> None:
            ws = await WS.connect(session, running.ws_url)
            await ws.subscribe("still-works")
            await ws.close()

        run_scenario(scenario)
    # stop() waited for every handler.
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize(
    ("event", "data", "answer"),
    [
        ("pusher:subscribe", {"channel": "private-a", "auth": "\ud800"}, "subscription_error"),
        (
            "pusher:subscribe",
            {"channel": "presence-a", "auth": f"{KEY}:x", "channel_data": '{"user_id":"\ud800"}'},
            "subscription_error",
        ),
        ("pusher:signin", {"auth": f"{KEY}:x", "user_data": '{"id":"\ud800"}'}, "error"),
        ("pusher:signin", {"auth": "\udc00:x", "user_data": '{"id":"u"}'}, "error"),
    ],
)
def test_lone_surrogates_in_signed_strings_are_refused(
    server: LocalServer,
    caplog: pytest.LogCaptureFixture,
    event: str,
    data: dict[str, str],
    answer: str,
) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario(session: aiohttp.ClientSession) -> None:
        ws = await WS.connect(session, server.ws_url)
        await ws.send(event, data)  # json.dumps escapes them: "\\ud800"
        reply = await ws.expect(f"pusher:{answer}")
        assert "Internal" not in str(reply), reply
        await ws.close()

    run_scenario(scenario)
    assert "Traceback" not in caplog.text
