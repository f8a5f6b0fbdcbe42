"""Listening: :func:`start_site` and :func:`stop_site` around aiohttp's ``AppRunner``.

Start-up and shutdown are aiohttp's (https://docs.aiohttp.org/en/stable/web_advanced.html#graceful-shutdown):
``stop_site`` marks the server not ready, then the runner's cleanup stops the
sites, runs ``on_shutdown`` (clients closed with 4200) and ``cleanup_ctx``
(heartbeat stopped, webhooks flushed), in that order.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING

from aiohttp import web

from . import logsafe
from .console import is_loopback
from .frontdoor import FrontDoorSite
from .http_api import add_fallback
from .timeouts import WATCHDOG

if TYPE_CHECKING:
    from .app import Server


async def start_site(
    server: Server, host: str, port: int, *, reuse_port: bool = False
) -> tuple[web.AppRunner, int]:
    """Listen on ``host:port`` (0 picks a free port); return the runner and port.

    With ``metrics_port``, ``/metrics``, ``/health`` and ``/ready`` listen there
    instead (on ``host``), until the main runner's cleanup has flushed webhooks.
    ``reuse_port=True`` sets ``SO_REUSEPORT`` on both listening sockets, so that
    the processes of ``--workers`` share them (the kernel spreads connections).
    """
    if server.console is not None:
        server.console.login_required = not is_loopback(host)
    logsafe.hide_aiohttp_version()
    runner = web.AppRunner(
        server.make_app(),
        handle_signals=False,
        access_log=None,
        logger=_http_log(),
        shutdown_timeout=1.0,
        # SO_KEEPALIVE's first probe comes after 2 hours: the heartbeat
        # (activity_timeout) and the request watchdog find dead peers long
        # before, and the option costs a socket object and a system call per
        # connection (a storm's accept path).
        tcp_keepalive=False,
    )
    await runner.setup()
    server.watchdog.watch(runner.server)
    site = FrontDoorSite(
        runner,
        host,
        port,
        server.handshake,
        server.watchdog,
        backlog=4096,
        reuse_port=reuse_port,
    )
    try:
        await site.start()
    except BaseException:  # the address is taken: stop what setup() started
        await runner.cleanup()
        raise
    bound = int(runner.addresses[0][1])
    if not server.node:
        server.set_node(f"{socket.gethostname()}:{bound}")
    if server.cluster is not None:
        await server.cluster.start(server.node)
    if server.metrics_port is not None:
        try:
            server._ops_runner = await _start_ops_site(
                server, host, server.metrics_port, reuse_port
            )
        except BaseException:
            await runner.cleanup()
            raise
    return runner, bound


async def _start_ops_site(server: Server, host: str, port: int, reuse_port: bool) -> web.AppRunner:
    app = web.Application()
    app[WATCHDOG] = server.watchdog
    server.add_ops_routes(app)
    add_fallback(app)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, logger=_http_log())
    await runner.setup()
    server.watchdog.watch(runner.server)
    await web.TCPSite(runner, host, port, reuse_port=reuse_port).start()
    return runner


async def stop_site(runner: web.AppRunner) -> None:
    """Answer 503 on ``/ready`` (for ``shutdown_delay`` seconds), stop
    listening, close connections with 4200, then flush webhooks.

    In that order (aiohttp's ``AppRunner.cleanup``: sites, ``on_shutdown``,
    ``cleanup_ctx``): pusher-js answers 4200 by reconnecting at once, and a
    connection accepted during the shutdown would hold it up.
    """
    from .app import SERVER

    server = runner.app[SERVER]
    server.not_ready = "shutting down"
    if server.shutdown_delay > 0:
        await asyncio.sleep(server.shutdown_delay)
    await runner.cleanup()


def _http_log() -> logging.Logger:
    from .app import http_log  # its filter is installed when app is imported

    return http_log
