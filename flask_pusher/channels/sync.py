"""The client for code without asyncio: scripts, workers, sync tests.

:class:`SyncChannelsClient` runs a :class:`~flask_pusher.channels.ChannelsClient`
on an event loop in a background thread of its own. Each
:class:`SyncChannel` records the events it receives (at most ``max_history``),
and :meth:`SyncChannel.wait_for` returns them in order, whether they arrived
before or after the call, so a test never races the server.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable
from collections.abc import Coroutine
from types import TracebackType
from typing import Any
from typing import TypeVar

from .channel import Channel
from .channel import Members
from .client import ChannelsClient
from .events import Callback
from .protocol import Event

T = TypeVar("T")
#: Events kept per channel by the sync facade.
MAX_HISTORY = 10_000


class History:
    """The events a dispatcher emitted, in order, with a reading position per name.

    Bounded to ``max_history`` events: older ones are forgotten (and counted in
    :attr:`forgotten`).
    """

    def __init__(self, max_history: int = MAX_HISTORY) -> None:
        self._events: collections.deque[tuple[int, Event]] = collections.deque(maxlen=max_history)
        self._seq = 0
        self._read: dict[str | None, int] = {}
        self._cond = threading.Condition()
        self.forgotten = 0

    def add(self, event: Event) -> None:
        with self._cond:
            if len(self._events) == self._events.maxlen:
                self.forgotten += 1
            self._seq += 1
            self._events.append((self._seq, event))
            self._cond.notify_all()

    def events(self, name: str | None = None) -> list[Event]:
        """The events kept (named ``name`` if given), oldest first."""
        with self._cond:
            return [e for _, e in self._events if name is None or e.name == name]

    def wait_for(self, name: str | None = None, timeout: float | None = 10.0) -> Event:
        """The first event named ``name`` (any event for ``None``) not yet
        returned by this method for the same ``name``.

        :raises TimeoutError: if none arrives within ``timeout`` seconds.
        """

        def find() -> Event | None:
            after = self._read.get(name, 0)
            for seq, event in self._events:
                if seq > after and (name is None or event.name == name):
                    self._read[name] = seq
                    return event
            return None

        with self._cond:
            found: list[Event | None] = [None]

            def ready() -> bool:
                found[0] = find()
                return found[0] is not None

            if not self._cond.wait_for(ready, timeout):
                raise TimeoutError(f"No {name or 'event'!r} within {timeout} s")
            event = found[0]
            assert event is not None
            return event


class SyncChannel:
    """A channel of a :class:`SyncChannelsClient`.

    :attr name: the channel name.
    :attr history: every event it received (see :class:`History`).
    """

    def __init__(self, owner: SyncChannelsClient, channel: Channel, max_history: int) -> None:
        self._owner = owner
        self.channel = channel
        self.name = channel.name
        self.history = History(max_history)
        channel.bind_global(self.history.add)

    def __repr__(self) -> str:
        return f"<SyncChannel {self.name!r} subscribed={self.subscribed}>"

    @property
    def subscribed(self) -> bool:
        return self.channel.subscribed

    @property
    def subscription_count(self) -> int | None:
        return self.channel.subscription_count

    @property
    def members(self) -> Members:
        """The presence members (a presence channel only).

        :raises TypeError: for another kind of channel.
        """
        members = getattr(self.channel, "members", None)
        if not isinstance(members, Members):
            raise TypeError(f"{self.name} is not a presence channel")
        return members

    def wait_for(self, name: str | None = None, timeout: float | None = 10.0) -> Event:
        """The next event named ``name`` this channel received, in arrival order,
        including those that arrived before the call (see :class:`History`).

        :raises TimeoutError: if none arrives in ``timeout`` seconds.
        """
        return self.history.wait_for(name, timeout)

    def events(self, name: str | None = None) -> list[Event]:
        """The events received so far (named ``name`` if given)."""
        return self.history.events(name)

    def trigger(self, event: str, data: Any, timeout: float = 10.0) -> bool:
        """Send a client event (see :meth:`flask_pusher.channels.Channel.trigger`)."""
        return self._owner.call(self.channel.trigger(event, data), timeout)

    def bind(self, name: str, callback: Callback) -> Callback:
        """Call ``callback(event)`` for each event ``name`` (on the client's thread)."""
        return self._owner._in_loop(lambda: self.channel.bind(name, callback))


class SyncChannelsClient:
    """A :class:`~flask_pusher.channels.ChannelsClient` for code without asyncio.

    ::

        with SyncChannelsClient("KEY", cluster="eu") as client:
            orders = client.subscribe("orders")
            print(orders.wait_for("created", timeout=30).data)

    Takes the same arguments as :class:`~flask_pusher.channels.ChannelsClient`,
    plus ``max_history``, the events each channel keeps (default 10,000). The
    connection's callbacks run on the client's own thread.
    """

    def __init__(self, key: str, *, max_history: int = MAX_HISTORY, **options: Any) -> None:
        self._max_history = max_history
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="pusher-client", daemon=True
        )
        self._thread.start()
        self._channels: dict[str, SyncChannel] = {}
        try:
            self.client: ChannelsClient = self._in_loop(lambda: ChannelsClient(key, **options))
        except BaseException:
            self._stop_loop()
            raise
        self.user = History(max_history)
        self._in_loop(lambda: self.client.user.bind_global(self.user.add))

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the client's loop; its result.

        :raises TimeoutError: if it takes more than ``timeout`` seconds.
        """
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def _in_loop(self, fn: Callable[[], T]) -> T:
        async def wrapped() -> T:
            return fn()

        return self.call(wrapped())

    @property
    def state(self) -> str:
        """The connection state (see :class:`~flask_pusher.channels.Connection`)."""
        return self.client.connection.state

    @property
    def socket_id(self) -> str | None:
        """The ``socket_id`` while connected."""
        return self.client.connection.socket_id

    def connect(self, timeout: float = 30.0) -> SyncChannelsClient:
        """Connect (see :meth:`flask_pusher.channels.ChannelsClient.connect`)."""
        self.call(self.client.connect(timeout))
        return self

    def subscribe(self, name: str, timeout: float | None = 10.0) -> SyncChannel:
        """Subscribe to ``name`` and wait until it succeeded (``timeout`` ``None``:
        do not wait).

        :raises SubscriptionError: if it is refused (``AuthError`` with the
            endpoint's status).
        :raises ValueError: for an invalid channel name.
        :raises TimeoutError: if it does not succeed in time.
        """
        channel = self._in_loop(lambda: self.client.subscribe(name))
        synced = self._channels.get(name)
        if synced is None or synced.channel is not channel:
            synced = self._channels[name] = self._in_loop(
                lambda: SyncChannel(self, channel, self._max_history)
            )
        if timeout is not None:
            self.call(channel.wait_subscribed(timeout))
        return synced

    def unsubscribe(self, name: str) -> None:
        """Leave ``name``."""
        self._channels.pop(name, None)
        self._in_loop(lambda: self.client.unsubscribe(name))

    def signin(self, timeout: float | None = 10.0) -> dict[str, Any] | None:
        """Sign in and wait (unless ``timeout`` is ``None``); the ``user_data``.
        Events sent to the user land in :attr:`user` (a :class:`History`).

        :raises AuthError: if the user authentication fails.
        """
        self._in_loop(self.client.signin)
        if timeout is None:
            return None
        return self.call(self.client.user.wait_signed_in(timeout))

    def bind_connection(self, name: str, callback: Callable[[Any], Any]) -> None:
        """Bind a connection callback (``state_change``, ``error``...)."""
        self._in_loop(lambda: self.client.connection.bind(name, callback))

    def disconnect(self, timeout: float = 10.0) -> None:
        """Disconnect and stop the client's thread. Safe to call twice."""
        if not self._thread.is_alive():
            return
        try:
            self.call(self.client.disconnect(), timeout)
        finally:
            self._stop_loop()

    close = disconnect

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> SyncChannelsClient:
        return self.connect()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.disconnect()
