"""Binding callbacks the way pusher-js does (``bind``, ``unbind``, ``bind_global``,
``src/core/events/dispatcher.ts``), and the asyncio way (``async for``,
``wait_for``)."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator
from collections.abc import Callable
from typing import Any

from .errors import QueueOverflow
from .protocol import Event

logger = logging.getLogger("flask_pusher.channels")

#: A callback: takes the :class:`~flask_pusher.channels.Event`.
Callback = Callable[[Event], Any]
#: The default size of an ``async for`` queue, in events.
MAX_QUEUE = 10_000


class EventStream:
    """The events a :class:`Dispatcher` emits from now on, for ``async for``.

    Bounded: once ``max_queue`` events wait unread, newer ones are dropped and the
    next read raises :class:`~flask_pusher.channels.QueueOverflow`. The iteration
    ends when the channel is unsubscribed or the client disconnected by the user.
    """

    def __init__(self, dispatcher: Dispatcher, names: frozenset[str], max_queue: int) -> None:
        self._dispatcher = dispatcher
        self._names = names
        self._queue: collections.deque[Event] = collections.deque()
        self._max = max_queue
        self._dropped = 0
        self._ready = asyncio.Event()
        self._closed = False
        dispatcher._streams.add(self)

    def _put(self, event: Event) -> None:
        if self._names and event.name not in self._names:
            return
        if len(self._queue) >= self._max:
            self._dropped += 1
        else:
            self._queue.append(event)
        self._ready.set()

    def close(self) -> None:
        """Stop: the iteration ends once the waiting events are read."""
        self._closed = True
        self._dispatcher._streams.discard(self)
        self._ready.set()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        while not self._queue:
            if self._dropped:
                dropped, self._dropped = self._dropped, 0
                raise QueueOverflow(dropped)
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        if self._dropped and len(self._queue) == self._max:
            dropped, self._dropped = self._dropped, 0
            raise QueueOverflow(dropped)
        return self._queue.popleft()


class Dispatcher:
    """Callbacks by event name, global callbacks, waiters and streams."""

    def __init__(self) -> None:
        self._callbacks: dict[str, list[Callback]] = {}
        self._global: list[Callback] = []
        self._waiters: dict[str, list[asyncio.Future[Event]]] = {}
        self._streams: set[EventStream] = set()

    def bind(self, name: str, callback: Callback) -> Callback:
        """Call ``callback(event)`` for each event named ``name``; returns ``callback``."""
        self._callbacks.setdefault(name, []).append(callback)
        return callback

    def unbind(self, name: str | None = None, callback: Callback | None = None) -> None:
        """Remove ``callback`` from ``name``; every callback of ``name`` without
        ``callback``; ``callback`` from every name without ``name``; everything
        bound by name with neither (pusher-js ``unbind``)."""
        names = [name] if name is not None else list(self._callbacks)
        for n in names:
            if callback is None:
                self._callbacks.pop(n, None)
            elif n in self._callbacks:
                self._callbacks[n] = [c for c in self._callbacks[n] if c is not callback]

    def bind_global(self, callback: Callback) -> Callback:
        """Call ``callback(event)`` for every event."""
        self._global.append(callback)
        return callback

    def unbind_global(self, callback: Callback | None = None) -> None:
        """Remove ``callback``, or every global callback."""
        self._global = [] if callback is None else [c for c in self._global if c is not callback]

    def unbind_all(self) -> None:
        """Remove every callback, by name and global."""
        self._callbacks.clear()
        self._global.clear()

    def emit(self, event: Event) -> None:
        """Give ``event`` to global callbacks, then to those bound to its name,
        then to waiters and streams. A callback that raises is logged."""
        for callback in (*self._global, *self._callbacks.get(event.name, ())):
            try:
                callback(event)
            except Exception:
                logger.exception("A callback for %r raised", event.name)
        waiters = self._waiters.pop(event.name, None)
        if waiters:
            for future in waiters:
                if not future.done():
                    future.set_result(event)
        for stream in self._streams:
            stream._put(event)

    async def wait_for(self, name: str, timeout: float | None = None) -> Event:
        """The next event named ``name``.

        :param timeout: seconds; ``None`` waits for ever.
        :raises TimeoutError: if none arrives in time.
        """
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(name, []).append(future)
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"No {name!r} event within {timeout} s") from None
        finally:
            waiters = self._waiters.get(name)
            if waiters and future in waiters:
                waiters.remove(future)

    def events(self, *names: str, max_queue: int = MAX_QUEUE) -> EventStream:
        """A stream of the events from now on (only ``names`` if given), for
        ``async for``; at most ``max_queue`` unread (see :class:`EventStream`)."""
        return EventStream(self, frozenset(names), max_queue)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self.events()

    def _close_streams(self) -> None:
        for stream in list(self._streams):
            stream.close()
