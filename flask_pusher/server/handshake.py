"""The WebSocket handshake and hand-off, and what a socket tells the core.

:class:`Handshake` answers ``GET /app/{key}``: it refuses an unknown key
(4001), a disabled app (4003) and an unsupported protocol version (4007), and
one the per-app limits refuse; an accepted client gets the opening
handshake's ``101`` answer written by :func:`switching_protocols` (a
refused one, or a request that is no valid opening handshake, gets aiohttp's
``WebSocketResponse``: its ``400``, or the handshake and the close code).
Then it hands the transport to a
:class:`~flask_pusher.server.wsocket.PusherSocket` (``hand_off``) and is that
socket's owner: each message goes to the core, and the effects to the
:class:`~flask_pusher.server.writer.Writer`. Codes and refusals are Pusher's
(https://pusher.com/docs/channels/library_auth_reference/pusher-websockets-protocol/).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.http import RawRequestMessage
from wsproto.utilities import generate_accept_token

from . import limits
from . import observers
from . import protocol
from .access import Peer
from .access import TrustedProxies
from .core import Core
from .events import ProtocolError
from .logsafe import SERVER_HEADER
from .metrics import IOCounts
from .state import AppState
from .state import Connection
from .state import Effects
from .writer import close_reason
from .writer import Writer
from .wsocket import hand_off
from .wsocket import PusherSocket

if TYPE_CHECKING:
    from .cluster import Cluster
    from .console import Console

log = logging.getLogger("flask_pusher.server")

#: Largest accepted client frame, in bytes.
MAX_FRAME_SIZE = 256 * 1024
SUPPORTED_PROTOCOLS = frozenset({"5", "6", "7"})
#: ``pusher:ping`` as pusher-js sends it (``send_event("pusher:ping", {})``),
#: answered by :meth:`Handshake.on_text` without parsing; any other spelling
#: takes the core's way to the same ``pusher:pong``.
PING = '{"event":"pusher:ping","data":{}}'
#: A refusal: a close code and its reason.
Refusal = tuple[int, str]


def switching_protocols(headers: Mapping[str, str]) -> bytes | None:
    """The ``101 Switching Protocols`` answer to a valid opening handshake, or
    ``None`` when a request with ``headers`` is not one (RFC 6455 section 4.2.1,
    https://www.rfc-editor.org/rfc/rfc6455#section-4.2.1: ``Upgrade:
    websocket``, ``Connection: Upgrade``, ``Sec-WebSocket-Version: 13``, a
    ``Sec-WebSocket-Key`` of 16 bytes in base64). Neither a subprotocol nor an
    extension is agreed to, as aiohttp's ``WebSocketResponse(compress=False)``
    agrees to none, and the headers are the ones it sends (``Date`` aside).
    """
    if headers.get("Upgrade", "").strip().lower() != "websocket":
        return None
    connection = headers.get("Connection", "").lower()
    if "upgrade" not in (token.strip() for token in connection.split(",")):
        return None
    if headers.get("Sec-WebSocket-Version") != "13":
        return None
    key = headers.get("Sec-WebSocket-Key", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return None
    except (binascii.Error, ValueError):  # not base64, or not ASCII
        return None
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
        b"Sec-WebSocket-Accept: " + generate_accept_token(key.encode()) + b"\r\n"
        b"Server: " + SERVER_HEADER.encode() + b"\r\n\r\n"
    )


class HandedOff(web.StreamResponse):
    """What the handler returns once the socket is handed off: aiohttp, which
    no longer has the connection, has nothing to prepare or send."""

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


class Handshake:
    """``GET /app/{key}`` and the owner of every
    :class:`~flask_pusher.server.wsocket.PusherSocket` it opens.

    :param core: the core.
    :param writer: where the effects go; its ``sockets`` map gets each socket.
    :param counts: the metrics' counters by app, or ``None``.
    :param console: the debug console, or ``None``.
    :param cluster: the Redis backend, or ``None``: with it, a client learns
        it is subscribed once the cluster knows it.
    :param proxies: whose ``X-Forwarded-For`` gives the client's address
        (``max_connections_per_address``); default none: the TCP peer's.
    """

    def __init__(
        self,
        core: Core,
        writer: Writer,
        counts: dict[AppState, IOCounts] | None = None,
        console: Console | None = None,
        cluster: Cluster | None = None,
        proxies: TrustedProxies | None = None,
    ) -> None:
        self.core = core
        self.writer = writer
        self.apply = writer.apply
        self.counts = counts
        self.console = console
        self.cluster = cluster
        self.proxies = proxies or TrustedProxies()

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        """``GET /app/{key}``: one Pusher connection
        (https://pusher.com/docs/channels/library_auth_reference/pusher-websockets-protocol/),
        when the :mod:`~flask_pusher.server.frontdoor` left it to aiohttp."""
        answer = switching_protocols(request.headers)
        ws: web.WebSocketResponse | None = None
        if answer is None:  # aiohttp answers what is no valid opening handshake (400)
            ws = await self._prepare(request)
            if ws is None:
                return web.Response(status=400)  # never sent: the client left
        key = request.match_info["key"]
        app, refusal = self._check(key, request.query.get("protocol"))
        transport = request.transport
        client = limits.address(app, request, self.proxies) if refusal is None else None
        refusal = refusal or await limits.admit(self.core.backend, app, request, client)
        console = self.console
        if refusal is not None or app is None or transport is None:
            code, message = refusal or (4200, "Connection lost")
            log.debug("refused connection to %s: %s", request.path, message)
            if console is not None and console.watching:
                app_id = app.config.app_id if app is not None else None
                console.emit("connection_refused", app_id, code=code, reason=message)
            if ws is None:
                ws = await self._prepare(request)
                if ws is None:
                    return web.Response(status=400)  # never sent: the client left
            try:
                await ws.send_str(protocol.error(message, code))
                await ws.close(code=code, message=close_reason(message))
            except ConnectionError:  # gone already
                pass
            return ws
        conn, sock, greeting = self._open(app, client, transport)
        if console is not None and console.watching:
            console.emit("connection", app.config.app_id, **observers.client(conn, request))
        if transport.is_closing():  # it left while the backend admitted it
            self.on_lost(conn)
        # aiohttp forgets the connection (its request, parser and tasks, about
        # 11 KB of an idle connection's 15): from now on the socket is sock's.
        response = hand_off(request, sock)
        if answer is None:
            self.apply(greeting)
            return response
        # The 101 and connection_established in one write.
        self.writer.greet(conn, answer, greeting)
        return HandedOff()

    def upgrade(self, transport: asyncio.Transport, key: str, head: RawRequestMessage) -> bool:
        """Open the connection ``head`` (``GET /app/{key}``, read by the
        :mod:`~flask_pusher.server.frontdoor`) asks for, at once: ``True``,
        and ``transport`` is the new socket's, the ``101`` and
        ``pusher:connection_established`` written; or ``False``, nothing done,
        when :meth:`websocket` must answer it (no valid opening handshake, a
        refusal, a quota counted in Redis, a console watching).
        """
        answer = switching_protocols(head.headers)
        if answer is None:
            return False
        app, refusal = self._check(key, head.url.query.get("protocol"))
        console = self.console
        if app is None or refusal is not None or (console is not None and console.watching):
            return False
        request = Peer(transport, head.headers)
        client = limits.address(app, request, self.proxies)
        backend = self.core.backend
        if not limits.admits_at_once(backend, app, client):
            return False
        if limits.admit_now(backend, app, request, client) is not None:
            return False
        conn, sock, greeting = self._open(app, client, transport)
        transport.set_protocol(sock)
        self.writer.greet(conn, answer, greeting)
        return True

    def _check(self, key: str, version: str | None) -> tuple[AppState | None, Refusal | None]:
        """The app of ``key``, and the refusal of a connection to it by key
        and protocol ``version`` (4001, 4003, 4007) or ``None``."""
        app = self.core.apps_by_key.get(key)
        if app is None:
            return None, (4001, f"App key {key[:60]} does not exist")
        if not app.config.enabled:
            return app, (4003, "Application disabled")
        if version is not None and version not in SUPPORTED_PROTOCOLS:
            return app, (4007, f"Unsupported protocol version {version[:20]}")
        return app, None

    def _open(
        self, app: AppState, client: str | None, transport: asyncio.Transport
    ) -> tuple[Connection, PusherSocket[Connection], Effects]:
        """A new connection to ``app`` from ``client``, its socket and the
        effects of its start (``pusher:connection_established`` first)."""
        greeting = self.core.connect(app, client)
        conn: Connection = greeting.result
        sock = PusherSocket(transport, self, conn, MAX_FRAME_SIZE)
        self.writer.sockets[conn] = sock
        self.writer.idle.clear()
        counts = self.counts
        if counts is not None:
            counts[app].new_connections += 1
        return conn, sock, greeting

    @staticmethod
    async def _prepare(request: web.Request) -> web.WebSocketResponse | None:
        """aiohttp's opening handshake, or ``None`` when the client left during it."""
        if request.transport is None:  # gone already (aiohttp 3.10 asserts it is not)
            return None
        ws = web.WebSocketResponse(
            autoping=True, compress=False, max_msg_size=MAX_FRAME_SIZE, timeout=5.0
        )
        try:
            await ws.prepare(request)
        except ConnectionError:
            return None
        return ws

    # -- PusherSocket's owner ---------------------------------------------

    def on_text(self, conn: Connection, text: str) -> None:
        """A text message from ``conn``."""
        counts = self.counts
        if counts is not None:
            c = counts[conn.app]
            c.ws_messages_received += 1
            c.socket_received_bytes += (
                len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
            )
        console = self.console
        watching = console is not None and console.watching
        if text == PING and not watching:
            # pusher-js's ping, the most common frame of all: one write back.
            if self.core.heard(conn):
                self.writer.pong(conn)
            return
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

    def on_binary(self, conn: Connection) -> None:
        """A binary message from ``conn``: not part of the Pusher protocol."""
        self.apply(self.core.binary(conn))

    def on_lost(self, conn: Connection) -> None:
        """``conn``'s TCP connection is gone: forget it."""
        sockets = self.writer.sockets
        sock = sockets.pop(conn, None)
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
        if not sockets:
            self.writer.idle.set()
        if self.counts is not None:
            self.counts[conn.app].disconnections += 1
