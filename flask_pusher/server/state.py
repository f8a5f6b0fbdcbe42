"""The server's state, and :class:`Effects`, what an operation asks the I/O layer to do.

:class:`AppState` is this process's channel and presence state: the core reads
and changes it only through its methods (:meth:`AppState.subscribe`,
:meth:`AppState.add_member`, :meth:`AppState.counts`, ...). What spans several
processes is a backend's (:mod:`flask_pusher.server.backend`), which reads this
state and never the other way round.
Nothing here holds a socket: a :class:`Connection` is the core's record of a
client, and the I/O layer keeps its own map from connections to sockets.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import Protocol

from .config import AppConfig
from .events import ProtocolError
from .events import ServerEvent
from .throttle import CountThrottle


@dataclass(eq=False, slots=True)
class Connection:
    """One client connection, as the core knows it.

    ``closing`` is set once a close was decided (by the core or the I/O layer):
    from then on nothing more is sent to it.
    """

    socket_id: str
    app: AppState
    last_seen: float
    channels: set[str] = field(default_factory=set)
    presence: dict[str, str] | None = None  # channel -> user_id, created on first use
    user_id: str | None = None
    user_info: Any = None
    watchlist: tuple[str, ...] = ()
    ping_sent: float | None = None
    client_events: collections.deque[float] | None = None  # created on first use
    closing: bool = False
    closed: bool = False
    #: When it connected (the core's clock): authorized connections count from here.
    opened_at: float = 0.0
    #: When its budget of subscription changes is full again
    #: (:func:`flask_pusher.server.limits.spend`); ``None``: full.
    full_at: float | None = None
    #: The client's address, kept only for an app with ``max_connections_per_address``.
    address: str | None = None


@dataclass(eq=False, slots=True)
class Member:
    """A presence member: one user, possibly over several connections."""

    user_info: Any
    connections: set[Connection] = field(default_factory=set)


class Channel:
    """An occupied channel: its subscribers and presence members.

    It is forgotten when its last subscriber leaves. :meth:`targets` returns
    the same tuple until the subscribers change, so the I/O layer can merge
    consecutive broadcasts to the same audience into one write each.
    """

    __slots__ = ("_snapshot", "_subscribers", "members", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._subscribers: dict[Connection, None] = {}
        self._snapshot: tuple[Connection, ...] | None = None
        self.members: dict[str, Member] = {}

    def add(self, conn: Connection) -> None:
        """Add a subscriber."""
        self._subscribers[conn] = None
        self._snapshot = None

    def remove(self, conn: Connection) -> None:
        """Remove a subscriber, if subscribed."""
        if self._subscribers.pop(conn, False) is None:
            self._snapshot = None

    def __len__(self) -> int:
        return len(self._subscribers)

    def __contains__(self, conn: object) -> bool:
        return conn in self._subscribers

    def targets(self) -> tuple[Connection, ...]:
        """The subscribers, in subscription order, as a tuple."""
        if self._snapshot is None:
            self._snapshot = tuple(self._subscribers)
        return self._snapshot

    def others(self, conn: Connection) -> list[Connection]:
        """The subscribers but ``conn``."""
        return [c for c in self._subscribers if c is not conn]


@dataclass(frozen=True, slots=True)
class ChannelCounts:
    """What the HTTP API reports of a channel: subscriptions and presence users."""

    subscription_count: int
    user_count: int


class StateView(Protocol):
    """What the HTTP API's reads need: :class:`AppState` (this process) or a
    :class:`Snapshot` (read from a backend's shared store)."""

    def members(self, name: str) -> dict[str, Any]: ...

    def counts(self, name: str) -> ChannelCounts | None: ...

    def occupied(self, prefix: str = "") -> Iterator[tuple[str, ChannelCounts]]: ...


class Snapshot:
    """A :class:`StateView` over counts and members read beforehand.

    :param counts: ``{channel: ChannelCounts}`` of the occupied channels read.
    :param members: ``{channel: {user_id: user_info}}`` of the presence channels read.
    """

    __slots__ = ("_counts", "_members")

    def __init__(
        self, counts: dict[str, ChannelCounts], members: dict[str, dict[str, Any]] | None = None
    ) -> None:
        self._counts = counts
        self._members = members or {}

    def members(self, name: str) -> dict[str, Any]:
        return self._members.get(name, {})

    def counts(self, name: str) -> ChannelCounts | None:
        return self._counts.get(name)

    def occupied(self, prefix: str = "") -> Iterator[tuple[str, ChannelCounts]]:
        for name, counts in self._counts.items():
            if name.startswith(prefix):
                yield name, counts


class AppState:
    """Everything the server knows about one app, in this process's memory."""

    __slots__ = (
        "addresses",
        "cache",
        "channels",
        "config",
        "connections",
        "count_throttle",
        "refused",
        "users",
        "watched",
        "watchers",
    )

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self.connections: dict[str, Connection] = {}
        self.channels: dict[str, Channel] = {}
        self.users: dict[str, set[Connection]] = {}
        self.watchers: dict[str, set[Connection]] = {}
        self.cache: dict[str, tuple[str, str, float]] = {}
        #: When subscription counts may be sent, by channel name.
        self.count_throttle: CountThrottle[str] = CountThrottle()
        #: Set by the I/O layer while a debug console watches: the core's
        #: webhook events are then recorded even for an app without webhooks.
        self.watched = False
        #: Refusals by the limits of :mod:`flask_pusher.server.limits`, by
        #: config field (``max_connections``, ...): the ``limit_refusals_total`` metric.
        self.refused: dict[str, int] = {}
        #: Connections by client address (of an app with
        #: ``max_connections_per_address`` only).
        self.addresses: dict[str, int] = {}

    # -- channels ---------------------------------------------------------

    def subscribe(self, conn: Connection, name: str) -> tuple[Channel, bool]:
        """Add ``conn`` to channel ``name``; return it and whether it was vacant."""
        channel = self.channels.get(name)
        occupied = channel is None
        if channel is None:
            channel = self.channels[name] = Channel(name)
        channel.add(conn)
        return channel, occupied

    def unsubscribe(self, conn: Connection, channel: Channel) -> bool:
        """Remove ``conn`` from ``channel``; return whether it is now vacant."""
        channel.remove(conn)
        if len(channel):
            return False
        del self.channels[channel.name]
        self.count_throttle.forget(channel.name)
        return True

    def add_member(self, channel: Channel, user_id: str, user_info: Any, conn: Connection) -> bool:
        """Count ``conn`` as a connection of member ``user_id``; return whether
        the user is new to the channel."""
        member = channel.members.get(user_id)
        first = member is None
        if member is None:
            member = channel.members[user_id] = Member(user_info)
        member.connections.add(conn)
        return first

    def remove_member(self, channel: Channel, user_id: str, conn: Connection) -> bool:
        """Forget one connection of ``user_id``; return whether it was the last."""
        member = channel.members.get(user_id)
        if member is None:
            return False
        member.connections.discard(conn)
        if member.connections:
            return False
        del channel.members[user_id]
        return True

    def members(self, name: str) -> dict[str, Any]:
        """``{user_id: user_info}`` of a presence channel (empty if vacant)."""
        channel = self.channels.get(name)
        if channel is None:
            return {}
        return {uid: m.user_info for uid, m in channel.members.items()}

    def counts(self, name: str) -> ChannelCounts | None:
        """The counts of channel ``name``, or ``None`` if it is vacant."""
        channel = self.channels.get(name)
        if channel is None:
            return None
        return ChannelCounts(len(channel), len(channel.members))

    def occupied(self, prefix: str = "") -> Iterator[tuple[str, ChannelCounts]]:
        """The occupied channels whose names start with ``prefix``, with counts."""
        for name, channel in self.channels.items():
            if name.startswith(prefix):
                yield name, ChannelCounts(len(channel), len(channel.members))


# -- effects ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Write one frame, ``event``, to every connection of ``to``, in order;
    the I/O layer encodes it once for all of them."""

    to: Sequence[Connection]
    event: ServerEvent

    @property
    def frame(self) -> str:
        """The frame's JSON text (encoded at each call)."""
        return self.event.encode()


@dataclass(frozen=True, slots=True)
class Close:
    """Close ``conn`` with the WebSocket close ``code`` and ``reason``."""

    conn: Connection
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Webhook:
    """Emit one webhook event of ``app`` (a dict as Pusher's webhooks carry it)."""

    app: AppConfig
    event: dict[str, Any]


class Effects:
    """What one core operation asks the I/O layer to do, in order per kind.

    :ivar sends: :class:`Send` entries, each frame encoded once for all its targets.
    :ivar closes: :class:`Close` entries, carried out after the sends.
    :ivar webhooks: :class:`Webhook` entries.
    :ivar result: what the operation answers: the new :class:`Connection` of
        :meth:`~flask_pusher.server.core.Core.connect`, the JSON body of an HTTP
        API operation, else ``None``.
    """

    __slots__ = ("closes", "result", "sends", "webhooks")

    def __init__(self) -> None:
        self.sends: list[Send] = []
        self.closes: list[Close] = []
        self.webhooks: list[Webhook] = []
        self.result: Any = None

    def send(self, conn: Connection, frame: ServerEvent) -> None:
        """Queue ``frame`` for one connection."""
        self.sends.append(Send((conn,), frame))

    def broadcast(self, conns: Sequence[Connection], frame: ServerEvent) -> None:
        """Queue one ``frame`` for several connections (encoded once)."""
        if conns:
            self.sends.append(Send(conns, frame))

    def close(self, conn: Connection, code: int, reason: str) -> None:
        """Queue a ``pusher:error`` frame with ``reason`` and ``code``, then a
        close with ``code`` (https://pusher.com/docs/channels/library_auth_reference/pusher-websockets-protocol/#error-codes).

        Once a connection is closing, later closes are ignored and the I/O
        layer sends it nothing more.
        """
        if not conn.closing:
            self.send(conn, ProtocolError(reason, code))
            conn.closing = True
            self.closes.append(Close(conn, code, reason))

    def hook(self, app: AppState, event: dict[str, Any]) -> None:
        """Queue a webhook event, if the app has webhooks or a console watches it."""
        if app.config.webhooks or app.watched:
            self.webhooks.append(Webhook(app.config, event))
