"""aiohttp wiring: one port for WebSocket ``/app/{key}`` and the HTTP API.

:class:`LocalServer` runs the server in a background thread with its own
event loop (for tests and development); :func:`run` serves in the
foreground until SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from aiohttp import WSMsgType

from . import protocol
from .config import AppConfig
from .core import Connection
from .core import Core
from .core import Effects
from .http_api import HTTPApi
from .webhooks import WebhookSender

log = logging.getLogger("flask_pusher.server")

#: Bytes queued for one client before it is dropped as too slow (code 4100).
MAX_WRITE_BUFFER = 4 * 1024 * 1024
#: Largest accepted client frame, in bytes.
MAX_FRAME_SIZE = 256 * 1024
SUPPORTED_PROTOCOLS = (5, 6, 7)


def frame_bytes(text: str) -> bytes:
    """An unmasked, uncompressed WebSocket text frame (RFC 6455) for ``text``."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


class _Peer:
    """The I/O side of a connection: its WebSocket and raw transport."""

    __slots__ = ("transport", "ws")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport) -> None:
        self.ws = ws
        self.transport = transport


class Server:
    """The server on the current event loop; see :class:`LocalServer`."""

    def __init__(
        self,
        apps: Sequence[AppConfig],
        *,
        webhook_delay: float = 3.0,
        webhook_backoff: float = 1.0,
        webhook_retry_for: float = 300.0,
        tick_interval: float = 1.0,
    ) -> None:
        self.core = Core(apps)
        self.webhooks = WebhookSender(webhook_delay, webhook_backoff, webhook_retry_for)
        self.tick_interval = tick_interval
        self.api = HTTPApi(self.core, self.apply)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._peers: set[Connection] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tick_task: asyncio.Task[None] | None = None

    def make_app(self) -> web.Application:
        """The aiohttp application with every route."""
        app = web.Application()
        app.router.add_get("/app/{key}", self.websocket)
        app.router.add_get("/", self.index)
        self.api.add_routes(app)
        return app

    async def index(self, request: web.Request) -> web.Response:
        """``GET /``: a health check."""
        return web.Response(text="Pusher Channels server (flask_pusher.server)\n")

    # -- effects ----------------------------------------------------------

    def apply(self, effects: Effects) -> None:
        """Write frames (each encoded once), schedule closes, emit webhooks."""
        for conns, text in effects.sends:
            data = frame_bytes(text)
            for conn in conns:
                peer = conn.transport
                if peer is None:
                    continue
                transport = peer.transport
                if transport.is_closing():
                    continue
                if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
                    if not conn.closing:
                        conn.closing = True
                        self._spawn(self._close(conn, 4100, "Too slow: write buffer full"))
                    continue
                transport.write(data)
        for conn, code, reason in effects.closes:
            self._spawn(self._close(conn, code, reason))
        for app, event in effects.webhooks:
            self.webhooks.emit(app, event)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close(self, conn: Connection, code: int, reason: str) -> None:
        peer = conn.transport
        if peer is not None:
            log.debug("closing %s with %d: %s", conn.socket_id, code, reason)
            await peer.ws.close(code=code, message=reason.encode()[:123])

    # -- WebSocket --------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        """``GET /app/{key}``: one Pusher connection (reference §5)."""
        ws = web.WebSocketResponse(
            autoping=True, compress=False, max_msg_size=MAX_FRAME_SIZE, timeout=5.0
        )
        await ws.prepare(request)
        key = request.match_info["key"]
        app = self.core.apps_by_key.get(key)
        refusal: tuple[int, str] | None = None
        if app is None:
            refusal = (4001, f"App key {key[:60]} does not exist")
        else:
            version = request.query.get("protocol")
            if version is not None and version not in {str(v) for v in SUPPORTED_PROTOCOLS}:
                refusal = (4007, f"Unsupported protocol version {version[:20]}")
        transport = request.transport
        if refusal is not None or app is None or transport is None:
            code, message = refusal or (4200, "Connection lost")
            log.debug("refused connection to %s: %s", request.path, message)
            await ws.send_str(protocol.error(message, code))
            await ws.close(code=code, message=message.encode()[:123])
            return ws
        conn, effects = self.core.connect(app, _Peer(ws, transport))
        self._peers.add(conn)
        self._idle.clear()
        try:
            self.apply(effects)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._receive(conn, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    binary = Effects()
                    binary.send(conn, protocol.error("Binary frames are not supported"))
                    self.apply(binary)
        finally:
            self.apply(self.core.disconnect(conn))
            conn.transport = None
            self._peers.discard(conn)
            if not self._peers:
                self._idle.set()
        return ws

    def _receive(self, conn: Connection, text: str) -> None:
        try:
            effects = self.core.receive(conn, text)
        except Exception:  # a bug must not take the connection down
            log.exception("error handling a frame from %s", conn.socket_id)
            effects = Effects()
            effects.send(conn, protocol.error("Internal server error"))
        self.apply(effects)

    # -- lifecycle --------------------------------------------------------

    def start_ticking(self) -> None:
        """Start the periodic task for heartbeats and throttled counts."""
        self._tick_task = asyncio.ensure_future(self._tick_forever())

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            self.apply(self.core.tick())

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Close connections with 4200 and flush webhooks (reference §5.12)."""
        if self._tick_task is not None:
            self._tick_task.cancel()
        self.apply(self.core.shutdown())
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            log.warning("%d connections did not close in time", len(self._peers))
        await self.webhooks.close(timeout)
        for task in list(self._tasks):
            task.cancel()


async def start_site(server: Server, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Listen on ``host:port`` (0 picks a free port); return the runner and port."""
    runner = web.AppRunner(server.make_app(), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    server.start_ticking()
    return runner, int(runner.addresses[0][1])
