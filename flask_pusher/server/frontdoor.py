"""The front door: the first bytes of every connection the server accepts.

A Pusher client's connection starts with one HTTP request, the WebSocket
opening handshake ``GET /app/{key}`` (RFC 6455 section 4.1,
https://www.rfc-editor.org/rfc/rfc6455#section-4.1; the Pusher Channels
protocol, https://pusher.com/docs/channels/library_auth_reference/pusher-websockets-protocol/).
Through aiohttp's request machinery (a ``RequestHandler`` and its task, a
``Request``, routing, a response) that request cost more CPU than all the rest
of a connection's start; in a reconnect storm of thousands of clients at once
it was the largest part of the server's work. So every accepted connection
first gets a :class:`FrontDoor`, which waits for the first bytes:

- if they are exactly one complete opening handshake for ``/app/{key}``,
  parsed by aiohttp's own HTTP parser with aiohttp's limits, that
  :meth:`Handshake.upgrade <flask_pusher.server.handshake.Handshake.upgrade>`
  accepts at once, the transport goes straight to a
  :class:`~flask_pusher.server.wsocket.PusherSocket`, and the ``101`` and
  ``pusher:connection_established`` leave in one write;
- anything else (another route, a head split over several reads, bytes after
  the head, a refusal, a quota counted in Redis, a console watching) goes to
  aiohttp's ``RequestHandler`` with the bytes received, as if it had had the
  connection from the start: every answer there is aiohttp's, as before.

A front door holds no buffer: the first read decides. A connection that sends
nothing is closed by the :class:`~flask_pusher.server.timeouts.RequestWatchdog`
after :data:`~flask_pusher.server.timeouts.REQUEST_TIMEOUT`, as one aiohttp
holds is.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any
from typing import cast
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.http import HttpRequestParser
from aiohttp.http import HttpVersion11
from aiohttp.http import RawRequestMessage
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import EMPTY_PAYLOAD

if TYPE_CHECKING:
    from .handshake import Handshake
    from .timeouts import RequestWatchdog

#: The only first bytes a front door parses.
PREFIX = b"GET /app/"
#: An app key as the front door takes it: what needs no percent-decoding to
#: match aiohttp's route ``/app/{key}`` (anything else goes to aiohttp).
KEY = re.compile(r"[A-Za-z0-9._~-]+")
#: aiohttp's own limits for a request's head, in bytes (``web.Server``'s
#: defaults): the request line, one header field, and the parser's read limit.
MAX_LINE_SIZE = 8190
MAX_FIELD_SIZE = 8190
READ_LIMIT = 2**16


class Entrance:
    """The protocol factory of a listening socket: a :class:`FrontDoor` for
    each accepted connection.

    :param server: aiohttp's ``web.Server`` (``AppRunner.server``), which gets
        every connection the front door does not open itself.
    :param handshake: opens the connections it can accept at once.
    :param watchdog: closes connections that send nothing; it sweeps
        :attr:`connections` and goes on timing a connection handed to aiohttp.
    """

    def __init__(
        self,
        server: web.Server,
        handshake: Handshake,
        watchdog: RequestWatchdog | None = None,
    ) -> None:
        self.server = server
        self.handshake = handshake
        self.watchdog = watchdog
        #: The front doors still waiting for their first bytes.
        self.connections: set[FrontDoor] = set()
        #: Set by :meth:`close`: a connection accepted after it is closed at once.
        self.closed = False

    def __call__(self) -> FrontDoor:
        return FrontDoor(self)

    def close(self) -> None:
        """Close the connections that have sent nothing, and any accepted
        from now on (at shutdown)."""
        self.closed = True
        for door in list(self.connections):
            door.transport.close()


class FrontDoor(asyncio.Protocol):
    """A connection until its first bytes (see the module's docstring)."""

    __slots__ = ("entrance", "transport")

    transport: asyncio.Transport

    def __init__(self, entrance: Entrance) -> None:
        self.entrance = entrance

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.entrance.closed:  # accepted as the server stopped listening
            self.transport.close()
            return
        self.entrance.connections.add(self)

    def data_received(self, data: bytes) -> None:
        entrance = self.entrance
        entrance.connections.discard(self)
        if data.startswith(PREFIX) and data.endswith(b"\r\n\r\n"):
            try:
                head = parse(data)
            except Exception:  # a parser's quirk must not drop the client: aiohttp answers
                head = None
            if head is not None and entrance.handshake.upgrade(self.transport, *head):
                return
        # aiohttp's, from the first byte on.
        handler = entrance.server()
        self.transport.set_protocol(handler)
        handler.connection_made(self.transport)
        if entrance.watchdog is not None:
            entrance.watchdog.moved(self, handler)
        handler.data_received(data)

    def eof_received(self) -> bool | None:
        return None  # nothing was asked: close

    def connection_lost(self, exc: BaseException | None) -> None:
        self.entrance.connections.discard(self)


class _NoBody:
    """The protocol given to the parser: aiohttp's pure-Python parser asserts
    it has one (``AIOHTTP_NO_EXTENSIONS``, PyPy); a body's stream would use it."""

    __slots__ = ()


_NO_BODY = _NoBody()


def parse(data: bytes) -> tuple[str, RawRequestMessage] | None:
    """The app key and aiohttp's ``RawRequestMessage`` of ``data`` when it is
    exactly one request head for ``GET /app/{key}`` asking for an upgrade,
    with no body; else ``None``."""
    parser = HttpRequestParser(
        # Only a body's stream would use it (and a body is declined below).
        cast(Any, _NO_BODY),
        asyncio.get_running_loop(),
        READ_LIMIT,
        max_line_size=MAX_LINE_SIZE,
        max_field_size=MAX_FIELD_SIZE,
    )
    try:
        messages, upgraded, tail = parser.feed_data(data)
    except HttpProcessingError:  # aiohttp answers it (400)
        return None
    if len(messages) != 1 or not upgraded or tail:
        return None
    message, payload = messages[0]
    if payload is not EMPTY_PAYLOAD or message.version != HttpVersion11:
        return None
    if "Expect" in message.headers:  # aiohttp answers it (100 Continue, or 417)
        return None
    key = message.url.raw_path[len("/app/") :]
    if not KEY.fullmatch(key):
        return None
    return key, message


class FrontDoorSite(web.BaseSite):
    """aiohttp's ``TCPSite``, with an :class:`Entrance` as the protocol
    factory (https://docs.aiohttp.org/en/stable/web_reference.html#aiohttp.web.BaseSite).

    :param runner: the set-up ``AppRunner`` (its ``server`` gets what the
        front doors do not open).
    :param host: the address to listen on (``--host``).
    :param port: the port (``--port``; 0 picks a free one).
    :param handshake: opens what the front doors read (:class:`Entrance`).
    :param watchdog: sweeps the connections waiting at the door; ``None``:
        none is closed for sending nothing.
    :param backlog: the listening socket's backlog, in connections.
    :param reuse_port: ``SO_REUSEPORT`` (``--workers``).
    :raises RuntimeError: from aiohttp, when ``runner`` is not set up.
    """

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        handshake: Handshake,
        watchdog: RequestWatchdog | None = None,
        *,
        backlog: int = 128,
        reuse_port: bool = False,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._handshake = handshake
        self._watchdog = watchdog
        self._reuse_port = reuse_port
        self.entrance: Entrance | None = None

    @property
    def name(self) -> str:
        """The address, as aiohttp's ``TCPSite`` names it (an IPv6 host in brackets)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None, "call runner.setup() first"
        self.entrance = Entrance(server, self._handshake, self._watchdog)
        if self._watchdog is not None:
            self._watchdog.watch(self.entrance)
        self._server = await asyncio.get_running_loop().create_server(
            self.entrance,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_port=self._reuse_port,
        )

    async def stop(self) -> None:
        await super().stop()
        if self.entrance is not None:
            self.entrance.close()
