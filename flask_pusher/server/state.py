"""The server's state: connections, channels, presence members, apps, and
:class:`Effects`, what an operation asks the I/O layer to do (reference §5)."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from .. import names
from . import protocol
from .config import AppConfig

is_presence = names.is_presence
is_private = names.is_private
is_cache = names.is_cache


@dataclass(eq=False, slots=True)
class Connection:
    """One client connection. ``transport`` belongs to the I/O layer."""

    socket_id: str
    app: AppState
    last_seen: float
    transport: Any = None
    channels: set[str] = field(default_factory=set)
    presence: dict[str, str] = field(default_factory=dict)
    user_id: str | None = None
    user_info: Any = None
    watchlist: tuple[str, ...] = ()
    ping_sent: float | None = None
    client_events: collections.deque[float] | None = None  # created on first use
    closing: bool = False
    closed: bool = False


@dataclass(eq=False)
class Member:
    """A presence member: one user, possibly over several connections."""

    user_info: Any
    connections: set[Connection] = field(default_factory=set)


@dataclass(eq=False)
class Channel:
    """An occupied channel (it is forgotten when its last subscriber leaves)."""

    name: str
    subscribers: dict[Connection, None] = field(default_factory=dict)
    members: dict[str, Member] = field(default_factory=dict)
    count_sent_at: float = float("-inf")
    _snapshot: tuple[Connection, ...] | None = None

    def targets(self) -> tuple[Connection, ...]:
        """The subscribers as a tuple, the same object until they change, so
        the I/O layer can merge consecutive broadcasts to the same audience."""
        if self._snapshot is None:
            self._snapshot = tuple(self.subscribers)
        return self._snapshot


@dataclass(eq=False)
class AppState:
    """Everything the server knows about one app."""

    config: AppConfig
    connections: dict[str, Connection] = field(default_factory=dict)
    channels: dict[str, Channel] = field(default_factory=dict)
    users: dict[str, set[Connection]] = field(default_factory=dict)
    watchers: dict[str, set[Connection]] = field(default_factory=dict)
    cache: dict[str, tuple[str, str, float]] = field(default_factory=dict)
    dirty_counts: set[str] = field(default_factory=set)


class Effects:
    """What an operation asks the I/O layer to do, in order per kind.

    ``sends`` holds ``(connections, frame_text)`` pairs: one encoded frame for
    all its targets. ``closes`` holds ``(connection, code, reason)``.
    ``webhooks`` holds ``(app, event)`` pairs, events as in reference §3.2.
    """

    __slots__ = ("closes", "sends", "webhooks")

    def __init__(self) -> None:
        self.sends: list[tuple[Sequence[Connection], str]] = []
        self.closes: list[tuple[Connection, int, str]] = []
        self.webhooks: list[tuple[AppConfig, dict[str, Any]]] = []

    def send(self, conn: Connection, frame: str) -> None:
        """Queue ``frame`` for one connection."""
        self.sends.append(((conn,), frame))

    def broadcast(self, conns: Sequence[Connection], frame: str) -> None:
        """Queue one encoded ``frame`` for several connections."""
        if conns:
            self.sends.append((conns, frame))

    def close(self, conn: Connection, code: int, reason: str) -> None:
        """Queue ``pusher:error`` then a close with ``code`` (reference §5.12)."""
        if not conn.closing:
            conn.closing = True
            self.send(conn, protocol.error(reason, code))
            self.closes.append((conn, code, reason))

    def hook(self, app: AppState, event: dict[str, Any]) -> None:
        """Queue a webhook event, if the app has webhooks."""
        if app.config.webhooks:
            self.webhooks.append((app.config, event))
