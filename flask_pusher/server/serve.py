"""Running the server: :class:`LocalServer` in a thread, :func:`run` in front
(with ``workers`` > 1, :mod:`flask_pusher.server.workers` supervises)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import signal
import sys
import threading
from collections.abc import Callable
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from aiohttp import web

from .app import Server
from .app import start_site
from .app import stop_site
from .config import AppConfig
from .config import check_workers
from .config import DEFAULT_METRICS_PREFIX
from .config import DEFAULT_NODE_TIMEOUT
from .config import DEFAULT_REDIS_PREFIX
from .workers import Supervisor
from .workers import WorkerError

__all__ = ["LocalServer", "WorkerError", "describe", "run"]

log = logging.getLogger("flask_pusher.server")


class LocalServer:
    """A Pusher Channels server in a background thread with its own event loop.

    ::

        with LocalServer([AppConfig("1", "key", "secret")]) as server:
            client = pusher.Pusher("1", "key", "secret", host=server.host,
                                   port=server.port, ssl=False)

    :param apps: the apps to serve (at least one; IDs and keys unique).
    :param host: the interface to listen on. Default ``"127.0.0.1"``.
    :param port: the TCP port; 0 (the default) picks a free port, read it back
        from :attr:`port` after :meth:`start`.
    :param webhook_delay: seconds ``channel_vacated`` and ``member_removed``
        webhooks are held back. Default 3.0; tests use less.
    :param webhook_backoff: seconds before the first webhook retry, doubled
        after each failure. Default 1.0.
    :param webhook_retry_for: seconds after which a failing webhook is
        dropped. Default 300.0.
    :param tick_interval: seconds between heartbeat checks (pings, 4201
        closes) and throttled subscription counts. Default 1.0.
    :param metrics: count and serve Prometheus metrics at ``/metrics``. Default ``True``.
    :param metrics_prefix: the start of every metric name. Default ``"pusher_"``.
    :param metrics_port: serve ``/metrics``, ``/health`` and ``/ready`` on this
        port instead of ``port``. Default ``None``.
    :param node: the name of this server process in metrics (``node`` label)
        and console events. Default ``None``: ``HOSTNAME:PORT``.
    :param console: serve the debug console at ``/console``. Default ``False``.
    :param shutdown_delay: seconds :meth:`stop` keeps listening while
        ``/ready`` answers 503. Default 0.0.
    :param redis_url: join the cluster of every server with this Redis URL
        and ``redis_prefix`` (``redis://HOST:PORT/DB``, ``rediss://`` or
        ``unix://``; needs the ``redis`` extra). Default ``None``: no cluster,
        nothing of Redis imported. Config key ``PUSHER_SERVER_REDIS_URL``.
    :param redis_prefix: the start of the cluster's Redis keys and pub/sub
        channels. Default ``"flask-pusher"`` (``PUSHER_SERVER_REDIS_PREFIX``).
    :param node_timeout: seconds before the other nodes of the cluster treat
        this one as dead once it falls silent. Default 30.0.
    :param console_allow_hosts: ``Host`` names the console takes as this
        machine, besides ``127.0.0.1``, ``[::1]`` and ``localhost``. Default
        none (``--console-allow-host``, ``PUSHER_SERVER_CONSOLE_ALLOW_HOSTS``).
    :param trusted_proxies: IP addresses or networks of proxies whose
        ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed. Default
        none (``--trusted-proxy``).
    :raises ValueError: if no app is given or IDs or keys repeat, or for a bad
        metrics prefix.
    """

    def __init__(
        self,
        apps: Sequence[AppConfig],
        host: str = "127.0.0.1",
        port: int = 0,
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
        console_allow_hosts: Sequence[str] = (),
        trusted_proxies: Sequence[str] = (),
    ) -> None:
        self.apps = tuple(apps)
        self.host = host
        self.port = port
        self._options: dict[str, Any] = {
            "webhook_delay": webhook_delay,
            "webhook_backoff": webhook_backoff,
            "webhook_retry_for": webhook_retry_for,
            "tick_interval": tick_interval,
            "metrics": metrics,
            "metrics_prefix": metrics_prefix,
            "metrics_port": metrics_port,
            "node": node,
            "console": console,
            "shutdown_delay": shutdown_delay,
            "redis_url": redis_url,
            "redis_prefix": redis_prefix,
            "node_timeout": node_timeout,
            "console_allow_hosts": tuple(console_allow_hosts),
            "trusted_proxies": tuple(trusted_proxies),
        }
        if not self.apps:
            raise ValueError("LocalServer needs at least one AppConfig.")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Server | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """``http://HOST:PORT``, the HTTP API base URL."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """``ws://HOST:PORT``, the WebSocket base URL (clients add ``/app/KEY``)."""
        return f"ws://{self.host}:{self.port}"

    @property
    def console_url(self) -> str | None:
        """``http://HOST:PORT/console``, or ``None`` without the console."""
        return f"{self.url}/console" if self._options["console"] else None

    @property
    def server(self) -> Server | None:
        """The running :class:`~flask_pusher.server.app.Server` (its loop is
        another thread's: read, do not change), or ``None`` when stopped."""
        return self._server

    def start(self, timeout: float = 30.0) -> LocalServer:
        """Start listening; return once the port is bound.

        :param timeout: seconds to wait for the server to listen.
        :raises RuntimeError: if already started.
        :raises OSError: if the address cannot be bound.
        """
        if self._thread is not None:
            raise RuntimeError("LocalServer is already started; call stop() first.")
        ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run_thread,
            args=(ready,),
            name="flask-pusher-server",
            daemon=True,
        )
        self._thread.start()
        try:
            self.port = ready.result(timeout)
        except BaseException:
            self._thread.join(timeout)
            self._thread = None
            raise
        return self

    def _run_thread(self, ready: concurrent.futures.Future[int]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = Server(self.apps, **self._options)
            self._runner, port = loop.run_until_complete(
                start_site(self._server, self.host, self.port)
            )
        except BaseException as exc:
            ready.set_exception(exc)
            loop.close()
            return
        ready.set_result(port)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Close connections with 4200, flush webhooks, stop the thread.

        Does nothing if the server is not running.

        :param timeout: seconds to wait for the shutdown.
        """
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or self._server is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        try:
            future.result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            self._thread = self._loop = self._server = self._runner = None

    async def _shutdown(self) -> None:
        assert self._runner is not None
        await stop_site(self._runner)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._thread is not None else "stopped"
        return f"<LocalServer {self.url} {state} apps={[a.app_id for a in self.apps]}>"


def describe(host: str, port: int, apps: Sequence[AppConfig]) -> str:
    """The startup line: where the server listens and which apps it serves."""
    served = ", ".join(f"app {a.app_id} (key {a.key})" for a in apps)
    return f"Pusher Channels server listening on http://{host}:{port}, serving {served}"


def run(
    apps: Sequence[AppConfig],
    host: str = "127.0.0.1",
    port: int = 6001,
    *,
    debug: bool = False,
    webhook_delay: float = 3.0,
    workers: int = 1,
    **options: Any,
) -> None:
    """Serve in the foreground until SIGINT or SIGTERM, then shut down cleanly.

    Logs the startup line ("Pusher Channels server listening on
    http://H:P, serving app ID (key KEY)") at INFO on the
    ``flask_pusher.server`` logger, adding a stderr handler if logging is not
    configured; ``debug=True`` also logs one line per connection event. On
    shutdown connections are closed with 4200 and pending webhooks are sent.

    With ``workers`` > 1 this process serves nothing itself: it starts that
    many server processes (``multiprocessing``'s *spawn*) listening on the same
    port with ``SO_REUSEPORT``, so that the kernel spreads connections among
    them, named ``NODE/1`` ... ``NODE/N`` (``NODE`` is ``node``, default
    ``HOSTNAME:PORT``). It logs the startup line once all have started, passes
    SIGINT and SIGTERM on to them as SIGTERM and waits until they have shut
    down, and starts a worker that dies again, after 0.5 s, doubled while it
    keeps dying within 10 s of its start (at most 30 s).

    :param apps: the apps to serve.
    :param host: the interface. Default ``"127.0.0.1"`` (loopback only).
    :param port: the TCP port. Default 6001; 0 picks a free port.
    :param webhook_delay: seconds vacate/member_removed webhooks are held.
    :param workers: server processes to run (``--workers``). Default 1: this
        process serves. More need ``redis_url`` and a fixed port.
    :param options: more keyword arguments of
        :class:`~flask_pusher.server.app.Server`: ``metrics``, ``metrics_prefix``,
        ``metrics_port``, ``node``, ``console``, ``shutdown_delay``,
        ``redis_url``, ``redis_prefix``, ``node_timeout`` (the command line's
        ``--no-metrics``, ``--metrics-prefix``, ``--metrics-port``, ``--node``,
        ``--console``, ``--shutdown-delay``, ``--redis``, ``--redis-prefix``,
        ``--node-timeout``).
    :raises OSError: if the address cannot be bound.
    :raises ValueError: for a bad metrics prefix, or ``workers`` > 1 without
        ``redis_url``, on port 0, or where the platform lacks ``SO_REUSEPORT``.
    :raises WorkerError: if a worker does not start, or ``workers`` > 1 is
        asked for off the main thread (signals are handled there only).
    """
    options = {"webhook_delay": webhook_delay, **options}
    check_workers(workers, port, options.get("redis_url"))
    _configure_logging(debug)
    if workers > 1:
        Supervisor(apps, host, port, debug, options, workers).run()
    else:
        asyncio.run(_serve(apps, host, port, options))


def _configure_logging(debug: bool, tag: str = "") -> None:
    """A stderr handler on the server's logger unless logging is configured;
    ``tag`` (a worker's node name) starts each line after the level."""
    if not log.hasHandlers():
        handler = logging.StreamHandler(sys.stderr)
        tag = f"[{tag}] " if tag else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {tag}%(message)s"))
        log.addHandler(handler)
    if debug:
        log.setLevel(logging.DEBUG)
    elif log.level == logging.NOTSET:
        log.setLevel(logging.INFO)


def _announce(host: str, port: int, apps: Sequence[AppConfig], options: dict[str, Any]) -> None:
    """Log the startup line, and where the console and the metrics are."""
    log.info(describe(host, port, apps))
    if options.get("console"):
        log.info("Debug console at http://%s:%d/console", host, port)
    if options.get("metrics", True):
        where = options.get("metrics_port") or port
        log.info("Prometheus metrics at http://%s:%d/metrics", host, where)


async def _serve(
    apps: Sequence[AppConfig],
    host: str,
    port: int,
    options: dict[str, Any],
    started: Callable[[], None] | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM. A worker passes ``started``: it listens
    with ``SO_REUSEPORT``, calls ``started()`` instead of logging the startup
    line (its parent does), and names itself ``options["node"]``."""
    server = Server(apps, **options)
    runner, bound = await start_site(server, host, port, reuse_port=started is not None)
    # A process of its own: move what exists now (modules, classes) out of the
    # cyclic GC's reach, so full collections only scan connection state.
    gc.collect()
    gc.freeze()
    if started is None:
        _announce(host, bound, apps, options)
    else:
        started()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
                pass
    try:
        await stop.wait()
    finally:
        log.info("Shutting down: closing connections, sending pending webhooks")
        for sig in installed:
            loop.remove_signal_handler(sig)
        await stop_site(runner)


# -- --workers N: a parent that starts and supervises N server processes -------
