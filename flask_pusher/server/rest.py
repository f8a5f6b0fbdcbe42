"""The HTTP API's rules, sans I/O: the operations of
https://pusher.com/docs/channels/library_auth_reference/rest-api/ on the core's state.

:class:`HTTPOperations` is the part of :class:`~flask_pusher.server.core.Core`
that answers HTTP API requests (``trigger``, ``trigger_batch``, ``channels``,
``channel``, ``users``, ``terminate``); each returns an
:class:`~flask_pusher.server.state.Effects` whose ``result`` is the JSON
answer, or raises :class:`~flask_pusher.server.errors.APIError` with Pusher's
status code. Reads take a :class:`~flask_pusher.server.state.StateView`: the
app's own state, or what a backend read from its shared store beforehand.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import TYPE_CHECKING

from .. import names
from .errors import APIError
from .events import ChannelEvent
from .signing import check_request
from .state import AppState
from .state import Connection
from .state import Effects
from .state import StateView

if TYPE_CHECKING:
    from .backend import Backend
    from .backend import Events

#: Channels one HTTP API trigger may name.
MAX_CHANNELS_PER_TRIGGER = 100
#: Events one ``batch_events`` request may hold.
MAX_BATCH = 10
#: The ``info`` attributes each HTTP API operation accepts.
TRIGGER_INFO = frozenset({"user_count", "subscription_count"})
CHANNELS_INFO = frozenset({"user_count", "subscription_count"})
CHANNEL_INFO = frozenset({"user_count", "subscription_count", "cache"})


class HTTPOperations:
    """The HTTP API operations of :class:`~flask_pusher.server.core.Core`."""

    apps_by_id: dict[str, AppState]
    apps_by_key: dict[str, AppState]
    backend: Backend
    clock: Callable[[], float]

    def close_user(self, app: AppState, user_id: str) -> Effects:
        raise NotImplementedError  # the core's

    def _cached(self, app: AppState, name: str) -> tuple[str, str, float] | None:
        raise NotImplementedError  # the core's

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
        self.backend.publish(app, [(payload, channels)])
        info = self._trigger_info(view or app, channels, attributes)
        effects.result = {} if info is None else {"channels": info}
        return effects

    def deliver(self, app: AppState, events: Events) -> Effects:
        """Deliver events another process accepted, to this
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
        self.backend.publish(app, [(item, [item["channel"]]) for item, _ in checked])
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
            effects.broadcast(targets, ChannelEvent(event, name, data))

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
        self.backend.terminate(app, user_id)
        effects.result = {}
        return effects


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
