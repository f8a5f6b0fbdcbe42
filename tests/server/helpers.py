"""Shared helpers for the local server's tests: signing, a WebSocket client and a
webhook receiver."""

from __future__ import annotations

import asyncio
import http.server
import json
import queue
import threading
import time
from collections.abc import Awaitable
from collections.abc import Callable
from typing import Any

import aiohttp
import pusher

APP_ID = "3"
KEY = "278d425bdf160c739803"
SECRET = "7ad3773142a6692b25b8"
MASTER_KEY = "bm90LWEtcmVhbC1rZXktYnV0LTMyLWJ5dGVzLWxvbmc="  # 32 bytes, base64
TIMEOUT = 10.0


def pusher_client(port: int, app_id: str = APP_ID, key: str = KEY, secret: str = SECRET) -> Any:
    """The official pusher-http-python client pointed at a local server."""
    return pusher.Pusher(app_id, key, secret, host="127.0.0.1", port=port, ssl=False)


def channel_auth(
    socket_id: str, channel: str, channel_data: dict[str, Any] | None = None
) -> dict[str, str]:
    """An auth response as the official library builds it (reference §1.4)."""
    client = pusher.Pusher(APP_ID, KEY, SECRET, encryption_master_key_base64=MASTER_KEY)
    result = dict(client.authenticate(channel, socket_id, channel_data))
    if isinstance(result.get("shared_secret"), bytes):  # PY 3.3.4 quirk, reference §1.4
        result["shared_secret"] = result["shared_secret"].decode("ascii")
    return result


def user_auth(socket_id: str, user_data: dict[str, Any]) -> dict[str, str]:
    """A signin response as the official library builds it (reference §1.5)."""
    client = pusher.Pusher(APP_ID, KEY, SECRET)
    result: dict[str, str] = client.authenticate_user(socket_id, user_data)
    return result


class WS:
    """A Pusher client over aiohttp that records every frame it receives."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse[bool]) -> None:
        self.ws = ws
        self.socket_id = ""

    @classmethod
    async def connect(
        cls, session: aiohttp.ClientSession, base: str, key: str = KEY, query: str = "protocol=7"
    ) -> WS:
        ws = await session.ws_connect(f"{base}/app/{key}?{query}", autoping=True)
        client = cls(ws)
        if key == KEY:
            hello = await client.recv()
            assert hello["event"] == "pusher:connection_established"
            client.socket_id = json.loads(hello["data"])["socket_id"]
        return client

    async def send(self, event: str, data: Any = None, channel: str | None = None) -> None:
        frame: dict[str, Any] = {"event": event, "data": data if data is not None else {}}
        if channel is not None:
            frame["channel"] = channel
        await self.ws.send_str(json.dumps(frame))

    async def recv(self, timeout: float = TIMEOUT, skip_counts: bool = False) -> dict[str, Any]:
        while True:
            msg = await self.ws.receive(timeout)
            assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
            frame: dict[str, Any] = json.loads(msg.data)
            if skip_counts and frame["event"] == "pusher_internal:subscription_count":
                continue
            return frame

    async def expect(self, event: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next frame named ``event``, skipping subscription counts."""
        frame = await self.recv(timeout, skip_counts=True)
        assert frame["event"] == event, frame
        return frame

    async def silent(self, timeout: float = 0.3) -> None:
        """Assert that nothing but subscription counts arrives for ``timeout`` s."""
        try:
            frame = await self.recv(timeout, skip_counts=True)
        except asyncio.TimeoutError:
            return
        raise AssertionError(f"unexpected frame {frame}")

    async def subscribe(
        self,
        channel: str,
        channel_data: dict[str, Any] | None = None,
        *,
        signed: bool = True,
        expect: str | None = "pusher_internal:subscription_succeeded",
    ) -> dict[str, Any] | None:
        data: dict[str, Any] = {"channel": channel, "auth": ""}
        if signed and channel.startswith(("private-", "presence-")):
            data.update(channel_auth(self.socket_id, channel, channel_data))
            data.pop("shared_secret", None)
        await self.send("pusher:subscribe", data)
        if expect is None:
            return None
        frame = await self.expect(expect)
        assert frame.get("channel") == channel, frame
        return frame

    async def signin(self, user_data: dict[str, Any]) -> dict[str, Any]:
        await self.send("pusher:signin", user_auth(self.socket_id, user_data))
        return await self.expect("pusher:signin_success")

    async def close(self) -> None:
        await self.ws.close()


def data_of(frame: dict[str, Any]) -> Any:
    """The double-encoded ``data`` of a server frame, decoded."""
    assert isinstance(frame["data"], str), frame
    return json.loads(frame["data"])


def run_scenario(scenario: Callable[[aiohttp.ClientSession], Awaitable[None]]) -> None:
    """Run ``scenario(session)`` on a fresh event loop, bounded in time."""

    async def main() -> None:
        async with aiohttp.ClientSession() as session:
            await asyncio.wait_for(scenario(session), 60)

    asyncio.run(main())


class Receiver:
    """A webhook endpoint that records every POST and can fail on demand."""

    def __init__(self) -> None:
        self.requests: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()
        self.failures = 0  # answer 500 to this many requests first
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                failing = receiver.failures > 0
                receiver.failures -= 1
                receiver.requests.put((dict(self.headers), body))
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/pusher/events"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def next(self, timeout: float = 10) -> tuple[dict[str, str], bytes]:
        return self.requests.get(timeout=timeout)

    def events(self, timeout: float = 10) -> list[dict[str, Any]]:
        """The events of the next request, after checking it like an app would."""
        headers, body = self.next(timeout)
        assert headers["Content-Type"] == "application/json"
        checker = pusher.Pusher(APP_ID, KEY, SECRET)
        payload = checker.validate_webhook(
            headers["X-Pusher-Key"], headers["X-Pusher-Signature"], body
        )
        assert payload is not None, "validate_webhook refused the webhook"
        assert abs(payload["time_ms"] - time.time() * 1000) < 60_000  # milliseconds
        events: list[dict[str, Any]] = payload["events"]
        return events

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
