"""Running the server: :class:`LocalServer` in a thread, :func:`run` in front
(with ``workers`` > 1, :mod:`flask_pusher.server.workers` supervises)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
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

from ..server_options import DEFAULT_HOST
from ..server_options import DEFAULT_PORT
from ..server_options import ServerOptions
from . import eventloop
from .app import Server
from .app import start_site
from .app import stop_site
from .config import AppConfig
from .config import check_workers
from .eventloop import loop_factory
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
    :param options: the keyword arguments of
        :class:`~flask_pusher.server_options.ServerOptions`: ``webhook_delay``,
        ``webhook_backoff``, ``webhook_retry_for``, ``tick_interval``,
        ``metrics``, ``metrics_prefix``, ``metrics_port``, ``node``,
        ``console``, ``shutdown_delay``, ``redis_url``, ``redis_prefix``,
        ``node_timeout`` (each with its default and its flag there).
    :raises TypeError: for an unknown option.
    :raises ValueError: if no app is given or IDs or keys repeat, or for a bad
        metrics prefix.
    """

    def __init__(
        self,
        apps: Sequence[AppConfig],
        host: str = DEFAULT_HOST,
        port: int = 0,
        **options: Any,
    ) -> None:
        self.apps = tuple(apps)
        self.host = host
        self.port = port
        #: The server's options (:class:`~flask_pusher.server_options.ServerOptions`).
        self.options = ServerOptions(**options)
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
        return f"{self.url}/console" if self.options.console else None

    @property
    def server(self) -> Server | None:
        """The running :class:`~flask_pusher.server.app.Server` (its loop is
        another thread's: read, do not change), or ``None`` when stopped."""
        return self._server

    def start(self, timeout: float = 30.0) -> LocalServer:
        """Start listening; return once the port is bound.

        :param timeout: seconds to wait for the server to listen.
        :raises RuntimeError: if already started, or for ``loop="uvloop"``
            without uvloop installed.
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
        try:
            loop = loop_factory(self.options.loop)()
        except BaseException as exc:
            ready.set_exception(exc)
            return
        self._loop = loop
        try:
            self._server = Server(self.apps, **dataclasses.asdict(self.options))
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
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    debug: bool = False,
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
    :param workers: server processes to run (``--workers``). Default 1: this
        process serves. More need ``redis_url`` and a fixed port.
    :param options: the keyword arguments of
        :class:`~flask_pusher.server_options.ServerOptions` (``webhook_delay``,
        ``metrics``, ``metrics_prefix``, ``metrics_port``, ``node``,
        ``console``, ``shutdown_delay``, ``redis_url``, ``redis_prefix``,
        ``node_timeout``, ...: the command line's ``--no-metrics``,
        ``--metrics-prefix``, ``--metrics-port``, ``--node``, ``--console``,
        ``--shutdown-delay``, ``--redis``, ``--redis-prefix``,
        ``--node-timeout``).
    :raises TypeError: for an unknown option.
    :raises OSError: if the address cannot be bound.
    :raises ValueError: for a bad metrics prefix, or ``workers`` > 1 without
        ``redis_url``, on port 0, or where the platform lacks ``SO_REUSEPORT``.
    :raises RuntimeError: for ``loop="uvloop"`` (``--loop uvloop``) without
        uvloop installed.
    :raises WorkerError: if a worker does not start, or ``workers`` > 1 is
        asked for off the main thread (signals are handled there only).
    """
    options = dataclasses.asdict(ServerOptions(**options))
    check_workers(workers, port, options.get("redis_url"))
    loop_factory(options["loop"])  # uvloop asked for and missing: say so before starting
    _configure_logging(debug)
    if workers > 1:
        Supervisor(apps, host, port, debug, options, workers).run()
    else:
        eventloop.run(_serve(apps, host, port, options), options["loop"])


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
