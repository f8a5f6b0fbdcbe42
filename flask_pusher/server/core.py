"""The rules of the server, sans I/O: WebSocket frames and HTTP API requests in,
:class:`~flask_pusher.server.state.Effects` out.

Nothing here touches a socket or a clock of its own. Every public operation of
:class:`Core` returns an :class:`Effects` listing the frames to write, the
connections to close, the webhook events to emit and, for an HTTP API
operation, the JSON body to answer; a refused HTTP API request raises
:class:`~flask_pusher.server.errors.APIError`. The I/O layers
(:mod:`flask_pusher.server.app`, :mod:`flask_pusher.server.http_api`) only
translate between the network and these calls. The state is in
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
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from .. import names
from . import protocol
from . import users
from .config import AppConfig
from .errors import APIError
from .signing import check_auth
from .signing import check_request
from .state import AppState
from .state import Channel
from .state import Connection
from .state import Effects
from .state import StateView

__all__ = ["APIError", "AppState", "Connection", "Core", "Effects"]

log = logging.getLogger("flask_pusher.server")

#: Above this many subscribers, counts are sent at most every 5 s.
COUNT_THROTTLE_SUBSCRIBERS = 100
COUNT_THROTTLE_INTERVAL = 5.0
#: Channels one HTTP API trigger may name.
MAX_CHANNELS_PER_TRIGGER = 100
#: Events one ``batch_events`` request may hold.
MAX_BATCH = 10
#: The ``info`` attributes each HTTP API operation accepts.
TRIGGER_INFO = frozenset({"user_count", "subscription_count"})
CHANNELS_INFO = frozenset({"user_count", "subscription_count"})
CHANNEL_INFO = frozenset({"user_count", "subscription_count", "cache"})


class Core:
    """State and rules of the server for several apps.

    :param apps: the apps served; app IDs and keys must be unique.
    :param clock: monotonic clock in seconds, injectable for tests.
    :raises ValueError: on duplicate app IDs or keys, or no app.
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

    def connect(self, app: AppState) -> Effects:
        """Register a connection and greet it with ``pusher:connection_established``.

        :returns: effects whose ``result`` is the new :class:`Connection`.
        """
        socket_id = f"{next(self._ids)}.{random.randrange(10**9)}"
        conn = Connection(socket_id, app, self.clock())
        app.connections[socket_id] = conn
        effects = Effects()
        effects.result = conn
        timeout = app.config.activity_timeout
        effects.send(conn, protocol.connection_established(socket_id, timeout))
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
        users.signout(conn, effects)
        conn.app.connections.pop(conn.socket_id, None)
        if conn.app.cluster is not None:
            conn.app.cluster.disconnected(conn)
        log.debug("disconnected %s", conn.socket_id)
        return effects

    def receive(self, conn: Connection, text: str | bytes) -> Effects:
        """Handle one frame from ``conn``; never raises on bad input."""
        effects = Effects()
        if conn.closing:
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
                self._subscribe(conn, data, effects)
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
        elif event.startswith(names.CLIENT_EVENT_PREFIX):
            self._client_event(conn, event, frame.channel, data, effects)
        else:
            effects.send(conn, protocol.error(f"Unsupported event {event[:200]!r}"))
        return effects

    def binary(self, conn: Connection) -> Effects:
        """Answer a binary frame, which the protocol does not use."""
        effects = Effects()
        effects.send(conn, protocol.error("Binary frames are not supported"))
        return effects

    # -- subscriptions ----------------------------------------------------

    def _subscribe(self, conn: Connection, data: dict[str, Any], effects: Effects) -> None:
        name = data.get("channel")
        if not isinstance(name, str) or not names.valid_channel_name(name):
            shown = name if isinstance(name, str) else ""
            message = f"Invalid channel name {shown[:210]!r}"
            effects.send(conn, protocol.subscription_error(shown, message, 400, "InvalidChannel"))
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
                effects.send(conn, protocol.subscription_error(name, error, 401))
                log.debug("refused %s on %s: %s", conn.socket_id, name, error)
                return
        cluster = app.cluster
        if name in conn.channels:
            # Already subscribed: confirm again, change nothing.
            if presence and cluster is not None and cluster.up:
                cluster.join(conn, name, conn.presence[name] if conn.presence else "", None, True)
            else:
                effects.send(conn, self._succeeded_frame(app, name))
            return
        if user_id is not None:
            if cluster is not None and cluster.up:
                # The cluster decides, atomically, and answers with join_done().
                cluster.join(conn, name, user_id, user_info)
                return
            members = app.members(name)
            limit = app.config.max_presence_members
            if user_id not in members and len(members) >= limit:
                effects.send(conn, _full(name, limit))
                return
        channel, occupied = app.subscribe(conn, name)
        if occupied and cluster is None:
            effects.hook(app, {"name": "channel_occupied", "channel": name})
        conn.channels.add(name)
        if user_id is not None:
            if conn.presence is None:
                conn.presence = {}
            conn.presence[name] = user_id
            if app.add_member(channel, user_id, user_info, conn):
                # Here without a cluster, or with one that is unreachable.
                frame = protocol.member_added(name, user_id, user_info)
                effects.broadcast(channel.others(conn), frame)
                if cluster is None:
                    hook = {"name": "member_added", "channel": name, "user_id": user_id}
                    effects.hook(app, hook)
        if cluster is not None:
            cluster.subscribed(conn, name, user_id, user_info)
        effects.send(conn, self._succeeded_frame(app, name))
        log.debug("subscribed %s to %s", conn.socket_id, name)
        self._send_cached(conn, name, effects)
        if not presence and (cluster is None or not cluster.up):
            channel.total = None  # while Redis is away, this node's own count
            self._count_changed(app, channel, effects)

    def join_done(
        self,
        conn: Connection,
        name: str,
        user_id: str,
        user_info: Any,
        members: dict[str, Any] | None,
    ) -> Effects:
        """Complete a presence subscription a cluster decided.

        :param members: the cluster-wide ``{user_id: user_info}`` including
            ``user_id``, or ``None`` if the channel was full.
        """
        effects = Effects()
        if conn.closing or name in conn.channels:
            return effects
        app = conn.app
        if members is None:
            effects.send(conn, _full(name, app.config.max_presence_members))
            return effects
        channel, _ = app.subscribe(conn, name)
        conn.channels.add(name)
        if conn.presence is None:
            conn.presence = {}
        conn.presence[name] = user_id
        app.add_member(channel, user_id, user_info, conn)
        data = protocol.presence_data(members)
        effects.send(conn, protocol.subscription_succeeded(name, data))
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
            effects.send(conn, protocol.channel_event(cached[0], name, cached[1]))
        elif app.cluster is not None and app.cluster.up:
            app.cluster.cache_lookup(conn, name)  # answered with cache_answer()
        else:
            effects.send(conn, protocol.cache_miss(name))
            effects.hook(app, {"name": "cache_miss", "channel": name})

    def cache_answer(
        self, conn: Connection, name: str, cached: tuple[str, str] | None, ttl: float
    ) -> Effects:
        """What a cluster's shared cache holds for cache channel ``name``,
        which ``conn`` subscribed to: ``(event, data)`` fresh for ``ttl``
        more seconds, or ``None``."""
        effects = Effects()
        if conn.closing or name not in conn.channels:
            return effects
        app = conn.app
        if cached is not None:
            app.cache[name] = (cached[0], cached[1], self.clock() + ttl)
            effects.send(conn, protocol.channel_event(cached[0], name, cached[1]))
        else:
            effects.send(conn, protocol.cache_miss(name))
            effects.hook(app, {"name": "cache_miss", "channel": name})
        return effects

    def _succeeded_frame(self, app: AppState, name: str) -> str:
        if not names.is_presence(name):
            return protocol.subscription_succeeded(name)
        return protocol.subscription_succeeded(name, protocol.presence_data(app.members(name)))

    def _unsubscribe(self, conn: Connection, name: str, effects: Effects) -> None:
        app = conn.app
        cluster = app.cluster
        if name not in conn.channels:
            if cluster is not None:
                cluster.cancel_join(conn, name)
            return
        conn.channels.discard(name)
        channel = app.channels.get(name)
        if channel is None:  # #server-to-user-<id>: no channel state
            return
        user_id = conn.presence.pop(name, None) if conn.presence else None
        vacated = app.unsubscribe(conn, channel)
        if user_id is not None and app.remove_member(channel, user_id, conn):
            if cluster is None or not cluster.up:
                effects.broadcast(channel.targets(), protocol.member_removed(name, user_id))
            if cluster is None:
                hook = {"name": "member_removed", "channel": name, "user_id": user_id}
                effects.hook(app, hook)
        log.debug("unsubscribed %s from %s", conn.socket_id, name)
        if cluster is not None:
            cluster.unsubscribed(conn, name, user_id)
            if cluster.up or vacated or names.is_presence(name):
                return
            channel.total = None  # while Redis is away, this node's own count
            self._count_changed(app, channel, effects)
            return
        if vacated:
            effects.hook(app, {"name": "channel_vacated", "channel": name})
        elif not names.is_presence(name):
            self._count_changed(app, channel, effects)

    def _count_changed(self, app: AppState, channel: Channel, effects: Effects) -> None:
        if not app.config.enable_subscription_count:
            return
        now = self.clock()
        total = len(channel) if channel.total is None else channel.total
        big = total > COUNT_THROTTLE_SUBSCRIBERS
        if big and now - channel.count_sent_at < COUNT_THROTTLE_INTERVAL:
            app.dirty_counts.add(channel.name)
            return
        self._send_count(app, channel, now, effects)

    def _send_count(self, app: AppState, channel: Channel, now: float, effects: Effects) -> None:
        channel.count_sent_at = now
        app.dirty_counts.discard(channel.name)
        count = len(channel) if channel.total is None else channel.total
        effects.broadcast(channel.targets(), protocol.subscription_count(channel.name, count))
        if app.cluster is None:  # a cluster sends this webhook once, itself
            hook = {
                "name": "subscription_count",
                "channel": channel.name,
                "subscription_count": count,
            }
            effects.hook(app, hook)

    def count_update(self, app: AppState, name: str, total: int) -> Effects:
        """A cluster's subscription count of ``name`` changed to ``total``:
        tell this process's subscribers (throttled as without a cluster)."""
        effects = Effects()
        channel = app.channels.get(name)
        if channel is not None and app.config.enable_subscription_count:
            channel.total = total
            self._count_changed(app, channel, effects)
        return effects

    def relay(
        self,
        app: AppState,
        name: str,
        frame: str,
        exclude: str | None = None,
        member: str | None = None,
    ) -> Effects:
        """Send an encoded ``frame`` that a cluster produced to this
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
            effects.send(conn, protocol.error("Client events are not enabled for this app"))
            return
        if name is None or name not in conn.channels or not names.is_private(name):
            message = "Client events need a private or presence channel you are subscribed to"
            effects.send(conn, protocol.error(message))
            return
        if names.is_encrypted(name):
            message = "Client events are not allowed on encrypted channels"
            effects.send(conn, protocol.error(message))
            return
        if len(event) > names.MAX_NAME_LENGTH:
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
        user_id = conn.presence.get(name) if conn.presence else None
        frame = protocol.channel_event(event, name, data, user_id)
        effects.broadcast(channel.others(conn), frame)
        if app.cluster is not None:
            app.cluster.client_event(app, name, frame, conn.socket_id)
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

    # -- HTTP API ---------------------------------------------------------

    def app_for_request(self, app_id: str | None, auth_key: str) -> AppState:
        """The app an HTTP API request is for: by its app ID, or for the path
        without ``/apps/{app_id}`` that pusher-http-python 3.3.4's
        ``terminate_user_connections`` uses, by ``auth_key``.

        :raises APIError: 404 for an unknown app ID, 401 for an unknown key.
        """
        if app_id is not None:
            app = self.apps_by_id.get(app_id)
            if app is None:
                raise APIError(404, f"Unknown app ID {app_id[:60]!r}")
            return app
        app = self.apps_by_key.get(auth_key)
        if app is None:
            raise APIError(401, "Unknown auth_key")
        return app

    def authenticate(
        self,
        app: AppState,
        method: str,
        paths: tuple[str, ...],
        query: Mapping[str, str],
        body: bytes,
    ) -> None:
        """Check an HTTP API request's signature and that the app is enabled.

        :raises APIError: as :func:`~flask_pusher.server.signing.check_request`,
            or 403 for a disabled app.
        """
        check_request(app.config, method, paths, query, body)
        if not app.config.enabled:
            raise APIError(403, f"App {app.config.app_id} is disabled")

    def trigger(self, app: AppState, payload: Any, view: StateView | None = None) -> Effects:
        """``POST /apps/{app_id}/events``: validate and deliver one event.

        :param payload: the decoded JSON body: ``name``, ``data`` (a string),
            ``channels`` (1 to 100 names) or ``channel``, optional
            ``socket_id`` (excluded from delivery) and ``info``.
        :param view: where ``info`` counts are read; default ``app``.
        :returns: effects whose ``result`` is the JSON answer, ``{}`` or
            ``{"channels": {name: {attribute: count}}}`` when ``info`` asks.
        :raises APIError: 400 for a malformed event, 413 for data too large.
        """
        if not isinstance(payload, dict):
            raise APIError(400, "The body must be a JSON object")
        channels = payload.get("channels")
        if channels is None and "channel" in payload:
            channels = [payload["channel"]]
        if not isinstance(channels, list) or not channels:
            raise APIError(400, "channels must be a non-empty list of channel names")
        if len(channels) > MAX_CHANNELS_PER_TRIGGER:
            raise APIError(400, f"At most {MAX_CHANNELS_PER_TRIGGER} channels per event")
        attributes = _validate_event(app, payload, channels)
        effects = Effects()
        self._deliver(app, payload, channels, effects)
        if app.cluster is not None:
            app.cluster.publish(app, [(payload, channels)])
        info = self._trigger_info(view or app, channels, attributes)
        effects.result = {} if info is None else {"channels": info}
        return effects

    def deliver(self, app: AppState, events: list[tuple[dict[str, Any], list[str]]]) -> Effects:
        """Deliver events another node of a cluster accepted, to this
        process's subscribers: ``[(event, channels), ...]`` as validated by
        :meth:`trigger` or :meth:`trigger_batch`."""
        effects = Effects()
        for item, channels in events:
            self._deliver(app, item, channels, effects)
        return effects

    def trigger_batch(self, app: AppState, payload: Any, view: StateView | None = None) -> Effects:
        """``POST /apps/{app_id}/batch_events``: validate every event, then
        deliver them in order.

        :param payload: ``{"batch": [event, ...]}``, 1 to 10 events of one
            channel each, as for :meth:`trigger`.
        :returns: effects whose ``result`` is ``{}``, or ``{"batch": [...]}``
            with one info object per event when any asks for ``info``.
        :raises APIError: 400 for a malformed batch or event, 413 for data too large.
        """
        batch = payload.get("batch") if isinstance(payload, dict) else None
        if not isinstance(batch, list) or not batch:
            raise APIError(400, "batch must be a non-empty list of events")
        if len(batch) > MAX_BATCH:
            raise APIError(400, f"At most {MAX_BATCH} events per batch")
        checked = []
        for item in batch:
            if not isinstance(item, dict):
                raise APIError(400, "Each batch item must be an object")
            checked.append((item, _validate_event(app, item, [item.get("channel")])))
        effects = Effects()
        results = []
        for item, _ in checked:
            self._deliver(app, item, [item["channel"]], effects)
        if app.cluster is not None:
            app.cluster.publish(app, [(item, [item["channel"]]) for item, _ in checked])
        for item, attributes in checked:
            results.append(self._trigger_info(view or app, [item["channel"]], attributes))
        if all(r is None for r in results):
            effects.result = {}
        else:
            effects.result = {
                "batch": [
                    (r or {}).get(item["channel"], {})
                    for r, (item, _) in zip(results, checked, strict=True)
                ]
            }
        return effects

    def _deliver(
        self, app: AppState, item: dict[str, Any], channels: list[str], effects: Effects
    ) -> None:
        """Deliver a validated event; cache it on cache channels."""
        event, data, socket_id = item["name"], item["data"], item.get("socket_id")
        for name in channels:
            targets: Sequence[Connection]
            if name.startswith(names.SERVER_TO_USER_PREFIX):
                uid = name[len(names.SERVER_TO_USER_PREFIX) :]
                targets = tuple(app.users.get(uid, ()))
            else:
                channel = app.channels.get(name)
                targets = channel.targets() if channel is not None else ()
                if names.is_cache(name):
                    app.cache[name] = (event, data, self.clock() + app.config.cache_ttl)
            if socket_id is not None:
                targets = [c for c in targets if c.socket_id != socket_id]
            effects.broadcast(targets, protocol.channel_event(event, name, data))

    def _trigger_info(
        self, app: StateView, channels: list[str], attributes: frozenset[str]
    ) -> dict[str, dict[str, int]] | None:
        if not attributes:
            return None
        result: dict[str, dict[str, int]] = {}
        for name in channels:
            counts = app.counts(name)
            entry: dict[str, int] = {}
            if "user_count" in attributes and names.is_presence(name):
                entry["user_count"] = counts.user_count if counts else 0
            if "subscription_count" in attributes:
                entry["subscription_count"] = counts.subscription_count if counts else 0
            result[name] = entry
        return result

    def channels(
        self, app: AppState, query: Mapping[str, str], view: StateView | None = None
    ) -> Effects:
        """``GET /apps/{app_id}/channels``: the occupied channels.

        :param query: ``filter_by_prefix`` and ``info`` (``user_count`` only
            with a ``presence-`` prefix; ``subscription_count``).
        :returns: effects whose ``result`` is ``{"channels": {name: {...}}}``.
        :raises APIError: 400 for an unsupported ``info``.
        """
        prefix = query.get("filter_by_prefix", "")
        attributes = _attributes(query.get("info", ""), CHANNELS_INFO)
        if "user_count" in attributes and not prefix.startswith(names.PRESENCE_PREFIX):
            raise APIError(400, "info=user_count needs filter_by_prefix starting with 'presence-'")
        result: dict[str, dict[str, int]] = {}
        for name, counts in (view or app).occupied(prefix):
            entry: dict[str, int] = {}
            if "user_count" in attributes:
                entry["user_count"] = counts.user_count
            if "subscription_count" in attributes:
                entry["subscription_count"] = counts.subscription_count
            result[name] = entry
        effects = Effects()
        effects.result = {"channels": result}
        return effects

    def channel(
        self, app: AppState, name: str, query: Mapping[str, str], view: StateView | None = None
    ) -> Effects:
        """``GET /apps/{app_id}/channels/{name}``: one channel's state.

        :param query: ``info``: ``user_count`` (presence channels),
            ``subscription_count`` (any channel), ``cache`` (cache channels).
        :returns: effects whose ``result`` is ``{"occupied": bool, ...}``.
        :raises APIError: 400 for an invalid name or an unsupported ``info``.
        """
        _check_channel_name(name)
        attributes = _attributes(query.get("info", ""), CHANNEL_INFO)
        if "user_count" in attributes and not names.is_presence(name):
            raise APIError(400, "info=user_count is only available for presence channels")
        if "cache" in attributes and not names.is_cache(name):
            raise APIError(400, "info=cache is only available for cache channels")
        counts = (view or app).counts(name)
        result: dict[str, Any] = {"occupied": counts is not None}
        if "user_count" in attributes:
            result["user_count"] = counts.user_count if counts else 0
        if "subscription_count" in attributes:
            result["subscription_count"] = counts.subscription_count if counts else 0
        if "cache" in attributes:
            cached = self._cached(app, name)
            result["cache"] = None
            if cached is not None:
                ttl = max(0, int(cached[2] - self.clock()))
                result["cache"] = {"data": cached[1], "ttl": ttl}
        effects = Effects()
        effects.result = result
        return effects

    def users(self, app: AppState, name: str, view: StateView | None = None) -> Effects:
        """``GET /apps/{app_id}/channels/{name}/users``: a presence channel's members.

        :returns: effects whose ``result`` is ``{"users": [{"id": user_id}, ...]}``.
        :raises APIError: 400 for an invalid name or a channel that is not presence.
        """
        _check_channel_name(name)
        if not names.is_presence(name):
            raise APIError(400, "Users can only be listed for presence channels")
        effects = Effects()
        effects.result = {"users": [{"id": uid} for uid in (view or app).members(name)]}
        return effects

    def terminate(self, app: AppState, user_id: str) -> Effects:
        """``POST .../users/{user_id}/terminate_connections``: close every
        connection signed in as ``user_id`` with 4009.

        :returns: effects whose ``result`` is ``{}``.
        :raises APIError: 400 for an invalid user id.
        """
        if not names.valid_name(user_id):
            raise APIError(400, f"Invalid user id: use 1 to 200 of {names.NAME_CHARS}")
        effects = self.close_user(app, user_id)
        if app.cluster is not None:
            app.cluster.terminate(app, user_id)
        effects.result = {}
        return effects

    def close_user(self, app: AppState, user_id: str) -> Effects:
        """Close this process's connections signed in as ``user_id`` with 4009."""
        effects = Effects()
        for conn in list(app.users.get(user_id, ())):
            effects.close(conn, 4009, "Connection terminated by the app")
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
        """Close every connection with 4200, "reconnect immediately"."""
        effects = Effects()
        for app in self.apps_by_id.values():
            for conn in list(app.connections.values()):
                effects.close(conn, 4200, "Server shutting down")
        return effects


def _full(name: str, limit: int) -> str:
    message = f"Presence channel {name} is full ({limit} members)"
    return protocol.subscription_error(name, message, 403, "LimitReached")


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


def _validate_event(app: AppState, item: dict[str, Any], channels: list[Any]) -> frozenset[str]:
    """Check one HTTP API event; return its ``info`` attributes.

    :raises APIError: 400, or 413 for data over ``max_event_size``.
    """
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise APIError(400, "name must be a non-empty string")
    if len(name) > names.MAX_NAME_LENGTH:
        raise APIError(400, f"Event name too long ({names.MAX_NAME_LENGTH} characters at most)")
    data = item.get("data")
    if not isinstance(data, str):
        raise APIError(400, "data must be a string")
    size = len(data.encode("utf-8", "surrogatepass"))
    if size > app.config.max_event_size:
        raise APIError(
            413, f"Event data too large: {size} bytes (at most {app.config.max_event_size})"
        )
    for channel in channels:
        if not names.valid_channel_name(channel):
            raise APIError(400, f"Invalid channel name {channel!r}"[:300])
    if len(channels) > 1 and any(names.is_encrypted(c) for c in channels):
        raise APIError(400, "An event to an encrypted channel must have only that channel")
    socket_id = item.get("socket_id")
    if socket_id is not None and not names.valid_socket_id(socket_id):
        raise APIError(400, f"Invalid socket_id {socket_id!r}"[:300])
    # A 400 for a bad info before anything is sent.
    return _attributes(item.get("info") or "", TRIGGER_INFO)


def _attributes(info: Any, allowed: frozenset[str]) -> frozenset[str]:
    """The attributes of a comma-separated ``info``.

    :raises APIError: 400 if ``info`` is not a string or names others than ``allowed``.
    """
    if not isinstance(info, str):
        raise APIError(400, "info must be a comma-separated string")
    attributes = frozenset(a.strip() for a in info.split(",") if a.strip())
    unknown = attributes - allowed
    if unknown:
        shown = ", ".join(sorted(unknown))[:200]
        raise APIError(400, f"Unsupported info attributes: {shown}")
    return attributes


def _check_channel_name(name: str) -> None:
    if not names.valid_channel_name(name):
        raise APIError(400, f"Invalid channel name {name!r}"[:300])
