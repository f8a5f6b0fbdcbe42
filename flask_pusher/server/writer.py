"""The write path: the core's effects to sockets, coalesced, with back-pressure.

:class:`Writer` queues the frames and closes of every
:class:`~flask_pusher.server.state.Effects` applied during one loop iteration
and writes them together at its end: each typed event encoded once
(``encode()``, then :func:`frame_bytes`), one write per connection. It keeps
the only map from the core's connections to their sockets, and
:meth:`Writer.write` is the only path to a socket: it sends nothing to a
WebSocket whose close has begun (RFC 6455 section 5.5.1,
https://www.rfc-editor.org/rfc/rfc6455#section-5.5.1: no data frame after a
Close frame), and drops a client whose write buffer passes
:data:`MAX_WRITE_BUFFER`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from typing import TYPE_CHECKING

from . import events
from .config import AppConfig
from .core import Core
from .metrics import IOCounts
from .state import AppState
from .state import Connection
from .state import Effects
from .state import Send
from .wsocket import MAX_WRITE_BUFFER
from .wsocket import PusherSocket

if TYPE_CHECKING:
    from .console import Console

log = logging.getLogger("flask_pusher.server")

#: Seconds after a flush during which the writer counts as busy.
BUSY_WINDOW = 0.005
#: Seconds the next flush waits after a big one within :data:`BUSY_WINDOW`, so
#: that back-to-back fan-outs share system calls.
COALESCE_DELAY = 0.004
#: Connections an event of a flush must go to for the flush to count as a
#: fan-out. A client event to a private channel or a trigger to a few
#: subscribers goes out at the end of the same loop iteration, however many
#: arrive together; after an event to a channel of hundreds, what follows
#: within :data:`BUSY_WINDOW` waits :data:`COALESCE_DELAY` to share those
#: writes. (The audience, not the writes of a flush: those grow with the
#: wait itself, which would make a busy stream of small events wait ever after.)
COALESCE_MIN_AUDIENCE = 64


def frame_bytes(text: str) -> bytes:
    """An unmasked, uncompressed WebSocket text frame (RFC 6455 section 5.2) for ``text``."""
    try:
        payload = text.encode()
    except UnicodeEncodeError:  # a lone surrogate, decoded from a JSON \\ud800 escape
        payload = json.dumps(json.loads(text), separators=(",", ":")).encode()
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


#: The ``pusher:pong`` frame, encoded once (:meth:`Writer.pong`).
PONG_FRAME = frame_bytes(events.PONG.encode())


def close_reason(text: str) -> bytes:
    """A close reason: at most 123 bytes (RFC 6455 section 5.5), still valid UTF-8."""
    return text.encode()[:123].decode("utf-8", "ignore").encode()


class Writer:
    """Applies the core's effects: frames and closes to sockets, webhook
    events to ``hook``.

    :param core: the core, told of each connection this writer drops or closes.
    :param hook: where each webhook event of the effects goes (``app``, the
        event dict): the webhook sender's ``emit``, or the Redis backend's ``hook``.
    :param counts: the metrics' counters by app, or ``None`` (nothing counted).
    :param console: the debug console, shown the webhook events while it
        watches, or ``None``.
    """

    __slots__ = (
        "_closes",
        "_flush_scheduled",
        "_pending",
        "console",
        "core",
        "counts",
        "hook",
        "idle",
        "last_audience",
        "last_flush",
        "sockets",
    )

    def __init__(
        self,
        core: Core,
        hook: Callable[[AppConfig, dict[str, Any]], None],
        counts: dict[AppState, IOCounts] | None = None,
        console: Console | None = None,
    ) -> None:
        self.core = core
        self.hook = hook
        self.counts = counts
        self.console = console
        #: The only map from the core's connections to sockets.
        self.sockets: dict[Connection, PusherSocket[Connection]] = {}
        #: Set while no socket is open (shutdown waits on it).
        self.idle = asyncio.Event()
        self.idle.set()
        #: The loop time of the last flush.
        self.last_flush = float("-inf")
        #: The most connections one event of the last flush went to.
        self.last_audience = 0
        self._pending: list[Send] = []
        self._closes: list[tuple[Connection, int, str]] = []
        self._flush_scheduled = False

    def apply(self, effects: Effects) -> None:
        """Queue frames and closes for the end of this loop iteration; emit webhooks.

        Frames queued in one iteration are written together: each frame is
        encoded once, and a connection that gets several frames gets them in
        one write (one system call), in order. Closes follow the frames.
        The flush runs at the end of this loop iteration (``call_soon``),
        unless the last one, less than :data:`BUSY_WINDOW` seconds ago, sent an
        event to :data:`COALESCE_MIN_AUDIENCE` connections or more: then it waits
        :data:`COALESCE_DELAY` seconds, gathering what arrives meanwhile
        into the same writes.
        """
        if effects.sends or effects.closes:
            self._pending.extend(effects.sends)
            self._closes.extend((c.conn, c.code, c.reason) for c in effects.closes)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                loop = asyncio.get_running_loop()
                if (
                    self.last_audience >= COALESCE_MIN_AUDIENCE
                    and loop.time() - self.last_flush < BUSY_WINDOW
                ):
                    # Busy with fan-out: gather what arrives in the next moment
                    # into the same writes.
                    loop.call_later(COALESCE_DELAY, self.flush)
                else:
                    loop.call_soon(self.flush)
        if effects.webhooks:
            console = self.console
            if console is not None and console.watching:
                console.effects(effects)
            hook = self.hook
            for webhook in effects.webhooks:
                hook(webhook.app, webhook.event)

    def flush(self) -> None:
        """Write what was queued: one write per connection, then the closes."""
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        closes, self._closes = self._closes, []
        # Consecutive frames to the very same audience (one channel's
        # unchanged subscriber tuple) are joined into one write each.
        groups: list[tuple[Sequence[Connection], list[bytes]]] = []
        for send in pending:
            if groups and groups[-1][0] is send.to:
                groups[-1][1].append(frame_bytes(send.event.encode()))
            else:
                groups.append((send.to, [frame_bytes(send.event.encode())]))
        write = self.write
        counts = self.counts
        if len(groups) == 1:
            conns, parts = groups[0]
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            if counts is not None:  # per flush, not per write
                c = counts[conns[0].app]
                c.ws_messages_sent += len(parts) * len(conns)
                c.socket_transmitted_bytes += len(data) * len(conns)
            for conn in conns:
                write(conn, data)
            self.last_audience = len(conns)
        elif groups:
            batches: dict[Connection, list[bytes]] = {}
            audience = 0
            for conns, parts in groups:
                if len(conns) > audience:
                    audience = len(conns)
                if counts is not None:
                    c = counts[conns[0].app]
                    c.ws_messages_sent += len(parts) * len(conns)
                    c.socket_transmitted_bytes += sum(map(len, parts)) * len(conns)
                for conn in conns:
                    queued = batches.get(conn)
                    if queued is None:
                        batches[conn] = list(parts)
                    else:
                        queued.extend(parts)
            for conn, queued in batches.items():
                write(conn, queued[0] if len(queued) == 1 else b"".join(queued))
            self.last_audience = audience
        else:
            self.last_audience = 0
        for conn, code, reason in closes:
            self.begin_close(conn, code, reason)
        self.last_flush = asyncio.get_running_loop().time()

    def greet(self, conn: Connection, answer: bytes, greeting: Effects) -> None:
        """Write the opening handshake's ``answer`` (its ``101``) and the first
        frame ``greeting`` has for ``conn`` (``pusher:connection_established``)
        in one write, one system call and one TCP segment instead of two; then
        apply the rest of ``greeting`` as :meth:`apply` does."""
        sends = greeting.sends
        if sends and len(sends[0].to) == 1 and sends[0].to[0] is conn:
            first = frame_bytes(sends.pop(0).event.encode())
            counts = self.counts
            if counts is not None:
                c = counts[conn.app]
                c.ws_messages_sent += 1
                c.socket_transmitted_bytes += len(first)
            answer += first
        self.write(conn, answer)
        self.apply(greeting)

    def pong(self, conn: Connection) -> None:
        """Answer ``pusher:ping`` at once with the pre-encoded ``pusher:pong``
        frame (no effects, no flush: a ping costs one write)."""
        counts = self.counts
        if counts is not None:
            c = counts[conn.app]
            c.ws_messages_sent += 1
            c.socket_transmitted_bytes += len(PONG_FRAME)
        self.write(conn, PONG_FRAME)

    def write(self, conn: Connection, data: bytes) -> None:
        """Write pre-encoded frames (or, first, the handshake's ``101`` answer)
        to ``conn`` unless its close has begun."""
        sock = self.sockets.get(conn)
        if sock is None or sock.closing:
            return  # nothing after a Close frame (RFC 6455 section 5.5.1)
        transport = sock.transport
        if transport.is_closing():
            return
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            # A subscriber that does not read must not hold up the others, nor
            # keep its buffer and its subscriptions (a presence member others
            # still see) forever. A close frame would wait behind megabytes that
            # will never be read, so the connection is dropped at once.
            log.debug("dropping %s: write buffer full", conn.socket_id)
            transport.abort()
            self.apply(self.core.disconnect(conn))
            return
        transport.write(data)

    def begin_close(self, conn: Connection, code: int, reason: str) -> None:
        """Close ``conn``: the core forgets it now, the socket closes after the
        client's Close reply (or :data:`~.wsocket.CLOSE_TIMEOUT` seconds)."""
        self.apply(self.core.disconnect(conn))
        sock = self.sockets.get(conn)
        if sock is not None:
            log.debug("closing %s with %d: %s", conn.socket_id, code, reason)
            sock.close(code, close_reason(reason).decode())
