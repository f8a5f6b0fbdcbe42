"""aiohttp wiring: one port for WebSocket ``/app/{key}`` and the HTTP API.

:class:`Server` is the composition root: it makes the core, the backend, the
webhook sender, the metrics and the console, and joins them to the parts that
each do one job: :class:`~flask_pusher.server.handshake.Handshake` (the
WebSocket handshake and hand-off, the sockets' owner),
:class:`~flask_pusher.server.writer.Writer` (the write path, coalescing and
back-pressure; its ``write`` is the only path to a socket),
:class:`~flask_pusher.server.http_api.HTTPApi` and
:class:`~flask_pusher.server.ops.Ops` (``/health``, ``/ready``, ``/metrics``).
Start-up and shutdown are aiohttp's: :func:`start_site` sets up a
``web.AppRunner``, whose ``on_shutdown`` signal closes clients with 4200 and
whose ``cleanup_ctx`` stops the heartbeat task and flushes webhooks, in that
order, after the sites stop listening. Running it in a thread or in the
foreground is in :mod:`flask_pusher.server.serve`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..server_options import ServerOptions
from . import logsafe
from . import observers
from .access import TrustedProxies
from .config import AppConfig
from .console import Console
from .core import Core
from .handshake import Handshake
from .http_api import add_fallback
from .http_api import add_route
from .http_api import APICall
from .http_api import HTTPApi
from .metrics import IOCounts
from .metrics import Metrics
from .metrics import WebhookFigures
from .ops import Ops
from .state import AppState
from .state import Connection
from .timeouts import RequestWatchdog
from .timeouts import WATCHDOG
from .webhooks import WebhookAttempt
from .webhooks import WebhookSender
from .writer import Writer
from .wsocket import PusherSocket

if TYPE_CHECKING:
    from .cluster import Cluster

log = logging.getLogger("flask_pusher.server")

#: Seconds shutdown waits for clients to answer the 4200 close before dropping
#: them; with the webhook flush (at most 1.5 s) shutdown takes at most 2 s.
CLOSE_WAIT = 0.5
#: At most one line per this many seconds about malformed requests.
CLIENT_ERROR_LOG_INTERVAL = 10.0


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
logsafe.install()  # after _ClientErrorFilter, which rewrites messages


class Server:
    """The server on the current event loop; see :class:`~flask_pusher.server.LocalServer`.

    :param apps: the apps served.
    :param options: the keyword arguments of
        :class:`~flask_pusher.server_options.ServerOptions` (its names,
        defaults, flags and config keys), kept as :attr:`options`.
    :raises TypeError: for an unknown option.
    :raises ValueError: for a trusted proxy that is not an IP address or
        network; as :class:`~flask_pusher.server.core.Core`, for a
        metrics prefix that cannot start a Prometheus metric name, or for a
        Redis URL redis-py cannot use.
    """

    def __init__(self, apps: Sequence[AppConfig], **options: Any) -> None:
        #: The server's options (:class:`~flask_pusher.server_options.ServerOptions`).
        self.options = opts = ServerOptions(**options)
        webhook_delay, redis_url = opts.webhook_delay, opts.redis_url
        self.proxies = TrustedProxies(opts.trusted_proxies)
        self.watchdog = RequestWatchdog()  # slow or silent HTTP peers
        self.core = Core(apps)
        # In a cluster, Redis holds channel_vacated/member_removed back.
        delay = webhook_delay if redis_url is None else 0.0
        self.webhooks = WebhookSender(delay, opts.webhook_backoff, opts.webhook_retry_for)
        self.writer = writer = Writer(self.core, self.webhooks.emit)
        #: Apply the core's effects (:meth:`Writer.apply <.writer.Writer.apply>`).
        self.apply = writer.apply
        self.cluster: Cluster | None = None
        if redis_url is not None:
            from .cluster import Cluster

            self.cluster = Cluster(
                self.core,
                self.apply,
                self.webhooks,
                redis_url,
                opts.redis_prefix,
                opts.node_timeout,
                webhook_delay,
            )
            writer.hook = self.cluster.hook
        self.tick_interval = opts.tick_interval
        self.node = opts.node or ""
        self.metrics: Metrics | None = None
        # The I/O layer's counters by app, or None: nothing is counted.
        self._counts: dict[AppState, IOCounts] | None = None
        if opts.metrics:
            self.metrics = Metrics(
                self.core.apps_by_id, self._webhook_figures, opts.metrics_prefix, self.node
            )
            self._counts = writer.counts = self.metrics.counts
            cluster = self.cluster
            if cluster is not None:
                self.metrics.cluster = lambda: (cluster.up, cluster.events_not_published)
        self.metrics_port = opts.metrics_port
        self.console: Console | None = None
        if opts.console:
            self.console = writer.console = Console(
                self.core,
                self.apply,
                self._watched,
                self.node,
                allow_hosts=opts.console_allow_hosts,
                trusted_proxies=self.proxies,
            )
            self.webhooks.observer = self._webhook_attempt
        self.shutdown_delay = opts.shutdown_delay
        self._ops_runner: web.AppRunner | None = None  # the --metrics-port listener
        self.ops = Ops(self.metrics, self.node)
        view = settle = None
        if self.cluster is not None:
            self.readiness_checks.append(self.cluster.not_ready)
            view, settle = self.cluster.reads.view, self.cluster.written
        self.api = HTTPApi(self.core, self.apply, self._api_call, view, settle)
        self.handshake = Handshake(
            self.core, writer, self._counts, self.console, self.cluster, self.proxies
        )

    @property
    def not_ready(self) -> str | None:
        """Why the server is not ready, or ``None``: see :meth:`Ops.ready <.ops.Ops.ready>`."""
        return self.ops.not_ready

    @not_ready.setter
    def not_ready(self, reason: str | None) -> None:
        self.ops.not_ready = reason

    @property
    def readiness_checks(self) -> list[Callable[[], str | None]]:
        """More readiness checks, each returning a reason or ``None``; cluster
        mode adds one that its shared store answers."""
        return self.ops.readiness_checks

    @property
    def _sockets(self) -> dict[Connection, PusherSocket[Connection]]:
        """The writer's map of connections to sockets (tests and benchmarks read it)."""
        return self.writer.sockets

    def make_app(self) -> web.Application:
        """The aiohttp application with every route and the lifecycle hooks."""
        app = web.Application()
        app[SERVER] = self
        app[WATCHDOG] = self.watchdog  # add_route watches each handler
        add_route(app, "GET", "/app/{key}", self.handshake.websocket)
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
        """``/health``, ``/ready`` and, with metrics on, ``/metrics``
        (:class:`~flask_pusher.server.ops.Ops`)."""
        self.ops.add_routes(app)

    def set_node(self, node: str) -> None:
        """Name this server process (metrics' ``node`` label, console events)."""
        self.node = self.ops.node = node
        if self.metrics is not None:
            self.metrics.node = node
        if self.console is not None:
            self.console.node = node

    async def index(self, request: web.Request) -> web.Response:
        """``GET /``: what this is."""
        return web.Response(text="Pusher Channels server (flask_pusher.server)\n")

    # -- observers ----------------------------------------------------------

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
            self.watchdog.sweep(loop.time())

    async def _close_clients(self, app: web.Application) -> None:
        """``on_shutdown``: close every connection with 4200, wait up to
        :data:`CLOSE_WAIT` seconds for the close replies, then drop the rest."""
        self.not_ready = "shutting down"
        if self.console is not None:
            self.console.close()
        self.apply(self.core.shutdown())
        sockets = self.writer.sockets
        try:
            await asyncio.wait_for(self.writer.idle.wait(), CLOSE_WAIT)
        except asyncio.TimeoutError:
            log.warning(
                "%d connections did not answer the close in %.1f s; dropped",
                len(sockets),
                CLOSE_WAIT,
            )
            for sock in list(sockets.values()):
                sock.transport.abort()


#: The :class:`Server` of an aiohttp application made by :meth:`Server.make_app`.
SERVER = web.AppKey("server", Server)


# Re-exported: these were here before issue 15 split this module.
from .site import start_site  # noqa: E402
from .site import stop_site  # noqa: E402
from .writer import frame_bytes  # noqa: E402

__all__ = ["SERVER", "Server", "frame_bytes", "start_site", "stop_site"]
