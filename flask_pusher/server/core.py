"""Sans-IO state and rules of the local server.

Nothing here touches a socket or a clock of its own: every operation of
:class:`Core` returns an :class:`Effects` listing the frames to write, the
connections to close and the webhook events to emit, and the I/O layer
(:mod:`flask_pusher.server.app`) carries them out. The state it
works on is in :mod:`flask_pusher.server.state`; users, signin and watchlists
are in :mod:`flask_pusher.server.users`.
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

from . import protocol
from . import users
from .config import AppConfig
from .signing import check_auth
from .state import AppState
from .state import Channel
from .state import Connection
from .state import Effects
from .state import is_cache
from .state import is_presence
from .state import is_private
from .state import Member

__all__ = ["AppState", "Channel", "Connection", "Core", "Effects", "Member"]

log = logging.getLogger("flask_pusher.server")

#: Above this many subscribers, counts are sent at most every 5 s (§5.11).
COUNT_THROTTLE_SUBSCRIBERS = 100
COUNT_THROTTLE_INTERVAL = 5.0


class Core:
    """State and rules of the server for several apps (reference §5).

    :param apps: the apps served; app IDs and keys must be unique.
    :param clock: monotonic clock in seconds, injectable for tests.
    :raises ValueError: on duplicate app IDs or keys.
    """

    def __init__(
        self,
        apps: Iterable[AppConfig],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
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

    def connect(self, app: AppState, transport: Any = None) -> tuple[Connection, Effects]:
        """Register a connection and greet it (reference §5.3)."""
        socket_id = f"{next(self._ids)}.{random.randrange(10**9)}"
        conn = Connection(socket_id, app, self.clock(), transport)
        app.connections[socket_id] = conn
        effects = Effects()
        timeout = app.config.activity_timeout
        effects.send(conn, protocol.connection_established(socket_id, timeout))
        log.debug("connected %s to app %s", socket_id, app.config.app_id)
        return conn, effects

    def disconnect(self, conn: Connection) -> Effects:
        """Forget a closed connection: unsubscribe it everywhere, sign it out."""
        effects = Effects()
        if conn.closed:
            return effects
        conn.closed = conn.closing = True
        for name in list(conn.channels):
            self._unsubscribe(conn, name, effects)
        users.signout(conn, effects)
        conn.app.connections.pop(conn.socket_id, None)
        log.debug("disconnected %s", conn.socket_id)
        return effects

    def receive(self, conn: Connection, text: str | bytes) -> Effects:
        """Handle one frame from ``conn``; never raises on bad input."""
        effects = Effects()
        if conn.closed:
            return effects
        conn.last_seen = self.clock()
        conn.ping_sent = None
        frame = protocol.parse(text)
        if isinstance(frame, protocol.FrameError):
            effects.send(conn, protocol.error(frame.message))
            return effects
        event, data = frame.event, frame.data
        if event == "pusher:ping":
            effects.send(conn, protocol.PONG)
        elif event == "pusher:pong":
            pass
        elif event == "pusher:subscribe":
            if isinstance(data, dict):
                self.subscribe(conn, data, effects)
            else:
                effects.send(conn, protocol.error("pusher:subscribe needs object data"))
        elif event == "pusher:unsubscribe":
            channel = data.get("channel") if isinstance(data, dict) else None
            if isinstance(channel, str):
                self._unsubscribe(conn, channel, effects)
            else:
                effects.send(conn, protocol.error("pusher:unsubscribe needs a channel"))
        elif event == "pusher:signin":
            users.signin(conn, data, effects)
        elif event.startswith("client-"):
            self.client_event(conn, event, frame.channel, data, effects)
        else:
            effects.send(conn, protocol.error(f"Unsupported event {event[:200]!r}"))
        return effects

    # -- subscriptions ----------------------------------------------------

    def subscribe(self, conn: Connection, data: dict[str, Any], effects: Effects) -> None:
        """Handle ``pusher:subscribe`` (reference §5.5)."""
        name = data.get("channel")
        if not isinstance(name, str) or not protocol.valid_channel_name(name):
            shown = name if isinstance(name, str) else ""
            message = f"Invalid channel name {shown[:210]!r}"
            effects.send(conn, protocol.subscription_error(shown, message, 400, "InvalidChannel"))
            return
        if name.startswith(protocol.SERVER_TO_USER_PREFIX):
            users.subscribe_server_to_user(conn, name, effects)
            return
        app = conn.app
        user_id: str | None = None
        user_info: Any = None
        if is_private(name):
            channel_data = data.get("channel_data")
            to_sign = f"{conn.socket_id}:{name}"
            if is_presence(name) and isinstance(channel_data, str):
                to_sign += ":" + channel_data
            error = check_auth(app.config, data.get("auth"), to_sign)
            if error is None and is_presence(name):
                user_id, user_info, error = _presence_user(conn, channel_data)
            if error is not None:
                effects.send(conn, protocol.subscription_error(name, error, 401))
                log.debug("refused %s on %s: %s", conn.socket_id, name, error)
                return
        channel = app.channels.get(name)
        if name in conn.channels and channel is not None:
            # Already subscribed: confirm again, change nothing.
            effects.send(conn, self._succeeded_frame(channel))
            return
        if user_id is not None and channel is not None:
            limit = app.config.max_presence_members
            if user_id not in channel.members and len(channel.members) >= limit:
                message = f"Presence channel {name} is full ({limit} members)"
                effects.send(
                    conn,
                    protocol.subscription_error(name, message, 403, "LimitReached"),
                )
                return
        if channel is None:
            channel = app.channels[name] = Channel(name)
            effects.hook(app, {"name": "channel_occupied", "channel": name})
        channel.subscribers[conn] = None
        channel._snapshot = None
        conn.channels.add(name)
        if user_id is not None:
            conn.presence[name] = user_id
            member = channel.members.get(user_id)
            if member is None:
                member = channel.members[user_id] = Member(user_info)
                others = [c for c in channel.subscribers if c is not conn]
                effects.broadcast(others, protocol.member_added(name, user_id, user_info))
                hook = {"name": "member_added", "channel": name, "user_id": user_id}
                effects.hook(app, hook)
            member.connections.add(conn)
        effects.send(conn, self._succeeded_frame(channel))
        log.debug("subscribed %s to %s", conn.socket_id, name)
        if is_cache(name):
            cached = self.cached(app, name)
            if cached is not None:
                effects.send(conn, protocol.channel_event(cached[0], name, cached[1]))
            else:
                effects.send(conn, protocol.cache_miss(name))
                effects.hook(app, {"name": "cache_miss", "channel": name})
        if user_id is None:
            self._count_changed(app, channel, effects)

    def _succeeded_frame(self, channel: Channel) -> str:
        if not is_presence(channel.name):
            return protocol.subscription_succeeded(channel.name)
        members = {uid: m.user_info for uid, m in channel.members.items()}
        return protocol.subscription_succeeded(channel.name, protocol.presence_data(members))

    def unsubscribe(self, conn: Connection, name: str) -> Effects:
        """Handle ``pusher:unsubscribe``; there is no reply (reference §5.5)."""
        effects = Effects()
        self._unsubscribe(conn, name, effects)
        return effects

    def _unsubscribe(self, conn: Connection, name: str, effects: Effects) -> None:
        if name not in conn.channels:
            return
        conn.channels.discard(name)
        app = conn.app
        channel = app.channels.get(name)
        if channel is None:  # #server-to-user-<id>: no channel state
            return
        channel.subscribers.pop(conn, None)
        channel._snapshot = None
        user_id = conn.presence.pop(name, None)
        if user_id is not None:
            member = channel.members.get(user_id)
            if member is not None:
                member.connections.discard(conn)
                if not member.connections:
                    del channel.members[user_id]
                    effects.broadcast(
                        list(channel.subscribers),
                        protocol.member_removed(name, user_id),
                    )
                    hook = {
                        "name": "member_removed",
                        "channel": name,
                        "user_id": user_id,
                    }
                    effects.hook(app, hook)
        log.debug("unsubscribed %s from %s", conn.socket_id, name)
        if not channel.subscribers:
            del app.channels[name]
            app.dirty_counts.discard(name)
            effects.hook(app, {"name": "channel_vacated", "channel": name})
        elif not is_presence(name):
            self._count_changed(app, channel, effects)

    def _count_changed(self, app: AppState, channel: Channel, effects: Effects) -> None:
        if not app.config.enable_subscription_count:
            return
        now = self.clock()
        big = len(channel.subscribers) > COUNT_THROTTLE_SUBSCRIBERS
        if big and now - channel.count_sent_at < COUNT_THROTTLE_INTERVAL:
            app.dirty_counts.add(channel.name)
            return
        self._send_count(app, channel, now, effects)

    def _send_count(self, app: AppState, channel: Channel, now: float, effects: Effects) -> None:
        channel.count_sent_at = now
        app.dirty_counts.discard(channel.name)
        count = len(channel.subscribers)
        effects.broadcast(
            list(channel.subscribers), protocol.subscription_count(channel.name, count)
        )
        hook = {
            "name": "subscription_count",
            "channel": channel.name,
            "subscription_count": count,
        }
        effects.hook(app, hook)

    # -- client events ----------------------------------------------------

    def client_event(
        self,
        conn: Connection,
        event: str,
        name: str | None,
        data: Any,
        effects: Effects,
    ) -> None:
        """Relay a ``client-`` event to the channel's other subscribers (§5.7)."""
        app = conn.app
        config = app.config
        if not config.enable_client_events:
            effects.send(conn, protocol.error("Client events are not enabled for this app"))
            return
        if name is None or name not in conn.channels or not is_private(name):
            message = "Client events need a private or presence channel you are subscribed to"
            effects.send(conn, protocol.error(message))
            return
        if name.startswith("private-encrypted-"):
            effects.send(
                conn,
                protocol.error("Client events are not allowed on encrypted channels"),
            )
            return
        if len(event) > protocol.MAX_EVENT_NAME:
            effects.send(conn, protocol.error("Event name too long (200 characters at most)"))
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
            effects.send(conn, protocol.error(message, 4301))
            return
        window.append(now)
        text = data if isinstance(data, str) else json.dumps(data)
        if len(text.encode("utf-8", "surrogatepass")) > config.max_event_size:
            effects.send(conn, protocol.error("Client event data too large"))
            return
        channel = app.channels[name]
        user_id = conn.presence.get(name)
        frame = protocol.channel_event(event, name, data, user_id)
        effects.broadcast([c for c in channel.subscribers if c is not conn], frame)
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

    # -- HTTP API operations ----------------------------------------------

    def trigger(
        self,
        app: AppState,
        channels: Sequence[str],
        event: str,
        data: str,
        socket_id: str | None = None,
    ) -> Effects:
        """Deliver an HTTP API event (reference §5.8); cache it on cache channels."""
        effects = Effects()
        for name in channels:
            targets: Sequence[Connection]
            if name.startswith(protocol.SERVER_TO_USER_PREFIX):
                uid = name[len(protocol.SERVER_TO_USER_PREFIX) :]
                targets = tuple(app.users.get(uid, ()))
            else:
                channel = app.channels.get(name)
                targets = channel.targets() if channel is not None else ()
                if is_cache(name):
                    app.cache[name] = (event, data, self.clock() + app.config.cache_ttl)
            if socket_id is not None:
                targets = [c for c in targets if c.socket_id != socket_id]
            effects.broadcast(targets, protocol.channel_event(event, name, data))
        return effects

    def cached(self, app: AppState, name: str) -> tuple[str, str, float] | None:
        """The cached ``(event, data, expires_at)`` of a cache channel, if fresh."""
        entry = app.cache.get(name)
        if entry is not None and entry[2] <= self.clock():
            del app.cache[name]
            return None
        return entry

    def terminate(self, app: AppState, user_id: str) -> Effects:
        """Close every connection signed in as ``user_id`` with 4009 (§4.2)."""
        effects = Effects()
        for conn in list(app.users.get(user_id, ())):
            effects.close(conn, 4009, "Connection terminated by the app")
        return effects

    # -- time -------------------------------------------------------------

    def tick(self) -> Effects:
        """Ping idle clients, close silent ones (4201), send throttled counts,
        forget expired cache entries."""
        effects = Effects()
        now = self.clock()
        for app in self.apps_by_id.values():
            config = app.config
            for conn in app.connections.values():
                if conn.closing:
                    continue
                if conn.ping_sent is None:
                    if now - conn.last_seen >= config.activity_timeout:
                        conn.ping_sent = now
                        effects.send(conn, protocol.PING)
                elif now - conn.ping_sent >= config.pong_timeout:
                    effects.close(conn, 4201, "Pong reply not received")
            if app.cache:
                for name in [n for n, entry in app.cache.items() if entry[2] <= now]:
                    del app.cache[name]
            for name in list(app.dirty_counts):
                channel = app.channels.get(name)
                if channel is None:
                    app.dirty_counts.discard(name)
                elif now - channel.count_sent_at >= COUNT_THROTTLE_INTERVAL:
                    self._send_count(app, channel, now, effects)
        return effects

    def shutdown(self) -> Effects:
        """Close every connection with 4200, "reconnect immediately" (§5.12)."""
        effects = Effects()
        for app in self.apps_by_id.values():
            for conn in list(app.connections.values()):
                effects.close(conn, 4200, "Server shutting down")
        return effects


def _presence_user(conn: Connection, channel_data: Any) -> tuple[str | None, Any, str | None]:
    """``(user_id, user_info, error)`` of a presence subscription (§1.3)."""
    if channel_data is None:
        if conn.user_id is None:
            return (
                None,
                None,
                "Presence channels need channel_data or a signed-in connection",
            )
        return conn.user_id, conn.user_info, None
    try:
        parsed = protocol.loads(channel_data)
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
    return user_id, parsed.get("user_info"), None
