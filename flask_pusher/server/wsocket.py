"""A client's WebSocket once aiohttp has done the opening handshake.

aiohttp keeps, for every open WebSocket, the HTTP request it was opened with,
its HTTP parser, two tasks and six coroutine frames: about 12 KB of the
14.8 KB an idle Pusher connection cost. :func:`hand_off` moves the socket to
:class:`PusherSocket`, an :class:`asyncio.Protocol` whose frames are parsed by
wsproto's sans-IO :class:`wsproto.connection.Connection`, and lets aiohttp
forget the connection: about 4 KB per idle connection in all.
"""

from __future__ import annotations

import asyncio
from typing import Generic
from typing import Protocol
from typing import TypeVar

from aiohttp import web
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionState
from wsproto.connection import ConnectionType
from wsproto.events import BytesMessage
from wsproto.events import CloseConnection
from wsproto.events import Ping
from wsproto.events import TextMessage
from wsproto.utilities import LocalProtocolError

K = TypeVar("K")
K_contra = TypeVar("K_contra", contravariant=True)


class Owner(Protocol[K_contra]):
    """What a :class:`PusherSocket` reports to, with the key it was given."""

    def on_text(self, key: K_contra, text: str) -> None: ...
    def on_binary(self, key: K_contra) -> None: ...
    def on_lost(self, key: K_contra) -> None: ...


#: Seconds a close waits for the client's Close frame before the socket is
#: dropped (RFC 6455 §7.1.1: the server closes the TCP connection).
CLOSE_TIMEOUT = 5.0


class PusherSocket(asyncio.Protocol, Generic[K]):
    """One client's WebSocket after the handshake (RFC 6455 §5 framing, §7 closing).

    Whatever a client sends, the socket keeps at most ``max_size`` bytes of
    message payload: a message is refused the moment its payload passes the
    limit (not after the read that completes it), and once a close has begun
    no more payload is kept and no message reaches the owner. A client that
    goes on sending after the close began (its reply cannot come before the
    end of the frame it is sending) may send ``max_size`` more bytes; then
    the TCP connection is aborted.

    :param transport: the connection's transport, taken over from aiohttp.
    :param owner: told of each complete text message (``on_text(key, str)``),
        each binary message (``on_binary(key)``; the Pusher protocol has none)
        and, once, of the end of the TCP connection (``on_lost(key)``).
    :param key: what the owner knows the connection by.
    :param max_size: largest message accepted, in bytes of payload (UTF-8 for
        text); a message of ``max_size + 1`` bytes closes the connection with
        1009 (RFC 6455 §7.4.1).
    """

    __slots__ = (
        "_after_close",
        "_fragments",
        "_size",
        "_ws",
        "close_code",
        "closing",
        "key",
        "max_size",
        "opened_at",
        "owner",
        "transport",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        owner: Owner[K],
        key: K,
        max_size: int,
    ) -> None:
        self.transport = transport
        self.owner = owner
        self.key = key
        self.max_size = max_size
        #: True once a Close frame was sent or received: write nothing more
        #: (RFC 6455 §5.5.1), and pass no more messages to the owner. Checked
        #: by the broadcast fast path.
        self.closing = False
        #: The close code sent or received first, if any (for the debug console).
        self.close_code: int | None = None
        #: The event loop's time when the handshake ended, in seconds.
        self.opened_at = asyncio.get_running_loop().time()
        self._ws = WSConnection(ConnectionType.SERVER)
        self._fragments: list[str] | None = None
        self._size = 0  # payload bytes of the message being received
        self._after_close = 0  # bytes received since the close began

    def write(self, data: bytes) -> None:
        """Write pre-encoded frames; nothing once the close has begun (RFC 6455 §5.5.1)."""
        if not self.closing and not self.transport.is_closing():
            self.transport.write(data)

    def close(self, code: int, reason: str) -> None:
        """Send a Close frame; drop the socket if the client does not answer in time."""
        if self.closing or self._ws.state is not ConnectionState.OPEN:
            return
        self.closing = True
        self.close_code = code
        self._fragments = None  # a message cut short by the close is never delivered
        self.transport.write(self._ws.send(CloseConnection(code, reason)))
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.transport.abort)

    def data_received(self, data: bytes) -> None:
        try:
            self._data_received(data)
        except LocalProtocolError:  # a frame wsproto cannot answer in this state
            self.closing = True
            self.transport.abort()

    def _data_received(self, data: bytes) -> None:
        if self.closing:
            # Only the client's Close frame still matters; payload is read
            # and dropped, up to max_size bytes, then the connection is cut.
            self._after_close += len(data)
            if self._after_close > self.max_size:
                self.transport.abort()
                return
        ws = self._ws
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, TextMessage):
                if not self.closing:
                    self._text(event.data, event.message_finished)
            elif isinstance(event, BytesMessage):
                if not self.closing and self._grow(len(event.data)) and event.message_finished:
                    self._size = 0
                    self.owner.on_binary(self.key)
            elif isinstance(event, Ping):
                if ws.state is ConnectionState.OPEN:  # no Pong once a close began
                    self.transport.write(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.closing = True
                self._fragments = None
                if self.close_code is None:
                    self.close_code = event.code
                # The client's close (answered), its reply to ours, or a
                # protocol error wsproto found (its code and reason).
                if ws.state is ConnectionState.REMOTE_CLOSING:
                    self.transport.write(ws.send(event.response()))
                elif ws.state is ConnectionState.OPEN:  # a framing error: say why
                    self.transport.write(ws.send(CloseConnection(event.code, event.reason)))
                self.transport.close()
                return

    def _grow(self, size: int) -> bool:
        """Count ``size`` more payload bytes of the current message; past
        ``max_size``, close with 1009 and return ``False``."""
        self._size += size
        if self._size <= self.max_size:
            return True
        self.close(1009, "Message too big")
        return False

    def _text(self, text: str, finished: bool) -> None:
        # _grow, inlined: this runs for every text message.
        self._size += len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
        if self._size > self.max_size:
            self.close(1009, "Message too big")
            return
        if finished and self._fragments is None:
            self._size = 0
            self.owner.on_text(self.key, text)
            return
        fragments = self._fragments = self._fragments or []
        fragments.append(text)
        if finished:
            self._fragments = None
            self._size = 0
            self.owner.on_text(self.key, "".join(fragments))

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closing = True
        self._fragments = None
        self.owner.on_lost(self.key)


def hand_off(request: web.BaseRequest, sock: PusherSocket[K]) -> web.StreamResponse:
    """Give the socket of a prepared :class:`~aiohttp.web.WebSocketResponse` to ``sock``.

    aiohttp forgets the connection: it will not read, write or close the socket
    again, and frees the request, its parser and tasks. Call it right after
    ``await ws.prepare(request)`` and return what it returns from the handler.
    Frames a client sent before the handshake's answer are dropped (Pusher
    clients wait for ``pusher:connection_established``).
    """
    handler = request.protocol
    sock.transport.set_protocol(sock)
    handler.transport = None  # aiohttp: the socket is not yours any more ...
    handler.connection_lost(None)  # ... free the request, parser and task
    return web.Response()  # never sent: aiohttp finds no transport and ends quietly
