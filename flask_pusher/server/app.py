"""aiohttp wiring: one port for WebSocket ``/app/{key}`` and the HTTP API.

:class:`Server` owns the sockets: it reads frames, asks the core, and writes
what the core returns, each broadcast frame encoded once. Starting and
stopping it (:class:`~flask_pusher.server.LocalServer`, :func:`run`) is in
:mod:`flask_pusher.server.serve`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from aiohttp import WSMsgType

from . import protocol
from .config import AppConfig
from .core import Core
from .http_api import HTTPApi
from .state import Connection
from .state import Effects
from .webhooks import WebhookSender

log = logging.getLogger("flask_pusher.server")

#: Bytes queued for one client before it is dropped as too slow.
MAX_WRITE_BUFFER = 4 * 1024 * 1024
#: Largest accepted client frame, in bytes.
MAX_FRAME_SIZE = 256 * 1024
SUPPORTED_PROTOCOLS = (5, 6, 7)
#: When frames were written less than this many seconds ago, the next writes
#: wait COALESCE_DELAY seconds so that back-to-back triggers share system calls.
BUSY_WINDOW = 0.005
COALESCE_DELAY = 0.004


def frame_bytes(text: str) -> bytes:
    """An unmasked, uncompressed WebSocket text frame (RFC 6455) for ``text``."""
    try:
        payload = text.encode()
    except UnicodeEncodeError:  # a lone surrogate, decoded from a JSON \ud800 escape
        payload = json.dumps(json.loads(text), separators=(",", ":")).encode()
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


def _reason(text: str) -> bytes:
    """A close reason: at most 123 bytes (RFC 6455 §5.5), still valid UTF-8."""
    return text.encode()[:123].decode("utf-8", "ignore").encode()


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
        self._sockets: dict[Connection, web.WebSocketResponse] = {}
        self._pending: list[tuple[Sequence[Connection], str]] = []
        self._pending_closes: list[tuple[Connection, int, str]] = []
        self._flush_scheduled = False
        self._last_flush = float("-inf")
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
        """Queue frames and closes for the end of this loop iteration; emit webhooks.

        Frames queued in one iteration are written together: each frame is
        encoded once, and a connection that gets several frames gets them in
        one write (one system call), in order. Closes follow the frames.
        """
        if effects.sends or effects.closes:
            self._pending.extend(effects.sends)
            self._pending_closes.extend(effects.closes)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                loop = asyncio.get_running_loop()
                if loop.time() - self._last_flush < BUSY_WINDOW:
                    # Busy: gather what arrives in the next moment into the same writes.
                    loop.call_later(COALESCE_DELAY, self._flush)
                else:
                    loop.call_soon(self._flush)
        for app, event in effects.webhooks:
            self.webhooks.emit(app, event)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        closes, self._pending_closes = self._pending_closes, []
        # Consecutive frames to the very same audience (one channel's
        # unchanged subscriber tuple) are joined into one write each.
        groups: list[tuple[Sequence[Connection], list[bytes]]] = []
        for conns, text in pending:
            if groups and groups[-1][0] is conns:
                groups[-1][1].append(frame_bytes(text))
            else:
                groups.append((conns, [frame_bytes(text)]))
        if len(groups) == 1:
            conns, parts = groups[0]
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            write = self._write
            for conn in conns:
                write(conn, data)
        elif groups:
            batches: dict[Connection, list[bytes]] = {}
            for conns, parts in groups:
                for conn in conns:
                    queued = batches.get(conn)
                    if queued is None:
                        batches[conn] = list(parts)
                    else:
                        queued.extend(parts)
            for conn, queued in batches.items():
                self._write(conn, queued[0] if len(queued) == 1 else b"".join(queued))
        for conn, code, reason in closes:
            self._spawn(self._close(conn, code, reason))
        self._last_flush = asyncio.get_running_loop().time()

    def _write(self, conn: Connection, data: bytes) -> None:
        transport = conn.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            # A subscriber that does not read must not hold up the others, nor
            # keep its buffer and its subscriptions (a presence member others
            # still see) forever. A close frame would wait behind megabytes that
            # will never be read, so the connection is dropped at once.
            if not conn.closing:
                conn.closing = True
                log.debug("dropping %s: write buffer full", conn.socket_id)
            transport.abort()
            return
        transport.write(data)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close(self, conn: Connection, code: int, reason: str) -> None:
        ws = self._sockets.get(conn)
        if ws is not None:
            log.debug("closing %s with %d: %s", conn.socket_id, code, reason)
            # No drain: a client that stopped reading would make it wait forever
            # (the close reply is still awaited, for up to the socket's timeout).
            await ws.close(code=code, message=_reason(reason), drain=False)

    # -- WebSocket --------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        """``GET /app/{key}``: one Pusher connection (reference §5)."""
        ws = web.WebSocketResponse(
            autoping=True, compress=False, max_msg_size=MAX_FRAME_SIZE, timeout=5.0
        )
        try:
            await ws.prepare(request)
        except ConnectionError:  # the client left during the handshake
            return web.Response(status=400)  # never sent; ws is half-prepared
        key = request.match_info["key"]
        app = self.core.apps_by_key.get(key)
        refusal: tuple[int, str] | None = None
        if app is None:
            refusal = (4001, f"App key {key[:60]} does not exist")
        elif not app.config.enabled:
            refusal = (4003, "Application disabled")
        else:
            version = request.query.get("protocol")
            if version is not None and version not in {str(v) for v in SUPPORTED_PROTOCOLS}:
                refusal = (4007, f"Unsupported protocol version {version[:20]}")
        transport = request.transport
        if refusal is not None or app is None or transport is None:
            code, message = refusal or (4200, "Connection lost")
            log.debug("refused connection to %s: %s", request.path, message)
            try:
                await ws.send_str(protocol.error(message, code))
            except ConnectionError:  # gone already
                return ws
            await ws.close(code=code, message=_reason(message))
            return ws
        conn, greeting = self.core.connect(app, transport)
        self._sockets[conn] = ws
        self._idle.clear()
        try:
            self.apply(greeting)
            del greeting  # not kept alive for the connection's lifetime
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
            self._sockets.pop(conn, None)
            if not self._sockets:
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
            log.warning("%d connections did not close in time", len(self._sockets))
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


async def stop_site(server: Server, runner: web.AppRunner) -> None:
    """Stop listening, then close connections with 4200 and flush webhooks.

    In that order: pusher-js answers 4200 by reconnecting at once, and a
    connection accepted during the shutdown would hold it up.
    """
    for site in list(runner.sites):
        await site.stop()
    await server.shutdown()
    await runner.cleanup()
