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
import functools
import json
import logging
import struct
import time
from collections.abc import AsyncIterator
from collections.abc import Callable
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from . import limits
from . import observers
from . import protocol
from .config import AppConfig
from .config import DEFAULT_METRICS_PREFIX
from .config import DEFAULT_NODE_TIMEOUT
from .config import DEFAULT_REDIS_PREFIX
from .console import Console
from .core import Core
from .events import ProtocolError
from .http_api import add_fallback
from .http_api import add_route
from .http_api import APICall
from .http_api import HTTPApi
from .metrics import IOCounts
from .metrics import Metrics
from .metrics import WebhookFigures
from .state import AppState
from .state import Connection
from .state import Effects
from .state import Send
from .webhooks import WebhookAttempt
from .webhooks import WebhookSender
from .wsocket import hand_off
from .wsocket import PusherSocket

if TYPE_CHECKING:
    from .cluster import Cluster

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
    :param metrics: count and serve ``GET /metrics``. Default ``True``
        (``--no-metrics`` turns it off).
    :param metrics_prefix: the start of every metric name. Default ``"pusher_"``
        (``--metrics-prefix``).
    :param metrics_port: serve ``/metrics`` (and ``/health``, ``/ready``) on
        this port, on the same interface, instead of the main port. Default
        ``None`` (``--metrics-port``).
    :param node: this server process's name, the ``node`` label of the metrics
        and in console events. Default ``None``: ``HOSTNAME:PORT`` (``--node``).
    :param console: serve the debug console at ``GET /console``. Default
        ``False`` (``--console``).
    :param shutdown_delay: seconds between the start of a shutdown and the end
        of listening, while ``/ready`` already answers 503, so that a load
        balancer stops sending clients first. Default 0.0 (``--shutdown-delay``).
    :param redis_url: join the cluster of every server started with this
        Redis URL and ``redis_prefix`` (:mod:`flask_pusher.server.cluster`).
        Default ``None``: serve alone, without importing redis (``--redis``,
        ``PUSHER_SERVER_REDIS_URL``).
    :param redis_prefix: the start of the cluster's Redis keys and channels.
        Default ``"flask-pusher"`` (``--redis-prefix``).
    :param node_timeout: seconds after which the other nodes of a cluster
        take a silent node for dead and remove its connections. Default 30.0
        (``--node-timeout``).
    :raises ValueError: as :class:`~flask_pusher.server.core.Core`, for a
        metrics prefix that cannot start a Prometheus metric name, or for a
        Redis URL redis-py cannot use.
    """

    def __init__(
        self,
        apps: Sequence[AppConfig],
        *,
        webhook_delay: float = 3.0,
        webhook_backoff: float = 1.0,
        webhook_retry_for: float = 300.0,
        tick_interval: float = 1.0,
        metrics: bool = True,
        metrics_prefix: str = DEFAULT_METRICS_PREFIX,
        metrics_port: int | None = None,
        node: str | None = None,
        console: bool = False,
        shutdown_delay: float = 0.0,
        redis_url: str | None = None,
        redis_prefix: str = DEFAULT_REDIS_PREFIX,
        node_timeout: float = DEFAULT_NODE_TIMEOUT,
    ) -> None:
        self.core = Core(apps)
        # In a cluster, Redis holds channel_vacated/member_removed back.
        delay = webhook_delay if redis_url is None else 0.0
        self.webhooks = WebhookSender(delay, webhook_backoff, webhook_retry_for)
        self.cluster: Cluster | None = None
        if redis_url is not None:
            from .cluster import Cluster

            self.cluster = Cluster(
                self.core,
                self.apply,
                self.webhooks,
                redis_url,
                redis_prefix,
                node_timeout,
                webhook_delay,
            )
        self.tick_interval = tick_interval
        self.node = node or ""
        self.metrics: Metrics | None = None
        # The I/O layer's counters by app, or None: nothing is counted.
        self._counts: dict[AppState, IOCounts] | None = None
        if metrics:
            self.metrics = Metrics(
                self.core.apps_by_id, self._webhook_figures, metrics_prefix, self.node
            )
            self._counts = self.metrics.counts
            cluster = self.cluster
            if cluster is not None:
                self.metrics.cluster = lambda: (cluster.up, cluster.events_not_published)
        self.metrics_port = metrics_port
        self.console: Console | None = None
        if console:
            self.console = Console(self.core, self.apply, self._watched, self.node)
            self.webhooks.observer = self._webhook_attempt
        self.shutdown_delay = shutdown_delay
        self._ops_runner: web.AppRunner | None = None  # the --metrics-port listener
        #: Why the server is not ready, or ``None``: see :meth:`ready`.
        self.not_ready: str | None = None
        #: More readiness checks, each returning a reason or ``None``; cluster
        #: mode adds one that its shared store answers.
        self.readiness_checks: list[Callable[[], str | None]] = []
        view = settle = None
        if self.cluster is not None:
            self.readiness_checks.append(self.cluster.not_ready)
            view, settle = self.cluster.reads.view, self.cluster.written
        self.api = HTTPApi(self.core, self.apply, self._api_call, view, settle)
        # The only map from the core's connections to sockets.
        self._sockets: dict[Connection, PusherSocket[Connection]] = {}
        self._pending: list[Send] = []
        self._pending_closes: list[tuple[Connection, int, str]] = []
        self._flush_scheduled = False
        self._last_flush = float("-inf")
        self._idle = asyncio.Event()
        self._idle.set()

    def make_app(self) -> web.Application:
        """The aiohttp application with every route and the lifecycle hooks."""
        app = web.Application()
        app[SERVER] = self
        add_route(app, "GET", "/app/{key}", self.websocket)
        add_route(app, "GET", "/", self.index)
        self.api.add_routes(app)
        if self.metrics_port is None:
            self.add_ops_routes(app)
        if self.console is not None:
            self.console.add_routes(app)
        add_fallback(app)
        app.cleanup_ctx.append(self._lifetime)
        app.on_shutdown.append(self._close_clients)
        return app

    def add_ops_routes(self, app: web.Application) -> None:
        """``/health``, ``/ready`` and, with metrics on, ``/metrics``."""
        add_route(app, "GET", "/health", self.health)
        add_route(app, "GET", "/ready", self.ready)
        if self.metrics is not None:
            add_route(app, "GET", "/metrics", self.scrape)

    def set_node(self, node: str) -> None:
        """Name this server process (metrics' ``node`` label, console events)."""
        self.node = node
        if self.metrics is not None:
            self.metrics.node = node
        if self.console is not None:
            self.console.node = node

    async def index(self, request: web.Request) -> web.Response:
        """``GET /``: what this is."""
        return web.Response(text="Pusher Channels server (flask_pusher.server)\n")

    # -- operations: health, readiness, metrics, console hooks -------------

    async def health(self, request: web.Request) -> web.Response:
        """``GET /health``: 200 while the process serves (a liveness probe)."""
        return web.json_response({"status": "ok", "node": self.node})

    async def ready(self, request: web.Request) -> web.Response:
        """``GET /ready``: 200 ``{"ready": true}`` when accepting connections,
        else 503 ``{"ready": false, "reason": ...}`` (a readiness probe)."""
        reason = self.not_ready
        for check in self.readiness_checks:
            if reason is not None:
                break
            reason = check()
        if reason is not None:
            return web.json_response({"ready": False, "reason": reason}, status=503)
        return web.json_response({"ready": True, "node": self.node})

    async def scrape(self, request: web.Request) -> web.Response:
        """``GET /metrics``: the Prometheus exposition (text or OpenMetrics, as accepted)."""
        assert self.metrics is not None
        body, content_type = self.metrics.render(request.headers.get("Accept"))
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    def _webhook_figures(self, app_id: str) -> WebhookFigures | None:
        return observers.webhook_figures(self.webhooks, app_id)

    def _webhook_attempt(self, attempt: WebhookAttempt) -> None:
        observers.webhook_attempt(self.console, attempt)

    def _api_call(self, call: APICall) -> None:
        """An HTTP API request was answered: count it, show it."""
        observers.api_call(self._counts, self.console, call)

    def _watched(self, watched: bool) -> None:
        """A console started or stopped watching: the core records webhook
        events for every app only meanwhile."""
        for app in self.core.apps_by_id.values():
            app.watched = watched

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
        if effects.webhooks:
            console = self.console
            if console is not None and console.watching:
                console.effects(effects)
            cluster = self.cluster
            for hook in effects.webhooks:
                if cluster is not None:
                    cluster.hook(hook.app, hook.event)
                else:
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
                groups[-1][1].append(frame_bytes(send.event.encode()))
            else:
                groups.append((send.to, [frame_bytes(send.event.encode())]))
        write = self._write
        counts = self._counts
        if len(groups) == 1:
            conns, parts = groups[0]
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            if counts is not None:  # per flush, not per write
                c = counts[conns[0].app]
                c.ws_messages_sent += len(parts) * len(conns)
                c.socket_transmitted_bytes += len(data) * len(conns)
            for conn in conns:
                write(conn, data)
        elif groups:
            batches: dict[Connection, list[bytes]] = {}
            for conns, parts in groups:
                if counts is not None:
                    c = counts[conns[0].app]
                    c.ws_messages_sent += len(parts) * len(conns)
                    c.socket_transmitted_bytes += sum(map(len, parts)) * len(conns)
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
        sock = self._sockets.get(conn)
        if sock is None or sock.closing:
            return  # nothing after a Close frame (RFC 6455 section 5.5.1)
        transport = sock.transport
        if transport.is_closing():
            return
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
        """Close ``conn``: the core forgets it now, the socket closes after the
        client's Close reply (or :data:`~.wsocket.CLOSE_TIMEOUT` seconds)."""
        self.apply(self.core.disconnect(conn))
        sock = self._sockets.get(conn)
        if sock is not None:
            log.debug("closing %s with %d: %s", conn.socket_id, code, reason)
            sock.close(code, _reason(reason).decode())

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
        refusal = refusal or await limits.admit(self.core.backend, app, request)
        console = self.console
        if refusal is not None or app is None or transport is None:
            code, message = refusal or (4200, "Connection lost")
            log.debug("refused connection to %s: %s", request.path, message)
            if console is not None and console.watching:
                app_id = app.config.app_id if app is not None else None
                console.emit("connection_refused", app_id, code=code, reason=message)
            try:
                await ws.send_str(protocol.error(message, code))
                await ws.close(code=code, message=_reason(message))
            except ConnectionError:  # gone already
                pass
            return ws
        greeting = self.core.connect(app)
        conn: Connection = greeting.result
        sock = PusherSocket(transport, self, conn, MAX_FRAME_SIZE)
        self._sockets[conn] = sock
        self._idle.clear()
        counts = self._counts
        if counts is not None:
            counts[app].new_connections += 1
        if console is not None and console.watching:
            console.emit("connection", app.config.app_id, **observers.client(conn, request))
        if transport.is_closing():  # it left while the backend admitted it
            self.on_lost(conn)
        # aiohttp forgets the connection (its request, parser and tasks, about
        # 11 KB of an idle connection's 15): from now on the socket is sock's.
        response = hand_off(request, sock)
        self.apply(greeting)
        return response

    # -- PusherSocket's owner ---------------------------------------------

    def on_text(self, conn: Connection, text: str) -> None:
        """A text message from ``conn``."""
        self._receive(conn, text)

    def on_binary(self, conn: Connection) -> None:
        """A binary message from ``conn``: not part of the Pusher protocol."""
        self.apply(self.core.binary(conn))

    def on_lost(self, conn: Connection) -> None:
        """``conn``'s TCP connection is gone: forget it."""
        sock = self._sockets.pop(conn, None)
        console = self.console
        if console is not None and console.watching and sock is not None:
            console.emit(
                "disconnection",
                conn.app.config.app_id,
                socket_id=conn.socket_id,
                user_id=conn.user_id,
                code=sock.close_code,
                lifetime=round(asyncio.get_running_loop().time() - sock.opened_at, 3),
                channels=sorted(conn.channels),
            )
        self.apply(self.core.disconnect(conn))
        if not self._sockets:
            self._idle.set()
        if self._counts is not None:
            self._counts[conn.app].disconnections += 1

    def _receive(self, conn: Connection, text: str) -> None:
        counts = self._counts
        if counts is not None:
            c = counts[conn.app]
            c.ws_messages_received += 1
            c.socket_received_bytes += (
                len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
            )
        console = self.console
        watching = console is not None and console.watching
        if watching:
            before = set(conn.channels), conn.user_id
        cluster = self.cluster
        queued = cluster.queued if cluster is not None else 0
        try:
            effects = self.core.receive(conn, text)
        except Exception:  # a bug must not take the connection down
            log.exception("error handling a frame from %s", conn.socket_id)
            effects = Effects()
            effects.send(conn, ProtocolError("Internal server error"))
        refusals = None
        if counts is not None or watching:
            refusals = observers.refusals(conn, effects)
            if refusals and counts is not None:
                observers.count_refusals(counts[conn.app], refusals)
        if watching:
            assert console is not None
            observers.show_receive(console, conn, text, before, refusals or [])
        if cluster is not None and cluster.queued != queued and observers.subscribed(effects):
            # The client learns it is subscribed once the cluster knows it
            # (GET /channels/{name} on any node then says occupied).
            cluster.after_written(functools.partial(self.apply, effects))
        else:
            self.apply(effects)

    # -- lifecycle --------------------------------------------------------

    async def _lifetime(self, app: web.Application) -> AsyncIterator[None]:
        """``cleanup_ctx``: tick while serving; at cleanup, after the clients
        are closed, stop ticking and flush webhooks."""
        ticker = asyncio.ensure_future(self._tick_forever())
        yield
        ticker.cancel()
        if self.cluster is not None:
            self.cluster.stop_consuming()
        await self.webhooks.close()
        if self.cluster is not None:
            await self.cluster.close()
        if self._ops_runner is not None:
            await self._ops_runner.cleanup()

    async def _tick_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self.tick_interval)
            if self.metrics is not None:
                # How late the loop woke up: the time callbacks wait for their turn.
                self.metrics.loop_lag = max(0.0, loop.time() - started - self.tick_interval)
            self.apply(self.core.tick())

    async def _close_clients(self, app: web.Application) -> None:
        """``on_shutdown``: close every connection with 4200, wait up to
        :data:`CLOSE_WAIT` seconds for the close replies, then drop the rest."""
        self.not_ready = "shutting down"
        if self.console is not None:
            self.console.close()
        self.apply(self.core.shutdown())
        try:
            await asyncio.wait_for(self._idle.wait(), CLOSE_WAIT)
        except asyncio.TimeoutError:
            log.warning(
                "%d connections did not answer the close in %.1f s; dropped",
                len(self._sockets),
                CLOSE_WAIT,
            )
            for sock in list(self._sockets.values()):
                sock.transport.abort()


#: The :class:`Server` of an aiohttp application made by :meth:`Server.make_app`.
SERVER = web.AppKey("server", Server)


# Re-exported: the sites were here before issue 15 split this module.
from .site import start_site  # noqa: E402
from .site import stop_site  # noqa: E402

__all__ = ["SERVER", "Server", "frame_bytes", "start_site", "stop_site"]
