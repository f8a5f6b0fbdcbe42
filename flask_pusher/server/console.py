"""The debug console: ``GET /console``, a live page of what the server does.

Off unless asked for (``--console``, ``LocalServer(console=True)``, the
in-process development server). The page (``console.html``, a single file
without dependencies) follows a stream of server-sent events
(https://html.spec.whatwg.org/multipage/server-sent-events.html, sent with
``aiohttp-sse``), reads the state of the apps from ``/console/state`` and sends
events through ``/console/trigger``, which takes the HTTP API's path
(:meth:`Core.trigger <flask_pusher.server.core.Core.trigger>`, then the
server's ``apply``).

Console events are made by the I/O layer from what it already sees (the
operations it calls and the :class:`~flask_pusher.server.state.Effects` they
return), and only while someone watches: :attr:`Console.watching` is the one
check on the hot path. Each watcher has a bounded buffer; a watcher that reads
too slowly loses events, and is told how many.

The console asks for an app's secret (checked with :func:`hmac.compare_digest`,
never shown nor stored in the cookie) unless the request provably comes from
this machine (:func:`~flask_pusher.server.access.is_local`: a loopback peer, a
loopback ``Host`` with the server's port, no proxy header), and then shows only
that app, with a signed cookie that lasts :data:`SESSION_SECONDS`, ``Secure``
when the request came over TLS (through a trusted proxy: its
``X-Forwarded-Proto``). Login attempts are limited per client address and in
all (:data:`LOGIN_ATTEMPTS`, :data:`LOGIN_ATTEMPTS_TOTAL` per
:data:`LOGIN_PERIOD`), answered 429 beyond.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import importlib.resources
import ipaddress
import itertools
import json
import logging
import secrets
import time
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from aiohttp_sse import sse_response

from .. import names
from .access import is_local
from .access import RateLimit
from .access import split_host
from .access import TrustedProxies
from .core import Core
from .errors import APIError
from .http_api import add_route
from .http_api import read_body
from .protocol import loads
from .state import AppState
from .state import Effects
from .timeouts import read_within

log = logging.getLogger("flask_pusher.server")

#: Events buffered for one watcher before newer ones are dropped (and counted).
WATCHER_BUFFER = 1000
#: Bytes of encoded events buffered for one watcher before newer ones are
#: dropped (and counted): a page that stops reading holds at most this much.
WATCHER_BYTES = 2 * 1024 * 1024
#: Seconds a console login lasts.
SESSION_SECONDS = 12 * 3600
#: At most this many connections, channels and members per app in ``/console/state``.
STATE_LIMIT = 1000
COOKIE = "flask_pusher_console"
#: Seconds between checks that an idle watcher's page is still open.
GONE_CHECK = 1.0
#: Login attempts per client address in :data:`LOGIN_PERIOD`; more get 429.
LOGIN_ATTEMPTS = 10
#: Login attempts from all addresses together in :data:`LOGIN_PERIOD`.
LOGIN_ATTEMPTS_TOTAL = 100
#: Seconds over which login attempts are counted.
LOGIN_PERIOD = 60.0

Apply = Callable[[Effects], None]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an interface to listen on) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Watcher:
    """One open console page: a buffer of encoded events bounded in count and bytes.

    :param apps: the app IDs it may see; ``None``: all.
    :param size: events buffered at most. Default :data:`WATCHER_BUFFER`.
    :param max_bytes: characters of encoded events (ASCII JSON, so bytes)
        buffered at most. Default :data:`WATCHER_BYTES`.
    """

    __slots__ = ("apps", "dropped", "max_bytes", "queue", "queued_bytes", "size", "wake")

    def __init__(
        self,
        apps: frozenset[str] | None,
        size: int = WATCHER_BUFFER,
        max_bytes: int = WATCHER_BYTES,
    ) -> None:
        self.apps = apps
        self.size = size
        self.max_bytes = max_bytes
        self.queue: collections.deque[str] = collections.deque()
        self.queued_bytes = 0
        self.dropped = 0
        self.wake = asyncio.Event()

    def push(self, app_id: str | None, text: str) -> None:
        if self.apps is not None and app_id not in self.apps:
            return
        if len(self.queue) >= self.size or self.queued_bytes + len(text) > self.max_bytes:
            self.dropped += 1
        else:
            self.queue.append(text)
            self.queued_bytes += len(text)
        self.wake.set()

    def pop(self) -> str:
        """The oldest buffered event."""
        text = self.queue.popleft()
        self.queued_bytes -= len(text)
        return text


class Console:
    """The console of one server.

    :param core: the server's core (state view, event creator).
    :param apply: the server's function carrying out effects.
    :param on_watch: called with ``True`` when the first watcher arrives and
        ``False`` when the last leaves.
    :param node: the name of this server process, in every event.
    :param buffer: events buffered per watcher. Default :data:`WATCHER_BUFFER`.
    :param allow_hosts: ``Host`` names (lower case, no port) that count as this
        machine besides ``127.0.0.1``, ``[::1]`` and ``localhost``
        (``--console-allow-host``). Default none.
    :param trusted_proxies: whose ``X-Forwarded-For`` and
        ``X-Forwarded-Proto`` are believed (``--trusted-proxy``). Default none.
    """

    def __init__(
        self,
        core: Core,
        apply: Apply,
        on_watch: Callable[[bool], None],
        node: str = "",
        buffer: int = WATCHER_BUFFER,
        allow_hosts: Iterable[str] = (),
        trusted_proxies: TrustedProxies | None = None,
    ) -> None:
        self.allow_hosts = frozenset(h.strip().lower() for h in allow_hosts)
        self.proxies = trusted_proxies or TrustedProxies()
        self._logins = RateLimit(LOGIN_ATTEMPTS, LOGIN_PERIOD, LOGIN_ATTEMPTS_TOTAL)
        self.core = core
        self.apply = apply
        self.on_watch = on_watch
        self.node = node
        self.buffer = buffer
        #: Whether anyone watches: the only check the hot path makes.
        self.watching = False
        #: Set by :func:`~flask_pusher.server.app.start_site` for a non-loopback host.
        self.login_required = False
        self.watchers: set[Watcher] = set()
        self._ids = itertools.count(1)
        self._key = secrets.token_bytes(32)  # signs the session cookies of this process
        self._closing = False

    def add_routes(self, app: web.Application) -> None:
        """``/console`` and its endpoints."""
        add_route(app, "GET", "/console", self.page)
        add_route(app, "POST", "/console/login", self.login)
        add_route(app, "POST", "/console/logout", self.logout)
        add_route(app, "GET", "/console/events", self.events)
        add_route(app, "GET", "/console/state", self.state)
        add_route(app, "POST", "/console/trigger", self.trigger)

    # -- events -----------------------------------------------------------

    def emit(self, kind: str, app_id: str | None, **fields: Any) -> None:
        """Send one event to every watcher allowed to see ``app_id``."""
        event = {"id": next(self._ids), "time": time.time(), "type": kind, "app": app_id}
        event.update(fields)
        event["node"] = self.node
        text = json.dumps(event, ensure_ascii=True, default=repr)
        for watcher in self.watchers:
            watcher.push(app_id, text)

    def effects(self, effects: Effects) -> None:
        """Events of the webhook entries of ``effects`` (recorded while watched)."""
        for hook in effects.webhooks:
            event = dict(hook.event)
            name = event.pop("name")
            if name == "subscription_count":
                continue
            self.emit(_HOOK_KINDS.get(name, name), hook.app.app_id, **event)

    def api_message(
        self, app: AppState, payload: Any, batch: bool, source: str, request_id: str
    ) -> None:
        """Events for an accepted trigger: channels, event name, size, excluded socket."""
        items = payload.get("batch", []) if batch else [payload]
        for item in items:
            channels = item.get("channels") or [item.get("channel")]
            data = item.get("data")
            self.emit(
                "api_message",
                app.config.app_id,
                channels=channels,
                channel=channels[0] if len(channels) == 1 else None,
                event=item.get("name"),
                size=len(data.encode("utf-8", "surrogatepass")) if isinstance(data, str) else 0,
                socket_id=item.get("socket_id"),
                data=data,
                source=source,
                request_id=request_id,
            )

    # -- access -----------------------------------------------------------

    def _allowed(self, request: web.Request) -> frozenset[str] | None:
        """The app IDs ``request`` may see (``None``: all).

        :raises web.HTTPForbidden: without a valid session where one is needed.
        """
        if not self._login_needed(request):
            return None
        token = request.cookies.get(COOKIE, "")
        app_id, _, rest = token.rpartition(":")
        app_id, _, expires = app_id.rpartition(":")
        expected = self._sign(f"{app_id}:{expires}")
        if (
            hmac.compare_digest(rest, expected)
            and expires.isdigit()
            and int(expires) > time.time()
            and app_id in self.core.apps_by_id
        ):
            return frozenset({app_id})
        raise web.HTTPForbidden(
            text=json.dumps({"error": "Log in to the console with the app's secret."}),
            content_type="application/json",
        )

    def _login_needed(self, request: web.Request) -> bool:
        """Whether ``request`` must show an app's secret: always off loopback,
        and on loopback unless it provably comes from this machine
        (:func:`~flask_pusher.server.access.is_local`)."""
        return self.login_required or not is_local(request, self.allow_hosts)

    def _same_origin(self, request: web.Request) -> bool:
        """Whether the ``Origin`` (if any) is the console's own: its scheme (as a
        trusted proxy says) and the ``Host`` name. The port is not compared: a
        proxy's ``Host $host`` drops it."""
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        scheme = "https" if self.proxies.secure(request) else "http"
        given_scheme, _, given_host = origin.partition("://")
        return (
            given_scheme.lower() == scheme
            and split_host(given_host)[0] == split_host(request.host)[0]
        )

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), "sha256").hexdigest()

    def _apps(self, allowed: frozenset[str] | None) -> list[AppState]:
        apps = self.core.apps_by_id
        return [a for i, a in apps.items() if allowed is None or i in allowed]

    async def page(self, request: web.Request) -> web.Response:
        """``GET /console``: the page, or the login form."""
        try:
            self._allowed(request)
        except web.HTTPForbidden:
            return _html("login.html", status=401)
        return _html("console.html")

    async def login(self, request: web.Request) -> web.Response:
        """``POST /console/login``: check an app's secret; set the session cookie.

        More than :data:`LOGIN_ATTEMPTS` attempts from one address (or
        :data:`LOGIN_ATTEMPTS_TOTAL` from all) in :data:`LOGIN_PERIOD` seconds
        are answered 429 with ``Retry-After``, before the secret is looked at."""
        wait = self._logins.retry_after(self.proxies.client(request), time.monotonic())
        if wait > 0:
            response = _html("login.html", status=429, failed=True)
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
        try:
            form = await read_within(request.post())
        except Exception:  # a body aiohttp cannot parse (a broken multipart, say)
            return _html("login.html", status=400, failed=True)
        secret = form.get("secret")
        found = None
        if isinstance(secret, str) and secret:
            given = secret.encode("utf-8", "surrogateescape")
            for app_id, app in self.core.apps_by_id.items():
                # compare_digest for each app: the time does not tell which matched.
                if hmac.compare_digest(given, app.config.secret.encode()):
                    found = app_id
        if found is None:
            # DEBUG: anyone who reaches the console can send these.
            log.debug("console login refused from %s", request.remote)
            return _html("login.html", status=401, failed=True)
        expires = str(int(time.time()) + SESSION_SECONDS)
        response = web.HTTPSeeOther("/console")
        response.set_cookie(
            COOKIE,
            f"{found}:{expires}:{self._sign(f'{found}:{expires}')}",
            max_age=SESSION_SECONDS,
            path="/console",
            httponly=True,
            samesite="Strict",
            secure=self.proxies.secure(request),
        )
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        """``POST /console/logout``: forget the session cookie."""
        response = web.HTTPSeeOther("/console")
        response.del_cookie(COOKIE, path="/console")
        raise response

    # -- the stream -------------------------------------------------------

    async def events(self, request: web.Request) -> web.StreamResponse:
        """``GET /console/events``: server-sent events, one JSON object each."""
        watcher = Watcher(self._allowed(request), self.buffer)
        self.watchers.add(watcher)
        if not self.watching:
            self.watching = True
            self.on_watch(True)
        reported = 0
        try:
            async with sse_response(request) as stream:
                hello = {"type": "hello", "node": self.node, "login": self._login_needed(request)}
                await stream.send(json.dumps(hello), event="hello")
                while not self._closing and stream.is_connected():
                    try:
                        await asyncio.wait_for(watcher.wake.wait(), GONE_CHECK)
                    except asyncio.TimeoutError:
                        transport = request.transport
                        if transport is None or transport.is_closing():
                            break  # the page was closed: nothing tells the handler else
                        continue
                    watcher.wake.clear()
                    while watcher.queue:
                        await stream.send(watcher.pop())
                    if watcher.dropped != reported:
                        reported = watcher.dropped
                        await stream.send(json.dumps({"dropped": reported}), event="dropped")
                return stream
        except (ConnectionError, asyncio.TimeoutError):
            return web.Response(status=204)  # never sent: the page is gone
        finally:
            self.watchers.discard(watcher)
            if not self.watchers and self.watching:
                self.watching = False
                self.on_watch(False)

    def close(self) -> None:
        """End every stream (at shutdown)."""
        self._closing = True
        for watcher in self.watchers:
            watcher.wake.set()

    # -- state and the event creator --------------------------------------

    async def state(self, request: web.Request) -> web.Response:
        """``GET /console/state``: connections, occupied channels, presence members."""
        allowed = self._allowed(request)
        apps = []
        for app in self._apps(allowed):
            connections = [
                {
                    "socket_id": conn.socket_id,
                    "user_id": conn.user_id,
                    "channels": sorted(conn.channels),
                }
                for conn in itertools.islice(app.connections.values(), STATE_LIMIT)
            ]
            channels = []
            presence: dict[str, Any] = {}
            for name, counts in itertools.islice(app.occupied(), STATE_LIMIT):
                channels.append(
                    {
                        "name": name,
                        "subscription_count": counts.subscription_count,
                        "user_count": counts.user_count,
                    }
                )
                if name.startswith(names.PRESENCE_PREFIX):
                    members = app.members(name)
                    presence[name] = [
                        {"user_id": uid, "user_info": info}
                        for uid, info in itertools.islice(members.items(), STATE_LIMIT)
                    ]
            apps.append(
                {
                    "app_id": app.config.app_id,
                    "connection_count": len(app.connections),
                    "connections": connections,
                    "channels": channels,
                    "presence": presence,
                }
            )
        body = {"node": self.node, "apps": apps}
        return web.json_response(body, dumps=_dumps)

    async def trigger(self, request: web.Request) -> web.Response:
        """``POST /console/trigger``: ``{"app_id", "channel", "event", "data"}``,
        sent as the HTTP API sends it. JSON only (a cross-site form cannot send
        it without the browser asking first), from this origin only."""
        allowed = self._allowed(request)
        if not self._same_origin(request):
            return _json_error(403, "The event creator takes requests from the console only.")
        if request.content_type != "application/json":
            return _json_error(415, "Send JSON (Content-Type: application/json).")
        try:
            body = loads(await read_body(request))
            if not isinstance(body, dict):
                raise APIError(400, "Send a JSON object.")
            apps = {a.config.app_id: a for a in self._apps(allowed)}
            app = apps.get(str(body.get("app_id")))
            if app is None:
                raise APIError(404, "Unknown app.")
            data = body.get("data")
            if not isinstance(data, str):
                raise APIError(400, "data must be a string of JSON.")
            try:
                loads(data)
            except (TypeError, ValueError):
                raise APIError(400, "data is not valid JSON.") from None
            payload = {"name": body.get("event"), "channels": [body.get("channel")], "data": data}
            effects = self.core.trigger(app, payload)
        except APIError as exc:
            return _json_error(exc.status, exc.message)
        except ValueError:
            return _json_error(400, "The body is not valid JSON.")
        if self.watching:
            self.api_message(app, payload, False, "console", "")
        self.apply(effects)
        return web.json_response(effects.result, dumps=_dumps)


#: Console event types of the core's webhook events.
_HOOK_KINDS = {"channel_occupied": "occupied", "channel_vacated": "vacated"}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=True, default=repr)


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _html(name: str, status: int = 200, failed: bool = False) -> web.Response:
    text = importlib.resources.files(__package__).joinpath(name).read_text("utf-8")
    if failed:
        text = text.replace('<p id="failed" hidden>', '<p id="failed">')
    response = web.Response(text=text, content_type="text/html", status=status)
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline';"
        " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
