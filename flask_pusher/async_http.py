"""Sending the official client's signed requests from asyncio, over aiohttp.

pusher-http-python 3.3 ships an asyncio backend (``pusher.aiohttp.AsyncIOBackend``),
but it opens a new ``aiohttp.ClientSession`` (a new connection, and a TLS handshake)
for every request, and it turns every method of the client it is given into a
coroutine. The extension keeps its synchronous client and sends the same signed
``pusher.http.Request`` objects here instead, on one session per event loop.

Flask runs each ``async def`` view in an event loop of its own (``asgiref``'s
``async_to_sync`` calls ``asyncio.run``), so a session is tied to its loop and closed
when that loop shuts down: an async generator registered with the loop is finalised
by ``loop.shutdown_asyncgens()``, which ``asyncio.run`` calls, and closes the
session. :meth:`AsyncSender.aclose` closes it earlier, for loops run by hand.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator
from typing import Any
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from pusher.http import process_response

if TYPE_CHECKING:
    import aiohttp
    from pusher.http import Request


def _import_aiohttp() -> Any:
    try:
        import aiohttp
    except ImportError:
        raise RuntimeError(
            "The *_async methods need aiohttp: pip install aiohttp"
            ' (the "flask-pusher[server]" extra installs it).'
        ) from None
    return aiohttp


class _LoopSession:
    """The session of one event loop, and the async generator that closes it."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.closer = self._close_at_shutdown()

    async def _close_at_shutdown(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            await self.session.close()


class AsyncSender:
    """Sends signed requests with aiohttp, on one session per running event loop.

    :param timeout: the total timeout of a request, in seconds (``PUSHER_TIMEOUT``).
    """

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._lock = threading.Lock()
        self._sessions: WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopSession] = (
            WeakKeyDictionary()
        )

    async def session(self) -> aiohttp.ClientSession:
        """The running loop's session, created at the first request on that loop."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._sessions.get(loop)
        if entry is not None and not entry.session.closed:
            return entry.session
        aiohttp = _import_aiohttp()
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        entry = _LoopSession(aiohttp.ClientSession(timeout=timeout))
        with self._lock:
            self._sessions[loop] = entry
        # The first step registers the generator with the loop's asyncgen hooks, so
        # that loop.shutdown_asyncgens() finalises it, which closes the session.
        await entry.closer.__anext__()
        return entry.session

    async def send(self, request: Request) -> Any:
        """Send ``request``; the decoded JSON answer.

        :raises pusher.errors.PusherError: the HTTP API answered with an error.
        :raises aiohttp.ClientError: the HTTP API could not be reached.
        :raises asyncio.TimeoutError: no answer within the timeout.
        """
        session = await self.session()
        async with session.request(
            request.method,
            f"{request.base_url}{request.path}",
            params=request.query_params,
            data=request.body,
            headers=request.headers,
        ) as response:
            body = await response.text("utf-8")
        return process_response(response.status, body)

    async def aclose(self) -> None:
        """Close the running loop's session now, if it has one."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._sessions.pop(loop, None)
        if entry is not None:
            await entry.closer.aclose()
