"""aiohttp wiring: one port for WebSocket ``/app/{key}`` and the HTTP API.

:class:`Server` owns the sockets: it reads frames, asks the core, and writes
what the core returns, each broadcast frame encoded once. Every write goes
through :meth:`Server._write`, which sends nothing to a WebSocket whose close
has begun (RFC 6455 section 5.5.1: no data frame after a Close frame). Start-up
and shutdown are aiohttp's: :func:`start_site` sets up a ``web.AppRunner``,
whose ``on_shutdown`` signal closes clients with 4200 and whose
``cleanup_ctx`` stops the heartbeat task and flushes webhooks, in that order,
after the sites stop listening. Running it in a thread or in the foreground is
in :mod:`flask_pusher.server.serve`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
from collections.abc import AsyncIterator
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from aiohttp import WSMsgType
from aiohttp.http_exceptions import HttpProcessingError

from . import protocol
from .config import AppConfig
from .core import Core
from .http_api import HTTPApi
from .state import Connection
from .state import Effects
from .state import Send
from .webhooks import WebhookSender

log = logging.getLogger("flask_pusher.server")

#: Bytes queued for one client before it is dropped as too slow.
MAX_WRITE_BUFFER = 4 * 1024 * 1024
#: Largest accepted client frame, in bytes.
MAX_FRAME_SIZE = 256 * 1024
SUPPORTED_PROTOCOLS = frozenset({"5", "6", "7"})
#: When frames were written less than this many seconds ago, the next writes
#: wait COALESCE_DELAY seconds so that back-to-back triggers share system calls.
BUSY_WINDOW = 0.005
COALESCE_DELAY = 0.004
#: Seconds shutdown waits for clients to answer the 4200 close before dropping
#: them; with the webhook flush (at most 1.5 s) shutdown takes at most 2 s.
CLOSE_WAIT = 0.5
#: At most one line per this many seconds about malformed requests.
CLIENT_ERROR_LOG_INTERVAL = 10.0


def frame_bytes(text: str) -> bytes:
    """An unmasked, uncompressed WebSocket text frame (RFC 6455 section 5.2) for ``text``."""
    try:
        payload = text.encode()
    except UnicodeEncodeError:  # a lone surrogate, decoded from a JSON \\ud800 escape
        payload = json.dumps(json.loads(text), separators=(",", ":")).encode()
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


def _reason(text: str) -> bytes:
    """A close reason: at most 123 bytes (RFC 6455 section 5.5), still valid UTF-8."""
    return text.encode()[:123].decode("utf-8", "ignore").encode()


class _ClientErrorFilter(logging.Filter):
    """Turns aiohttp's "Error handling request" tracebacks for malformed
    requests (a bad request line, a header over 8 KB, too many headers, a
    body that does not decode, a reset connection) into one DEBUG line
    without a traceback, at most one per :data:`CLIENT_ERROR_LOG_INTERVAL`
    seconds: anyone can send those, and a
    traceback each would let them flood the log. Real server errors keep
    their traceback."""

    def __init__(self) -> None:
        super().__init__()
        self._last = float("-inf")
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        client_error = isinstance(exc, HttpProcessingError) and (exc.code or 400) < 500
        # A body that failed to decode fails again when aiohttp reads the rest.
        if not (client_error or isinstance(exc, (web.RequestPayloadError, ConnectionError))):
            return True
        if not http_log.isEnabledFor(logging.DEBUG):
            return False
        now = time.monotonic()
        if now - self._last < CLIENT_ERROR_LOG_INTERVAL:
            self._suppressed += 1
            return False
        self._last = now
        record.msg = "Malformed or broken HTTP request from %s: %s (%d more not logged)"
        args = record.args if isinstance(record.args, tuple) else ()
        record.args = (args[0] if args else "?", str(exc)[:200], self._suppressed)
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        self._suppressed = 0
        return True


#: The logger aiohttp's request handlers report to (instead of ``aiohttp.server``).
http_log = logging.getLogger("flask_pusher.server.http")
http_log.addFilter(_ClientErrorFilter())


class Server:
    """The server on the current event loop; see :class:`~flask_pusher.server.LocalServer`.

    :param apps: the apps served.
    :param webhook_delay: seconds ``channel_vacated``/``member_removed``
        webhooks are held back. Default 3.0.
    :param webhook_backoff: seconds before the first webhook retry. Default 1.0.
    :param webhook_retry_for: seconds a failing webhook is retried. Default 300.0.
    :param tick_interval: seconds between heartbeat checks. Default 1.0.
    :raises ValueError: as :class:`~flask_pusher.server.core.Core`.
    """

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
        # The only map from the core's connections to sockets.
        self._sockets: dict[Connection, tuple[web.WebSocketResponse, asyncio.Transport]] = {}
        self._pending: list[Send] = []
        self._pending_closes: list[tuple[Connection, int, str]] = []
        self._flush_scheduled = False
        self._last_flush = float("-inf")
        self._idle = asyncio.Event()
        self._idle.set()

    def make_app(self) -> web.Application:
        """The aiohttp application with every route and the lifecycle hooks."""
        app = web.Application()
        app.router.add_get("/app/{key}", self.websocket)
        app.router.add_get("/", self.index)
        self.api.add_routes(app)
        app.cleanup_ctx.append(self._lifetime)
        app.on_shutdown.append(self._close_clients)
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
            self._pending_closes.extend((c.conn, c.code, c.reason) for c in effects.closes)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                loop = asyncio.get_running_loop()
                if loop.time() - self._last_flush < BUSY_WINDOW:
                    # Busy: gather what arrives in the next moment into the same writes.
                    loop.call_later(COALESCE_DELAY, self._flush)
                else:
                    loop.call_soon(self._flush)
        for hook in effects.webhooks:
            self.webhooks.emit(hook.app, hook.event)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        closes, self._pending_closes = self._pending_closes, []
        # Consecutive frames to the very same audience (one channel's
        # unchanged subscriber tuple) are joined into one write each.
        groups: list[tuple[Sequence[Connection], list[bytes]]] = []
        for send in pending:
            if groups and groups[-1][0] is send.to:
                groups[-1][1].append(frame_bytes(send.frame))
            else:
                groups.append((send.to, [frame_bytes(send.frame)]))
        write = self._write
        if len(groups) == 1:
            conns, parts = groups[0]
            data = parts[0] if len(parts) == 1 else b"".join(parts)
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
                write(conn, queued[0] if len(queued) == 1 else b"".join(queued))
        for conn, code, reason in closes:
            self._begin_close(conn, code, reason)
        self._last_flush = asyncio.get_running_loop().time()

    def _write(self, conn: Connection, data: bytes) -> None:
        """Write pre-encoded frames to ``conn`` unless its close has begun."""
        entry = self._sockets.get(conn)
        if entry is None:
            return
        ws, transport = entry
        if ws.closed or transport.is_closing():
            return  # nothing after a Close frame (RFC 6455 section 5.5.1)
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            # A subscriber that does not read must not hold up the others, nor
            # keep its buffer and its subscriptions (a presence member others
            # still see) forever. A close frame would wait behind megabytes that
            # will never be read, so the connection is dropped at once.
            log.debug("dropping %s: write buffer full", conn.socket_id)
            transport.abort()
            self.apply(self.core.disconnect(conn))
            return
        transport.write(data)

    def _begin_close(self, conn: Connection, code: int, reason: str) -> None:
        """Close ``conn``: the core forgets it now, the socket closes after."""
        self.apply(self.core.disconnect(conn))
        entry = self._sockets.get(conn)
        if entry is not None:
            log.debug("closing %s with %d: %s", conn.socket_id, code, reason)
            self._spawn(self._close(entry[0], code, reason))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _close(ws: web.WebSocketResponse, code: int, reason: str) -> None:
        # No drain: a client that stopped reading would make it wait forever
        # (the close reply is still awaited, for up to the socket's timeout).
        await ws.close(code=code, message=_reason(reason), drain=False)

    # -- WebSocket --------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        """``GET /app/{key}``: one Pusher connection
        (https://pusher.com/docs/channels/library_auth_reference/pusher-websockets-protocol/)."""
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
            if version is not None and version not in SUPPORTED_PROTOCOLS:
                refusal = (4007, f"Unsupported protocol version {version[:20]}")
        transport = request.transport
        if refusal is not None or app is None or transport is None:
            code, message = refusal or (4200, "Connection lost")
            log.debug("refused connection to %s: %s", request.path, message)
            try:
                await ws.send_str(protocol.error(message, code))
                await ws.close(code=code, message=_reason(message))
            except ConnectionError:  # gone already
                pass
            return ws
        del request  # not kept alive for the connection's lifetime
        greeting = self.core.connect(app)
        conn: Connection = greeting.result
        self._sockets[conn] = (ws, transport)
        self._idle.clear()
        try:
            self.apply(greeting)
            del greeting
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._receive(conn, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self.apply(self.core.binary(conn))
        except ConnectionError:
            # aiohttp's automatic pong to a client that reset the connection.
            log.debug("connection %s lost", conn.socket_id)
        finally:
            self.apply(self.core.disconnect(conn))
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

    async def _lifetime(self, app: web.Application) -> AsyncIterator[None]:
        """``cleanup_ctx``: tick while serving; at cleanup, after the clients
        are closed, stop ticking and flush webhooks."""
        ticker = asyncio.ensure_future(self._tick_forever())
        yield
        ticker.cancel()
        await self.webhooks.close()
        for task in list(self._tasks):
            task.cancel()

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            self.apply(self.core.tick())

    async def _close_clients(self, app: web.Application) -> None:
        """``on_shutdown``: close every connection with 4200, wait up to
        :data:`CLOSE_WAIT` seconds for the close replies, then drop the rest."""
        self.apply(self.core.shutdown())
        try:
            await asyncio.wait_for(self._idle.wait(), CLOSE_WAIT)
        except asyncio.TimeoutError:
            log.warning(
                "%d connections did not answer the close in %.1f s; dropped",
                len(self._sockets),
                CLOSE_WAIT,
            )
            for _ws, transport in list(self._sockets.values()):
                transport.abort()


async def start_site(server: Server, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Listen on ``host:port`` (0 picks a free port); return the runner and port."""
    runner = web.AppRunner(
        server.make_app(),
        handle_signals=False,
        access_log=None,
        logger=http_log,
        shutdown_timeout=1.0,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    try:
        await site.start()
    except BaseException:  # the address is taken: stop what setup() started
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])


async def stop_site(runner: web.AppRunner) -> None:
    """Stop listening, close connections with 4200, then flush webhooks.

    In that order (aiohttp's ``AppRunner.cleanup``: sites, ``on_shutdown``,
    ``cleanup_ctx``): pusher-js answers 4200 by reconnecting at once, and a
    connection accepted during the shutdown would hold it up.
    """
    await runner.cleanup()
