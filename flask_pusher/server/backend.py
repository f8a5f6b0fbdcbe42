"""The seam under the core: where the decisions that span server processes are taken.

The core (:mod:`flask_pusher.server.core`) keeps this process's connections
and their channels; what must be decided once for every process serving an
app (is this the channel's first subscriber, the presence member's first
connection, the user's first signin; who else must hear of an event) is asked
of a :class:`Backend`. The core calls the backend's methods synchronously, with
the :class:`~flask_pusher.server.state.Effects` being filled; a backend
answers at once into them (:class:`LocalBackend`) or later, through the
core's callbacks, each returning an ``Effects`` to apply:

=============================  ==============================================
Core callback                  What the backend tells it
=============================  ==============================================
``Core.join_done``             a presence join was decided: the members, or
                               ``None`` for a full channel
``Core.relay``                 a frame for this process's
                               subscribers of a channel (member events,
                               client events from other processes)
``Core.deliver``               HTTP API events another process accepted
``Core.count_update``          a channel's subscription count changed
``Core.cache_answer``          a cache channel's last event, read elsewhere
``Core.close_user``            a user's connections are terminated
``Core.watchers_changed``      a user came online or went offline
``Core.watch_state``           who of a watchlist is online
=============================  ==============================================

The same shape as Centrifuge's ``Broker`` and ``PresenceManager`` interfaces
with in-memory defaults (https://github.com/centrifugal/centrifuge,
``broker.go``, ``presence.go``) and python-socketio's ``client_manager``
(https://python-socketio.readthedocs.io/en/latest/server.html#using-a-message-queue):
the rules never ask which backend runs. :class:`LocalBackend` is the default;
the Redis one is :class:`flask_pusher.server.redis.RedisBackend`, which falls
back to a :class:`LocalBackend` of its own while Redis is away.
"""

from __future__ import annotations

from typing import Any
from typing import Protocol
from typing import TYPE_CHECKING

from . import users
from .events import CacheMiss
from .events import ChannelEvent
from .events import MemberAdded
from .events import MemberRemoved
from .events import SubscriptionSucceeded
from .events import WatchlistEvents

if TYPE_CHECKING:
    from .core import Core
    from .state import AppState
    from .state import Channel
    from .state import Connection
    from .state import Effects

#: ``[(event, channels), ...]``: HTTP API events as the core validated them
#: (``event`` has ``name``, ``data`` and maybe ``socket_id``).
Events = list[tuple[dict[str, Any], list[str]]]


class Backend(Protocol):
    """What the core asks of the place where cross-process state lives.

    Every method is called synchronously by the core while it fills
    ``effects``, after the core changed this process's own state
    (:class:`~flask_pusher.server.state.AppState`).
    """

    def subscribed(
        self, conn: Connection, channel: Channel, occupied: bool, effects: Effects
    ) -> None:
        """``conn`` subscribed to ``channel`` (not a presence channel), before
        it is confirmed; ``occupied``: it was vacant in this process."""

    def count_changed(self, app: AppState, channel: Channel, effects: Effects) -> None:
        """This process's subscribers of ``channel`` (not presence, still
        occupied) changed: the subscription count may be news, through
        :meth:`Core.count_update <flask_pusher.server.core.Core.count_update>`."""

    def join(
        self, conn: Connection, name: str, user_id: str, user_info: Any, effects: Effects
    ) -> None:
        """Decide ``conn``'s authorized subscription to presence channel
        ``name`` as member ``user_id``: the member limit, then
        :meth:`Core.join_done <flask_pusher.server.core.Core.join_done>`."""

    def rejoin(self, conn: Connection, name: str, effects: Effects) -> None:
        """``conn`` subscribed again to presence channel ``name``: confirm
        it with the current members, changing nothing."""

    def cancel_join(self, conn: Connection, name: str) -> None:
        """``conn`` unsubscribed from ``name`` before its join was decided."""

    def left(
        self,
        conn: Connection,
        channel: Channel,
        user_id: str | None,
        vacated: bool,
        last: bool,
        effects: Effects,
    ) -> None:
        """``conn`` left ``channel`` (as presence member ``user_id``);
        ``vacated``: no subscriber is left in this process; ``last``: it was
        the member's last connection in this process."""

    def disconnected(self, conn: Connection) -> None:
        """``conn`` is gone (after it left its channels and signed out)."""

    def signed_in(self, conn: Connection, first: bool, effects: Effects) -> None:
        """``conn`` signed in (``user_id`` and ``watchlist`` are set);
        ``first``: the user's first connection in this process."""

    def signed_out(self, app: AppState, user_id: str, last: bool, effects: Effects) -> None:
        """A connection of ``user_id`` closed or signed in again; ``last``:
        the user has no connection left in this process."""

    def cache_miss(self, conn: Connection, name: str, effects: Effects) -> None:
        """``conn`` subscribed to cache channel ``name``, whose last event
        this process does not hold."""

    def count_sent(self, app: AppState, name: str, count: int, effects: Effects) -> None:
        """The core sent subscription count ``count`` of ``name`` to its subscribers."""

    def publish(self, app: AppState, events: Events) -> None:
        """HTTP API events the core accepted and delivered to this process."""

    def client_event(self, app: AppState, event: ChannelEvent, socket_id: str) -> None:
        """A client ``event`` the core relayed in this process, from ``socket_id``."""

    def terminate(self, app: AppState, user_id: str) -> None:
        """The HTTP API terminated ``user_id``'s connections in this process."""

    async def admit(self, app: AppState, address: str | None = None) -> str | None:
        """Take one of the app's ``max_connections`` slots for a new
        connection, and one of ``address``'s ``max_connections_per_address``
        slots (when ``address`` is given), counted across processes.
        ``None``: admitted; else the name of the full quota
        (``"max_connections"``, ``"max_connections_per_address"``), and
        nothing is taken
        (:mod:`flask_pusher.server.limits`). The I/O layer asks it during
        the handshake and registers the connection with the same ``address``
        (:meth:`Core.connect <flask_pusher.server.core.Core.connect>`); the
        slots are given back by :meth:`disconnected`."""
        ...

    async def take(self, app: AppState, bucket: str, amount: int, limit: int) -> bool:
        """Add ``amount`` to this second's count of the app's ``bucket``
        (``"events"``, ``"reads"``), counted across processes, unless that
        goes over ``limit`` per second: then ``False``, and nothing is added
        (:mod:`flask_pusher.server.limits`)."""
        ...


class LocalBackend:
    """The :class:`Backend` of one process: every decision from its own state.

    :param core: the core whose callbacks it answers through.
    :param state_hooks: emit the webhooks that follow from state changes
        (``channel_occupied``, ``channel_vacated``, ``member_added``,
        ``member_removed``, ``subscription_count``). Default ``True``; the
        Redis backend's fallback, while Redis is away, says ``False``: Redis
        sends them once it is back.
    """

    __slots__ = ("core", "rates", "state_hooks")

    def __init__(self, core: Core, state_hooks: bool = True) -> None:
        self.core = core
        self.state_hooks = state_hooks
        #: ``(app id, bucket)``: ``(second, count)``: the rate limits' windows.
        self.rates: dict[tuple[str, str], tuple[int, int]] = {}

    def subscribed(
        self, conn: Connection, channel: Channel, occupied: bool, effects: Effects
    ) -> None:
        if occupied and self.state_hooks:
            effects.hook(conn.app, {"name": "channel_occupied", "channel": channel.name})

    def count_changed(self, app: AppState, channel: Channel, effects: Effects) -> None:
        self.core.count_update(app, channel.name, len(channel), effects)

    def join(
        self, conn: Connection, name: str, user_id: str, user_info: Any, effects: Effects
    ) -> None:
        app = conn.app
        members = app.members(name)
        limit = app.config.max_presence_members
        first = user_id not in members
        if first and len(members) >= limit:
            self.core.join_done(conn, name, user_id, user_info, None, effects)
            return
        channel = app.channels.get(name)
        if channel is None and self.state_hooks:
            effects.hook(app, {"name": "channel_occupied", "channel": name})
        if first:
            if channel is not None:  # the others, before conn subscribes
                frame = MemberAdded(name, user_id, user_info)
                effects.broadcast(channel.targets(), frame)
            if self.state_hooks:
                hook = {"name": "member_added", "channel": name, "user_id": user_id}
                effects.hook(app, hook)
        members.setdefault(user_id, user_info)
        self.core.join_done(conn, name, user_id, user_info, members, effects)

    def rejoin(self, conn: Connection, name: str, effects: Effects) -> None:
        effects.send(conn, SubscriptionSucceeded(name, conn.app.members(name)))

    def cancel_join(self, conn: Connection, name: str) -> None:
        pass

    def left(
        self,
        conn: Connection,
        channel: Channel,
        user_id: str | None,
        vacated: bool,
        last: bool,
        effects: Effects,
    ) -> None:
        app = conn.app
        name = channel.name
        if last and user_id is not None:
            effects.broadcast(channel.targets(), MemberRemoved(name, user_id))
            if self.state_hooks:
                hook = {"name": "member_removed", "channel": name, "user_id": user_id}
                effects.hook(app, hook)
        if vacated and self.state_hooks:
            effects.hook(app, {"name": "channel_vacated", "channel": name})

    def disconnected(self, conn: Connection) -> None:
        pass

    def signed_in(self, conn: Connection, first: bool, effects: Effects) -> None:
        app = conn.app
        user_id = conn.user_id
        assert user_id is not None
        if first:
            watchers = [c for c in app.watchers.get(user_id, ()) if c is not conn]
            effects.broadcast(watchers, WatchlistEvents([("online", [user_id])]))
        if conn.watchlist:
            users.watch_state(conn, set(app.users), effects)

    def signed_out(self, app: AppState, user_id: str, last: bool, effects: Effects) -> None:
        if last:
            users.notify_watchers(app, user_id, False, effects)

    def cache_miss(self, conn: Connection, name: str, effects: Effects) -> None:
        effects.send(conn, CacheMiss(name))
        effects.hook(conn.app, {"name": "cache_miss", "channel": name})

    def count_sent(self, app: AppState, name: str, count: int, effects: Effects) -> None:
        if self.state_hooks:
            hook = {"name": "subscription_count", "channel": name, "subscription_count": count}
            effects.hook(app, hook)

    def publish(self, app: AppState, events: Events) -> None:
        pass

    def client_event(self, app: AppState, event: ChannelEvent, socket_id: str) -> None:
        pass

    def terminate(self, app: AppState, user_id: str) -> None:
        pass

    async def admit(self, app: AppState, address: str | None = None) -> str | None:
        return self.admit_now(app, address)

    def admit_now(self, app: AppState, address: str | None = None) -> str | None:
        """:meth:`admit`, at once: the core registers the connection before
        anything else runs."""
        config = app.config
        limit = config.max_connections
        if limit is not None and len(app.connections) >= limit:
            return "max_connections"
        per_address = config.max_connections_per_address
        if (
            per_address is not None
            and address is not None
            and app.addresses.get(address, 0) >= per_address
        ):
            return "max_connections_per_address"
        return None

    async def take(self, app: AppState, bucket: str, amount: int, limit: int) -> bool:
        return self.take_now(app, bucket, amount, limit)

    def take_now(self, app: AppState, bucket: str, amount: int, limit: int) -> bool:
        """:meth:`take`, at once (a fixed window of one second of the core's clock)."""
        key = (app.config.app_id, bucket)
        second = int(self.core.clock())
        start, count = self.rates.get(key, (second, 0))
        if start != second:
            count = 0
        if count + amount > limit:
            return False  # a refused request takes nothing
        self.rates[key] = (second, count + amount)
        return True
