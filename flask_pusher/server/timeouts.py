"""Bounded time for a slow or silent HTTP peer (single node).

aiohttp (before 3.11) puts no limit on how long a client may take to send a
request's head: a socket that never sends anything, sends its request line a
byte every few seconds, or never finishes its WebSocket opening handshake
holds its connection for ever. :class:`RequestWatchdog` closes an HTTP
connection that has been without a request in progress for
:data:`REQUEST_TIMEOUT` seconds: since it was accepted, or since its previous
answer (an idle keep-alive connection, which nginx's ``keepalive_timeout``
also closes). A request in progress is a handler running (a console's event
stream may run for hours); the body it reads is bounded by
:data:`BODY_TIMEOUT` (:func:`read_within`). In all, as nginx's defaults give
(``client_header_timeout`` and ``client_body_timeout`` of 60 s,
https://nginx.org/en/docs/http/ngx_http_core_module.html#client_header_timeout),
a client sending a byte every few seconds holds a connection for about a
minute at most.

Once the WebSocket handshake is done, the connection is the Pusher
protocol's: a client that never speaks is pinged after ``activity_timeout``
and closed with 4201 after ``pong_timeout`` more (reference §5.4).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Collection
from collections.abc import Iterable
from typing import Any
from typing import Protocol
from typing import TypeVar

from aiohttp import web

#: Seconds an HTTP connection may stay without a request in progress: to send
#: its first request's head after connecting, or its next one after an answer.
REQUEST_TIMEOUT = 60.0
#: Seconds a handler waits for a request's whole body.
BODY_TIMEOUT = 60.0

T = TypeVar("T")


class Accepting(Protocol):
    """What accepts connections: each has a ``transport`` (``None`` once gone)."""

    @property
    def connections(self) -> Collection[Any]: ...


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def read_within(awaitable: Awaitable[T]) -> T:
    """``await awaitable`` (reading a request body) for at most :data:`BODY_TIMEOUT`.

    :raises asyncio.TimeoutError: when the body takes longer.
    """
    return await asyncio.wait_for(awaitable, BODY_TIMEOUT)


class _State:
    __slots__ = ("busy", "since")

    def __init__(self, since: float) -> None:
        self.busy = 0
        self.since = since


class RequestWatchdog:
    """Closes HTTP connections that hold no request in progress for too long.

    Put it in the application as ``app[WATCHDOG]`` before adding routes with
    :func:`~flask_pusher.server.http_api.add_route` (which wraps each handler
    with :meth:`wrap`: one call per request, where an aiohttp middleware cost
    about 50 us), give :meth:`watch` each ``web.Server`` that accepts
    connections (``AppRunner.server``) and each
    :class:`~flask_pusher.server.frontdoor.Entrance`, and call :meth:`sweep`
    every second or so.
    """

    def __init__(self) -> None:
        self._servers: list[Accepting] = []
        self._state: dict[Any, _State] = {}

    def watch(self, server: Accepting | None) -> None:
        """Watch the connections ``server`` (an ``AppRunner.server``, or an
        :class:`~flask_pusher.server.frontdoor.Entrance`) accepts."""
        if server is not None:
            self._servers.append(server)

    def moved(self, old: Any, new: Any) -> None:
        """The connection ``old`` (a front door) is now ``new`` (aiohttp's
        handler): its time without a request goes on, not from zero."""
        state = self._state.pop(old, None)
        if state is not None:
            self._state[new] = state

    def wrap(self, handler: Handler) -> Handler:
        """``handler``, marking its connection busy while it runs."""
        states = self._state

        async def watched(request: web.Request) -> web.StreamResponse:
            protocol = request.protocol
            state = states.get(protocol)
            if state is None:
                state = states[protocol] = _State(0.0)
            state.busy += 1
            try:
                return await handler(request)
            finally:
                state.busy -= 1
                state.since = asyncio.get_running_loop().time()

        return watched

    def sweep(self, now: float) -> int:
        """Abort each watched connection idle for over :data:`REQUEST_TIMEOUT`
        seconds (``now`` on the event loop's clock); forget connections that
        are gone. Returns how many were aborted."""
        live = set(self._connections())
        aborted = 0
        for handler in live:
            state = self._state.get(handler)
            if state is None:  # first seen: it was accepted at most a sweep ago
                self._state[handler] = _State(now)
                continue
            if state.busy or now - state.since <= REQUEST_TIMEOUT:
                continue
            transport = handler.transport
            if transport is not None:
                transport.abort()
                aborted += 1
        for handler in [h for h in self._state if h not in live]:
            del self._state[handler]
        return aborted

    def _connections(self) -> Iterable[Any]:
        for server in self._servers:
            yield from server.connections


#: The :class:`RequestWatchdog` of an application, which
#: :func:`~flask_pusher.server.http_api.add_route` wraps handlers for.
WATCHDOG = web.AppKey("watchdog", RequestWatchdog)
