"""What the core sends to clients, as typed values encoded only at the edge.

The core's :class:`~flask_pusher.server.state.Effects` carry these small frozen
dataclasses, as h11 and wsproto return typed, frozen events and make bytes only
in ``send()`` (https://h11.readthedocs.io/en/latest/api.html#events,
https://python-wsproto.readthedocs.io/en/latest/api.html#events). The I/O layer
calls :meth:`ServerEvent.encode` once per broadcast, for all its recipients;
observers (metrics, the console, the cluster's "confirm once written") match on
the types, never on the encoded text. The encodings are
:mod:`flask_pusher.server.protocol`'s, as Pusher's protocol page describes them
(https://pusher.com/docs/channels/library_auth_reference/pusher-websockets-protocol/).
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from typing import Protocol

from . import protocol


class ServerEvent(Protocol):
    """A frame for clients: anything with an ``encode() -> str``."""

    def encode(self) -> str:
        """The frame's JSON text."""
        ...


@dataclass(frozen=True, slots=True)
class ConnectionEstablished:
    """``pusher:connection_established``; ``activity_timeout`` in seconds."""

    socket_id: str
    activity_timeout: int

    def encode(self) -> str:
        return protocol.connection_established(self.socket_id, self.activity_timeout)


@dataclass(frozen=True, slots=True)
class Ping:
    """``pusher:ping``: the server asks an idle client to answer."""

    def encode(self) -> str:
        return protocol.PING


@dataclass(frozen=True, slots=True)
class Pong:
    """``pusher:pong``: the answer to a client's ``pusher:ping``."""

    def encode(self) -> str:
        return protocol.PONG


PING = Ping()
PONG = Pong()


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """``pusher:error`` with ``message`` and an optional ``code`` (4301 rate
    limit, 4302 watchlist limit, the close codes)."""

    message: str
    code: int | None = None

    def encode(self) -> str:
        return protocol.error(self.message, self.code)


@dataclass(frozen=True, slots=True)
class SubscriptionSucceeded:
    """``pusher_internal:subscription_succeeded``; ``members``
    (``{user_id: user_info}``) for a presence channel."""

    channel: str
    members: Mapping[str, Any] | None = None

    def encode(self) -> str:
        if self.members is None:
            return protocol.subscription_succeeded(self.channel)
        return protocol.subscription_succeeded(self.channel, protocol.presence_data(self.members))


@dataclass(frozen=True, slots=True)
class SubscriptionRefused:
    """``pusher:subscription_error`` with an HTTP-like ``status`` (400, 401,
    403) and a ``type`` (``AuthError``, ``InvalidChannel``, ``LimitReached``)."""

    channel: str
    message: str
    status: int
    type: str = "AuthError"

    def encode(self) -> str:
        return protocol.subscription_error(self.channel, self.message, self.status, self.type)


@dataclass(frozen=True, slots=True)
class MemberAdded:
    """``pusher_internal:member_added``."""

    channel: str
    user_id: str
    user_info: Any

    def encode(self) -> str:
        return protocol.member_added(self.channel, self.user_id, self.user_info)


@dataclass(frozen=True, slots=True)
class MemberRemoved:
    """``pusher_internal:member_removed``."""

    channel: str
    user_id: str

    def encode(self) -> str:
        return protocol.member_removed(self.channel, self.user_id)


@dataclass(frozen=True, slots=True)
class SubscriptionCount:
    """``pusher_internal:subscription_count``."""

    channel: str
    count: int

    def encode(self) -> str:
        return protocol.subscription_count(self.channel, self.count)


@dataclass(frozen=True, slots=True)
class CacheMiss:
    """``pusher:cache_miss``."""

    channel: str

    def encode(self) -> str:
        return protocol.cache_miss(self.channel)


@dataclass(frozen=True, slots=True)
class ChannelEvent:
    """An event on a channel, from the HTTP API or a client (``user_id``
    on a presence channel's client event)."""

    event: str
    channel: str
    data: Any
    user_id: str | None = None

    def encode(self) -> str:
        return protocol.channel_event(self.event, self.channel, self.data, self.user_id)


@dataclass(frozen=True, slots=True)
class SigninSuccess:
    """``pusher:signin_success`` echoing the signed ``user_data``."""

    user_data: str

    def encode(self) -> str:
        return protocol.signin_success(self.user_data)


@dataclass(frozen=True, slots=True)
class WatchlistEvents:
    """``pusher_internal:watchlist_events``: ``[("online" or "offline", [user_id, ...])]``."""

    events: Sequence[tuple[str, list[str]]]

    def encode(self) -> str:
        return protocol.watchlist_events(self.events)


@dataclass(frozen=True, slots=True)
class Encoded:
    """A frame encoded elsewhere (another node's client event)."""

    frame: str

    def encode(self) -> str:
        return self.frame
