"""A WebSocket subscriber on the local server, in a thread of its own, for the
extension's tests: what the app triggers arrives in a queue (reference §5)."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import Iterable
from typing import Any

import aiohttp
import pusher

from flask_pusher.server import LocalServer
from flask_pusher.testing import TEST_APP_ID
from flask_pusher.testing import TEST_KEY
from flask_pusher.testing import TEST_SECRET

TIMEOUT = 10.0


class Listener:
    """Connects to ``server``, subscribes to ``channels`` and queues every event.

    Private and presence channels are signed with the test app's secret; a
    presence channel joins as ``user_id``. Use as a context manager.
    """

    def __init__(
        self, server: LocalServer, channels: Iterable[str], user_id: str = "listener"
    ) -> None:
        self.server = server
        self.channels = list(channels)
        self.user_id = user_id
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.socket_id = ""
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Listener:
        self._thread.start()
        if not self._ready.wait(TIMEOUT) or self._error is not None:
            raise AssertionError(f"the listener did not subscribe: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(TIMEOUT)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # reported by __enter__ or next_event
            self._error = e
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        signer = pusher.Pusher(TEST_APP_ID, TEST_KEY, TEST_SECRET)
        url = f"ws://{self.server.host}:{self.server.port}/app/{TEST_KEY}?protocol=7"
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            hello = json.loads((await ws.receive_json(timeout=TIMEOUT))["data"])
            self.socket_id = hello["socket_id"]
            for channel in self.channels:
                data: dict[str, Any] = {"channel": channel}
                if channel.startswith(("private-", "presence-")):
                    member = {"user_id": self.user_id} if channel.startswith("presence-") else None
                    data.update(signer.authenticate(channel, self.socket_id, member))
                await ws.send_json({"event": "pusher:subscribe", "data": data})
                while True:
                    frame = await ws.receive_json(timeout=TIMEOUT)
                    if frame["event"] == "pusher_internal:subscription_succeeded":
                        break
            self._ready.set()
            stop = asyncio.ensure_future(self._stop.wait())
            while not stop.done():
                receive = asyncio.ensure_future(ws.receive())
                await asyncio.wait({receive, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not receive.done():
                    receive.cancel()
                    break
                message = receive.result()
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                frame = json.loads(message.data)
                if not frame["event"].startswith("pusher"):
                    self.events.put(frame)

    def next_event(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next event frame, with ``data`` decoded from JSON."""
        try:
            frame = self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event within {timeout} s ({self._error!r})") from None
        return {**frame, "data": json.loads(frame["data"])}

    def take(self, count: int, timeout: float = TIMEOUT) -> list[tuple[str, str, Any]]:
        """The next ``count`` events as ``(channel, event, data)``."""
        frames = [self.next_event(timeout) for _ in range(count)]
        return [(f["channel"], f["event"], f["data"]) for f in frames]
