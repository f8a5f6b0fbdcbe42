"""The in-process local server behind ``PUSHER_LOCAL_SERVER`` (development).

With ``PUSHER_LOCAL_SERVER = True`` the app's client and template options point at
``127.0.0.1:PUSHER_LOCAL_SERVER_PORT``, and this module starts a
:class:`flask_pusher.server.LocalServer` there in a background thread, once per
process and port: at the app's first request (so the reloader's watcher process,
which serves none, starts nothing) or at the first use of the client outside a
request (``flask shell``, CLI commands). Its webhooks go back to the app's own
webhook route (:func:`webhook_url`): at ``SERVER_NAME`` when the app has one,
else at the address the first request arrived on, never at the ``Host`` a
client sent. Its debug console is on,
at :func:`console_url`, printed to stderr when the server starts.

Nothing here imports the server (or aiohttp) until a server is started.
"""

from __future__ import annotations

import atexit
import ipaddress
import logging
import sys
import threading
from typing import Any
from typing import TYPE_CHECKING

import pusher
import pusher.errors
from flask import current_app
from flask import request
from flask import url_for

from .server_options import ServerOptions
from .server_options import specs
from .settings import PusherSettings

if TYPE_CHECKING:
    from .server import LocalServer

log = logging.getLogger("flask_pusher")
_lock = threading.Lock()
_servers: dict[int, LocalServer] = {}
#: Ports where another process's server (a sibling pre-fork worker, say) serves the app.
_shared: set[int] = set()


def running(port: int) -> LocalServer | None:
    """The in-process server on ``port``, if this process started one."""
    return _servers.get(port)


def console_url(settings: PusherSettings) -> str | None:
    """The debug console of the in-process server, or ``None`` when
    ``PUSHER_LOCAL_SERVER`` is off."""
    if not settings.local_server:
        return None
    return f"http://127.0.0.1:{settings.local_server_port}/console"


def server_settings(settings: PusherSettings) -> dict[str, Any]:
    """The app's ``PUSHER_SERVER_*`` settings as keyword arguments of the
    server: each option of :class:`~flask_pusher.server_options.ServerOptions`
    with a config key, from the setting ``server_<option>``."""
    return {
        spec.name: getattr(settings, f"server_{spec.name}")
        for spec in specs(ServerOptions)
        if spec.config_key is not None
    }


def ensure_started(settings: PusherSettings, webhook_url: str | None = None) -> LocalServer | None:
    """Start the in-process server for ``settings`` unless it runs already.

    When the port is taken by a server that answers the app's signed HTTP API
    requests (the one a sibling worker of ``gunicorn -w 4`` started, or the one
    of the running app when ``flask pusher trigger`` runs), that server is
    used: the workers of a pre-fork server share one local server.

    :param settings: the app's settings; serves its app id, key and secret.
    :param webhook_url: where the server sends webhooks, or ``None``.
    :returns: the server this process started, or ``None`` when another
        process's server is used.
    :raises RuntimeError: the ``server`` extra is not installed, or the port is
        taken by something that does not serve this app.
    """
    port = settings.local_server_port
    server = _servers.get(port)
    if server is not None or port in _shared:
        return server
    with _lock:
        server = _servers.get(port)
        if server is not None or port in _shared:
            return server
        try:
            from .server import AppConfig
            from .server import LocalServer
            from .server import WebhookConfig
        except ImportError as e:
            raise RuntimeError(
                "PUSHER_LOCAL_SERVER needs the server extra:"
                f' pip install "flask-pusher[server]" ({e}).'
            ) from None
        webhooks = (WebhookConfig(webhook_url),) if webhook_url else ()
        app = AppConfig(
            settings.app_id,
            settings.key,
            settings.secret,
            webhooks=webhooks,
            **settings.server_app_limits,
        )
        try:
            server = LocalServer(
                [app],
                host="127.0.0.1",
                port=port,
                console=True,
                **server_settings(settings),
            ).start()
        except OSError as e:
            if _serves_app(settings):
                _shared.add(port)
                log.info("Using the local Pusher server already on 127.0.0.1:%d", port)
                return None
            raise RuntimeError(
                f"The local Pusher server cannot listen on 127.0.0.1:{port} ({e}), and what"
                " listens there does not serve this app. Stop it or set"
                " PUSHER_LOCAL_SERVER_PORT."
            ) from None
        atexit.register(server.stop)
        _servers[port] = server
        log.info("Started the local Pusher server at %s for app %s", server.url, settings.app_id)
        print(f" * Pusher debug console: {server.console_url}", file=sys.stderr)
        return server


def _serves_app(settings: PusherSettings) -> bool:
    """Whether the server on the local port answers this app's signed requests."""
    client = pusher.Pusher(
        settings.app_id,
        settings.key,
        settings.secret,
        host="127.0.0.1",
        port=settings.local_server_port,
        ssl=False,
        timeout=2,
    )
    try:
        client.channels_info()
    except (pusher.errors.PusherError, OSError):  # requests errors are OSErrors
        return False
    return True


def webhook_url() -> str:
    """The URL of the app's webhook route, from nothing a client sends.

    ``PREFERRED_URL_SCHEME://SERVER_NAME`` when the app's ``SERVER_NAME`` is
    set; else the scheme and the local address of the socket the current
    request arrived on (werkzeug's ``werkzeug.socket``; else the WSGI
    ``SERVER_NAME`` and ``SERVER_PORT``, the address the server listens on),
    with ``127.0.0.1`` for an unspecified address (``0.0.0.0``). The request's
    ``Host`` header is never used: any client could send webhooks, with the
    app's secret, wherever it liked (the first request used to decide).
    """
    path = url_for("pusher.webhooks")
    config = current_app.config
    if config.get("SERVER_NAME"):
        return f"{config.get('PREFERRED_URL_SCHEME') or 'http'}://{config['SERVER_NAME']}{path}"
    environ = request.environ
    sock = environ.get("werkzeug.socket")
    address = sock.getsockname() if sock is not None else None
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = str(address[0]), int(address[1])
    else:
        host, port = str(environ.get("SERVER_NAME", "")), int(environ.get("SERVER_PORT") or 80)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None and ip.is_unspecified:
        host = "127.0.0.1" if ip.version == 4 else "::1"
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"{environ.get('wsgi.url_scheme', 'http')}://{host}:{port}{path}"


def start_before_first_request() -> None:
    """A ``before_request`` function: start the server, with webhooks to this app."""
    settings: PusherSettings = current_app.extensions["pusher"].settings
    if settings.local_server_port in _servers or settings.local_server_port in _shared:
        return
    ensure_started(settings, webhook_url())


def stop_all() -> None:
    """Stop every in-process server (for tests)."""
    with _lock:
        servers = list(_servers.values())
        _servers.clear()
        _shared.clear()
    for server in servers:
        server.stop()
        atexit.unregister(server.stop)
