"""A client's WebSocket once aiohttp has done the opening handshake.

aiohttp keeps, for every open WebSocket, the HTTP request it was opened with,
its HTTP parser, two tasks and six coroutine frames: about 12 KB of the
14.8 KB an idle Pusher connection cost. :func:`hand_off` moves the socket to
:class:`PusherSocket`, an :class:`asyncio.Protocol`, and lets aiohttp forget
the connection: about 4 KB per idle connection in all.

:class:`PusherSocket` reads the frames Pusher clients send (whole text
messages in one masked frame, pings, pongs) itself, unmasked by aiohttp's C
``websocket_mask``; any other frame (a fragment, a Close, a binary or
malformed frame, invalid UTF-8, a message over the size limit) hands the
connection, from that frame on, to wsproto's sans-IO
:class:`wsproto.connection.Connection`, which answers it per RFC 6455.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
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
#: Bytes queued for one client before it is dropped as too slow: by the
#: writer, and here for the Pong frames of a client that sends pings and never
#: reads the answers.
MAX_WRITE_BUFFER = 4 * 1024 * 1024


def _mask_python(key: bytes, data: bytearray) -> None:
    """XOR ``data`` in place with the 4-byte masking ``key`` (RFC 6455 §5.3)."""
    size = len(data)
    if size:
        repeated = (key * (size // 4 + 1))[:size]
        masked = int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")
        data[:] = masked.to_bytes(size, "little")


def _find_mask() -> Callable[[bytes, bytearray], None]:
    """aiohttp's own unmasking function (C unless aiohttp was installed without
    its extensions): ``aiohttp._websocket.helpers.websocket_mask`` since 3.11,
    ``aiohttp.http_websocket._websocket_mask`` in 3.10; else :func:`_mask_python`."""
    for module, name in (
        ("aiohttp._websocket.helpers", "websocket_mask"),
        ("aiohttp.http_websocket", "_websocket_mask"),
    ):
        try:
            found: Callable[[bytes, bytearray], None] = getattr(
                importlib.import_module(module), name
            )
        except (ImportError, AttributeError):
            continue
        return found
    return _mask_python


#: ``unmask(key, payload)``: unmask a client frame's ``payload`` (a bytearray) in
#: place with its 4-byte masking ``key`` (RFC 6455 §5.3).
unmask = _find_mask()


class _Slow:
    """A connection's wsproto state, made on its first frame the fast path
    leaves to wsproto (or when a close begins), and kept from then on."""

    __slots__ = ("after_close", "fragments", "size", "ws")

    def __init__(self) -> None:
        self.ws = WSConnection(ConnectionType.SERVER)
        self.fragments: list[str] | None = None
        self.size = 0  # payload bytes of the message being received
        self.after_close = 0  # bytes received since the close began


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
        "_pending",
        "_slow",
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
        #: The start of a frame the fast path has not all of yet (at most a
        #: header and ``max_size`` bytes of payload).
        self._pending: bytearray | None = None
        self._slow: _Slow | None = None

    def write(self, data: bytes) -> None:
        """Write pre-encoded frames; nothing once the close has begun (RFC 6455 §5.5.1)."""
        if not self.closing and not self.transport.is_closing():
            self.transport.write(data)

    def close(self, code: int, reason: str) -> None:
        """Send a Close frame; drop the socket if the client does not answer in time."""
        if self.closing:
            return
        slow = self._to_wsproto()
        if slow.ws.state is not ConnectionState.OPEN:
            return
        self.closing = True
        self.close_code = code
        slow.fragments = None  # a message cut short by the close is never delivered
        self.transport.write(slow.ws.send(CloseConnection(code, reason)))
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.transport.abort)

    def _to_wsproto(self) -> _Slow:
        """Hand the connection to wsproto from the frame ``_pending`` starts."""
        slow = self._slow
        if slow is None:
            slow = self._slow = _Slow()
            if self._pending is not None:
                slow.ws.receive_data(bytes(self._pending))
                self._pending = None
        return slow

    def data_received(self, data: bytes) -> None:
        try:
            if self._slow is None:
                if not self.closing:  # (else the TCP connection is lost)
                    self._fast(data)
            else:
                self._data_received(data)
        except LocalProtocolError:  # a frame wsproto cannot answer in this state
            self.closing = True
            self.transport.abort()

    def _fast(self, data: bytes) -> None:
        """Read whole single-frame text messages, pings and pongs (RFC 6455
        §5.2, §5.5.2-3); from the first other frame on, wsproto reads."""
        buffer: bytes | bytearray = data
        pending = self._pending
        if pending is not None:
            pending += data  # a bytearray: a frame trickled in is not copied again and again
            buffer = pending
            self._pending = None
        end = len(buffer)
        pos = 0
        max_size = self.max_size
        while pos < end:
            if end - pos < 2:
                return self._keep(buffer, pos)
            first = buffer[pos]
            size = buffer[pos + 1] ^ 0x80  # a client frame is masked (§5.3)
            if size < 126:
                start = pos + 6
            elif size == 126:
                if end - pos < 4:
                    return self._keep(buffer, pos)
                size = int.from_bytes(buffer[pos + 2 : pos + 4], "big")
                start = pos + 8
                if size < 126:  # not the shortest form: wsproto answers
                    break
            elif size == 127:
                if end - pos < 10:
                    return self._keep(buffer, pos)
                size = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
                start = pos + 14
                if size < 65536:  # not the shortest form: wsproto answers
                    break
            else:  # an unmasked frame: wsproto answers
                break
            if first == 0x81:  # FIN, text
                if size > max_size:  # wsproto reads it in parts, and we refuse it
                    break
            elif (first != 0x89 and first != 0x8A) or size > 125:  # FIN, ping or pong
                break
            stop = start + size
            if stop > end:
                return self._keep(buffer, pos)
            payload = bytearray(buffer[start:stop])
            unmask(bytes(buffer[start - 4 : start]), payload)
            if first == 0x81:
                try:
                    text = payload.decode()
                except UnicodeDecodeError:  # wsproto answers (1007)
                    break
                pos = stop
                self.owner.on_text(self.key, text)
                if self.closing:  # the owner began a close, or the connection is lost
                    if self._slow is not None and pos < end:
                        self._data_received(bytes(buffer[pos:]))
                    return None
            else:
                pos = stop
                if first == 0x89:
                    self._control(bytes((0x8A, size)) + payload)
                    if self.closing:
                        return None
        else:
            return None
        # A frame the fast path leaves to wsproto, from its first byte on.
        self._slow = _Slow()
        self._data_received(bytes(buffer[pos:]))
        return None

    def _control(self, frame: bytes) -> None:
        """Write a Pong; drop a client whose unread answers pass
        :data:`MAX_WRITE_BUFFER` (reading is never paused, so nothing else bounds them)."""
        transport = self.transport
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self.closing = True
            transport.abort()
            return
        transport.write(frame)

    def _keep(self, buffer: bytes | bytearray, pos: int) -> None:
        """Keep the start of a frame, ``buffer[pos:]``, until the rest arrives."""
        if pos == 0 and isinstance(buffer, bytearray):
            self._pending = buffer
        else:
            self._pending = bytearray(buffer[pos:])

    def _data_received(self, data: bytes) -> None:
        slow = self._slow
        assert slow is not None
        if self.closing:
            # Only the client's Close frame still matters; payload is read
            # and dropped, up to max_size bytes, then the connection is cut.
            slow.after_close += len(data)
            if slow.after_close > self.max_size:
                self.transport.abort()
                return
        ws = slow.ws
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, TextMessage):
                if not self.closing:
                    self._text(slow, event.data, event.message_finished)
            elif isinstance(event, BytesMessage):
                if (
                    not self.closing
                    and self._grow(slow, len(event.data))
                    and event.message_finished
                ):
                    slow.size = 0
                    self.owner.on_binary(self.key)
            elif isinstance(event, Ping):
                # No Pong once a close began, nor after a drop for unread Pongs.
                if ws.state is ConnectionState.OPEN and not self.closing:
                    self._control(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.closing = True
                slow.fragments = None
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

    def _grow(self, slow: _Slow, size: int) -> bool:
        """Count ``size`` more payload bytes of the current message; past
        ``max_size``, close with 1009 and return ``False``."""
        slow.size += size
        if slow.size <= self.max_size:
            return True
        self.close(1009, "Message too big")
        return False

    def _text(self, slow: _Slow, text: str, finished: bool) -> None:
        slow.size += len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
        if slow.size > self.max_size:
            self.close(1009, "Message too big")
            return
        if finished and slow.fragments is None:
            slow.size = 0
            self.owner.on_text(self.key, text)
            return
        fragments = slow.fragments = slow.fragments or []
        fragments.append(text)
        if finished:
            slow.fragments = None
            slow.size = 0
            self.owner.on_text(self.key, "".join(fragments))

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closing = True
        self._pending = None
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
