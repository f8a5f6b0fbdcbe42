"""The rules of the server, sans I/O: WebSocket frames and HTTP API requests in,
:class:`~flask_pusher.server.state.Effects` out.

Nothing here touches a socket or a clock of its own. Every public operation of
:class:`Core` returns an :class:`Effects` listing the frames to write, the
connections to close, the webhook events to emit and, for an HTTP API
operation, the JSON body to answer; a refused HTTP API request raises
:class:`~flask_pusher.server.errors.APIError`. The I/O layers
(:mod:`flask_pusher.server.app`, :mod:`flask_pusher.server.http_api`) only
translate between the network and these calls. The HTTP API's operations are
in :mod:`flask_pusher.server.rest`. The state is in
:mod:`flask_pusher.server.state`; users, signin and watchlists are in
:mod:`flask_pusher.server.users`.

The rules follow Pusher's protocol
(https://pusher.com/docs/channels/library_auth_reference/pusher-websockets-protocol/)
and HTTP API (https://pusher.com/docs/channels/library_auth_reference/rest-api/).
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import random
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from typing import Any

from .. import names
from . import events
from . import limits
from . import protocol
from . import users
from .backend import Backend
from .backend import LocalBackend
from .config import AppConfig
from .errors import APIError
from .events import CacheMiss
from .events import ChannelEvent
from .events import ConnectionEstablished
from .events import ProtocolError
from .events import ServerEvent
from .events import SubscriptionCount
from .events import SubscriptionRefused
from .events import SubscriptionSucceeded
from .rest import HTTPOperations
from .signing import check_auth
from .state import AppState
from .state import Connection
from .state import Effects

__all__ = ["APIError", "AppState", "Connection", "Core", "Effects"]

log = logging.getLogger("flask_pusher.server")


class Core(HTTPOperations):
    """State and rules of the server for several apps.

    What spans processes is asked of :attr:`backend`, whose answers come back
    through the callbacks listed in :mod:`flask_pusher.server.backend`
    (:meth:`join_done`, :meth:`relay`, :meth:`deliver`, :meth:`count_update`,
    :meth:`cache_answer`, :meth:`close_user`, :meth:`watchers_changed`,
    :meth:`watch_state`).

    :param apps: the apps served; app IDs and keys must be unique.
    :param clock: monotonic clock in seconds, injectable for tests.
    :param backend: where cross-process decisions are taken; default a
        :class:`~flask_pusher.server.backend.LocalBackend` (one process).
        A backend made after the core is set with ``core.backend = ...``.
    :raises ValueError: on duplicate app IDs or keys, or no app.
    """

    def __init__(
        self,
        apps: Iterable[AppConfig],
        clock: Callable[[], float] = time.monotonic,
        backend: Backend | None = None,
    ) -> None:
        self.clock = clock
        self.backend: Backend = backend if backend is not None else LocalBackend(self)
        self.apps_by_id: dict[str, AppState] = {}
        self.apps_by_key: dict[str, AppState] = {}
        for config in apps:
            if config.app_id in self.apps_by_id or config.key in self.apps_by_key:
                raise ValueError(f"Duplicate app ID or key: {config!r}")
            state = AppState(config)
            self.apps_by_id[config.app_id] = state
            self.apps_by_key[config.key] = state
        if not self.apps_by_id:
            raise ValueError("Serve at least one app.")
        self._ids = itertools.count(random.randrange(1, 10**6))

    # -- connections ------------------------------------------------------

    def connect(self, app: AppState, address: str | None = None) -> Effects:
        """Register a connection and greet it with ``pusher:connection_established``.

        :param address: the client's address, counted in ``app.addresses``
            (for ``max_connections_per_address``); ``None``: not counted.
        :returns: effects whose ``result`` is the new :class:`Connection`.
        """
        socket_id = f"{next(self._ids)}.{random.randrange(10**9)}"
        now = self.clock()
        conn = Connection(socket_id, app, now, opened_at=now)
        app.connections[socket_id] = conn
        if address is not None:
            conn.address = address
            app.addresses[address] = app.addresses.get(address, 0) + 1
        effects = Effects()
        effects.result = conn
        timeout = app.config.activity_timeout
        effects.send(conn, ConnectionEstablished(socket_id, timeout))
        log.debug("connected %s to app %s", socket_id, app.config.app_id)
        return effects

    def disconnect(self, conn: Connection) -> Effects:
        """Forget a connection that closed or is closing: unsubscribe it
        everywhere, sign it out. Does nothing the second time."""
        effects = Effects()
        if conn.closed:
            return effects
        conn.closed = conn.closing = True
        for name in list(conn.channels):
            self._unsubscribe(conn, name, effects)
        users.signout(conn, effects, self.backend)
        app = conn.app
        app.connections.pop(conn.socket_id, None)
        address = conn.address
        if address is not None:
            left = app.addresses.get(address, 1) - 1
            if left > 0:
                app.addresses[address] = left
            else:
                app.addresses.pop(address, None)
        self.backend.disconnected(conn)
        log.debug("disconnected %s", conn.socket_id)
        return effects

    def heard(self, conn: Connection) -> bool:
        """A frame from ``conn`` arrived: it is alive (``conn.last_seen``, and a
        ``pusher:ping`` the server sent is answered). ``False`` once its close
        began: then the frame is ignored, and a ``pusher:ping`` gets no pong.
        The handshake calls it alone for pusher-js's ``pusher:ping``, which
        it answers without parsing; :meth:`receive` calls it for every frame."""
        if conn.closing:
            return False
        conn.last_seen = self.clock()
        conn.ping_sent = None
        return True

    def receive(self, conn: Connection, text: str | bytes) -> Effects:
        """Handle one frame from ``conn``; never raises on bad input."""
        effects = Effects()
        if not self.heard(conn):
            return effects
        frame = protocol.parse(text)
        if isinstance(frame, protocol.FrameError):
            effects.send(conn, ProtocolError(frame.message))
            return effects
        event, data = frame.event, frame.data
        if event == "pusher:ping":
            effects.send(conn, events.PONG)
        elif event == "pusher:pong":
            pass
        elif event == "pusher:subscribe":
            if isinstance(data, dict):
                self._subscribe(conn, data, effects)
            else:
                effects.send(conn, ProtocolError("pusher:subscribe needs object data"))
        elif event == "pusher:unsubscribe":
            channel = data.get("channel") if isinstance(data, dict) else None
            if isinstance(channel, str):
                if channel in conn.channels:  # paid for, never refused
                    limits.spend(conn, limits.change_cost(conn, channel), conn.last_seen, False)
                self._unsubscribe(conn, channel, effects)
            else:
                effects.send(conn, ProtocolError("pusher:unsubscribe needs a channel"))
        elif event == "pusher:signin":
            users.signin(conn, data, effects, self.backend)
        elif event.startswith(names.CLIENT_EVENT_PREFIX):
            self._client_event(conn, event, frame.channel, data, effects)
        else:
            effects.send(conn, ProtocolError(f"Unsupported event {event[:200]!r}"))
        return effects

    def binary(self, conn: Connection) -> Effects:
        """Answer a binary frame, which the protocol does not use."""
        effects = Effects()
        effects.send(conn, ProtocolError("Binary frames are not supported"))
        return effects

    # -- subscriptions ----------------------------------------------------

    def _subscribe(self, conn: Connection, data: dict[str, Any], effects: Effects) -> None:
        name = data.get("channel")
        if not isinstance(name, str) or not names.valid_channel_name(name):
            shown = name if isinstance(name, str) else ""
            message = f"Invalid channel name {shown[:210]!r}"
            effects.send(conn, SubscriptionRefused(shown, message, 400, "InvalidChannel"))
            return
        if name.startswith(names.SERVER_TO_USER_PREFIX):
            users.subscribe_server_to_user(conn, name, effects)
            return
        app = conn.app
        user_id: str | None = None
        user_info: Any = None
        presence = names.is_presence(name)
        if names.is_private(name):
            channel_data = data.get("channel_data")
            to_sign = f"{conn.socket_id}:{name}"
            if presence and isinstance(channel_data, str):
                to_sign += ":" + channel_data
            error = check_auth(app.config, data.get("auth"), to_sign)
            if error is None and presence:
                user_id, user_info, error = _presence_user(conn, channel_data)
            if error is not None:
                effects.send(conn, SubscriptionRefused(name, error, 401))
                log.debug("refused %s on %s: %s", conn.socket_id, name, error)
                return
        if name not in conn.channels and not limits.spend(
            conn, limits.change_cost(conn, name), self.clock()
        ):
            message = "Too many subscriptions and unsubscriptions: slow down"
            effects.send(conn, SubscriptionRefused(name, message, 429, "LimitReached"))
            effects.send(conn, ProtocolError(message, limits.SUBSCRIPTION_RATE_CODE))
            limits.refused(app, "max_subscription_changes_per_second")
            return
        if name not in conn.channels and not limits.subscription_allowed(conn):
            limit = app.config.max_subscriptions_per_connection
            message = f"Subscription limit reached ({limit} channels per connection)"
            effects.send(conn, SubscriptionRefused(name, message, 403, "LimitReached"))
            effects.send(conn, ProtocolError(message, limits.SUBSCRIPTION_LIMIT_CODE))
            limits.refused(app, "max_subscriptions_per_connection")
            return
        if name in conn.channels:
            # Already subscribed: confirm again, change nothing.
            if presence:
                self.backend.rejoin(conn, name, effects)
            else:
                effects.send(conn, SubscriptionSucceeded(name))
            return
        if user_id is not None:
            # The backend decides (the member limit), then calls join_done().
            self.backend.join(conn, name, user_id, user_info, effects)
            return
        channel, occupied = app.subscribe(conn, name)
        conn.channels.add(channel.name)  # one str per channel, not one per subscriber
        self.backend.subscribed(conn, channel, occupied, effects)
        effects.send(conn, SubscriptionSucceeded(name))
        log.debug("subscribed %s to %s", conn.socket_id, name)
        self._send_cached(conn, name, effects)
        self.backend.count_changed(app, channel, effects)

    def join_done(
        self,
        conn: Connection,
        name: str,
        user_id: str,
        user_info: Any,
        members: dict[str, Any] | None,
        effects: Effects | None = None,
    ) -> Effects:
        """Complete a presence subscription the backend decided: add ``conn``
        as a connection of member ``user_id`` and confirm it.

        :param members: every process's ``{user_id: user_info}`` including
            ``user_id``, or ``None`` if the channel was full (refused with 403).
        :param effects: the effects to fill; default new ones.
        :returns: ``effects``.
        """
        effects = Effects() if effects is None else effects
        if conn.closing or name in conn.channels:
            return effects
        app = conn.app
        if members is None:
            effects.send(conn, _full(name, app.config.max_presence_members))
            return effects
        channel, _ = app.subscribe(conn, name)
        conn.channels.add(channel.name)
        if conn.presence is None:
            conn.presence = {}
        conn.presence[name] = user_id
        app.add_member(channel, user_id, user_info, conn)
        effects.send(conn, SubscriptionSucceeded(name, members))
        log.debug("subscribed %s to %s", conn.socket_id, name)
        self._send_cached(conn, name, effects)
        return effects

    def _send_cached(self, conn: Connection, name: str, effects: Effects) -> None:
        """After a subscription to a cache channel: its last event, or ``pusher:cache_miss``."""
        if not names.is_cache(name):
            return
        app = conn.app
        cached = self._cached(app, name)
        if cached is not None:
            effects.send(conn, ChannelEvent(cached[0], name, cached[1]))
        else:
            self.backend.cache_miss(conn, name, effects)  # may answer with cache_answer()

    def cache_answer(
        self, conn: Connection, name: str, cached: tuple[str, str] | None, ttl: float
    ) -> Effects:
        """What the backend's shared cache holds for cache channel ``name``,
        which ``conn`` subscribed to: ``(event, data)`` fresh for ``ttl``
        more seconds, or ``None``."""
        effects = Effects()
        if conn.closing or name not in conn.channels:
            return effects
        app = conn.app
        if cached is not None:
            app.cache[name] = (cached[0], cached[1], self.clock() + ttl)
            effects.send(conn, ChannelEvent(cached[0], name, cached[1]))
        else:
            effects.send(conn, CacheMiss(name))
            effects.hook(app, {"name": "cache_miss", "channel": name})
        return effects

    def _unsubscribe(self, conn: Connection, name: str, effects: Effects) -> None:
        if name not in conn.channels:
            self.backend.cancel_join(conn, name)
            return
        conn.channels.discard(name)
        app = conn.app
        channel = app.channels.get(name)
        if channel is None:  # #server-to-user-<id>: no channel state
            return
        user_id = conn.presence.pop(name, None) if conn.presence else None
        vacated = app.unsubscribe(conn, channel)
        last = user_id is not None and app.remove_member(channel, user_id, conn)
        log.debug("unsubscribed %s from %s", conn.socket_id, name)
        self.backend.left(conn, channel, user_id, vacated, last, effects)
        if not vacated and not names.is_presence(name):
            self.backend.count_changed(app, channel, effects)

    def count_update(
        self, app: AppState, name: str, total: int, effects: Effects | None = None
    ) -> Effects:
        """The subscription count of ``name`` changed to ``total`` (every
        process's subscribers): tell this process's subscribers, at most
        every 5 s above 100 subscribers (:mod:`flask_pusher.server.throttle`).

        :param effects: the effects to fill; default new ones.
        :returns: ``effects``.
        """
        effects = Effects() if effects is None else effects
        channel = app.channels.get(name)
        if channel is None or not app.config.enable_subscription_count:
            return effects
        if app.count_throttle.offer(name, total, self.clock()):
            self._send_count(app, name, total, effects)
        return effects

    def _send_count(self, app: AppState, name: str, count: int, effects: Effects) -> None:
        channel = app.channels.get(name)
        if channel is not None:
            effects.broadcast(channel.targets(), SubscriptionCount(name, count))
            self.backend.count_sent(app, name, count, effects)

    def relay(
        self,
        app: AppState,
        name: str,
        frame: ServerEvent,
        exclude: str | None = None,
        member: str | None = None,
    ) -> Effects:
        """Send a ``frame`` that the backend produced to this
        process's subscribers of ``name``, but the socket ``exclude`` and the
        connections of presence member ``member`` (a ``member_added`` of
        theirs is news only to others)."""
        effects = Effects()
        channel = app.channels.get(name)
        if channel is not None:
            targets: Sequence[Connection] = channel.targets()
            if exclude is not None or member is not None:
                targets = [
                    c
                    for c in targets
                    if c.socket_id != exclude
                    and (member is None or not c.presence or c.presence.get(name) != member)
                ]
            effects.broadcast(targets, frame)
        return effects

    # -- client events ----------------------------------------------------

    def _client_event(
        self,
        conn: Connection,
        event: str,
        name: str | None,
        data: Any,
        effects: Effects,
    ) -> None:
        """Relay a ``client-`` event to the channel's other subscribers."""
        app = conn.app
        config = app.config
        if not config.enable_client_events:
            effects.send(conn, ProtocolError("Client events are not enabled for this app"))
            return
        if name is None or name not in conn.channels or not names.is_private(name):
            message = "Client events need a private or presence channel you are subscribed to"
            effects.send(conn, ProtocolError(message))
            return
        if names.is_encrypted(name):
            message = "Client events are not allowed on encrypted channels"
            effects.send(conn, ProtocolError(message))
            return
        if len(event) > names.MAX_NAME_LENGTH:
            effects.send(conn, ProtocolError("Event name too long (200 characters at most)"))
            return
        now = self.clock()
        window = conn.client_events
        if window is None:
            window = conn.client_events = collections.deque()
        while window and now - window[0] >= 1.0:
            window.popleft()
        if len(window) >= config.max_client_events_per_second:
            limit = config.max_client_events_per_second
            message = f"Client event rejected due to rate limit ({limit} per second)"
            effects.send(conn, ProtocolError(message, 4301))
            return
        window.append(now)
        text = data if isinstance(data, str) else json.dumps(data)
        if len(text.encode("utf-8", "surrogatepass")) > config.max_event_size:
            effects.send(conn, ProtocolError("Client event data too large"))
            return
        channel = app.channels[name]
        user_id = conn.presence.get(name) if conn.presence else None
        frame = ChannelEvent(event, name, data, user_id)
        effects.broadcast(channel.others(conn), frame)
        self.backend.client_event(app, frame, conn.socket_id)
        hook = {
            "name": "client_event",
            "channel": name,
            "event": event,
            "data": text,
            "socket_id": conn.socket_id,
        }
        if user_id is not None:
            hook["user_id"] = user_id
        effects.hook(app, hook)

    def close_user(self, app: AppState, user_id: str) -> Effects:
        """Close this process's connections signed in as ``user_id`` with 4009."""
        effects = Effects()
        for conn in list(app.users.get(user_id, ())):
            effects.close(conn, 4009, "Connection terminated by the app")
        return effects

    def watchers_changed(self, app: AppState, user_id: str, online: bool) -> Effects:
        """``user_id`` came ``online`` (its first connection anywhere) or went
        offline: tell this process's connections watching it."""
        effects = Effects()
        users.notify_watchers(app, user_id, online, effects)
        return effects

    def watch_state(self, conn: Connection, online: set[str]) -> Effects:
        """Tell ``conn`` which users of its watchlist are ``online`` anywhere."""
        effects = Effects()
        users.watch_state(conn, online, effects)
        return effects

    def _cached(self, app: AppState, name: str) -> tuple[str, str, float] | None:
        """The cached ``(event, data, expires_at)`` of a cache channel, if fresh."""
        entry = app.cache.get(name)
        if entry is not None and entry[2] <= self.clock():
            del app.cache[name]
            return None
        return entry

    # -- time -------------------------------------------------------------

    def tick(self) -> Effects:
        """Ping idle clients, close silent ones (4201), send throttled counts,
        forget expired cache entries."""
        effects = Effects()
        now = self.clock()
        for app in self.apps_by_id.values():
            config = app.config
            # Pusher's authorized connections: signed in (or subscribed to a
            # private channel) within the timeout, or closed with 4009.
            signin_by = now - config.user_authentication_timeout
            authorize = config.authorized_connections
            for conn in app.connections.values():
                if conn.closing:
                    continue
                if authorize and conn.opened_at <= signin_by and not limits.authorized(conn):
                    effects.close(conn, 4009, "Connection not authorized within timeout")
                    limits.refused(app, "authorized_connections")
                    continue
                if conn.ping_sent is None:
                    if now - conn.last_seen >= config.activity_timeout:
                        conn.ping_sent = now
                        effects.send(conn, events.PING)
                elif now - conn.ping_sent >= config.pong_timeout:
                    effects.close(conn, 4201, "Pong reply not received")
            if app.cache:
                for name in [n for n, entry in app.cache.items() if entry[2] <= now]:
                    del app.cache[name]
            for name, count in app.count_throttle.due(now):
                self._send_count(app, name, count, effects)
        return effects

    def shutdown(self) -> Effects:
        """Close every connection with 4200, "reconnect immediately"."""
        effects = Effects()
        for app in self.apps_by_id.values():
            for conn in list(app.connections.values()):
                effects.close(conn, 4200, "Server shutting down")
        return effects


def _full(name: str, limit: int) -> SubscriptionRefused:
    message = f"Presence channel {name} is full ({limit} members)"
    return SubscriptionRefused(name, message, 403, "LimitReached")


def _presence_user(conn: Connection, channel_data: Any) -> tuple[str | None, Any, str | None]:
    """``(user_id, user_info, error)`` of a presence subscription."""
    if channel_data is None:
        if conn.user_id is None:
            return (
                None,
                None,
                "Presence channels need channel_data or a signed-in connection",
            )
        return conn.user_id, conn.user_info, protocol.member_too_large(conn.user_info)
    try:
        parsed = protocol.loads(channel_data)
    except protocol.DepthError as exc:
        return None, None, f"channel_data: {exc}"
    except (TypeError, ValueError):
        return None, None, "channel_data must be a JSON string"
    if not isinstance(parsed, dict) or "user_id" not in parsed:
        return None, None, "channel_data must hold a user_id"
    user_id = parsed["user_id"]
    if isinstance(user_id, bool) or not isinstance(user_id, (str, int)):
        return None, None, "user_id must be a string or a number"
    user_id = str(user_id)
    if not user_id or len(user_id) > 128:
        return None, None, "user_id must have 1 to 128 characters"
    user_info = parsed.get("user_info")
    return user_id, user_info, protocol.member_too_large(user_info)
