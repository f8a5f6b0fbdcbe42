"""The HTTP API of reference §4 on aiohttp: events, channels, users.

Every request is signature-checked (reference §4.3). Errors are plain-text
bodies with Pusher's status codes (reference §4.5): 400 bad request, 401
authentication, 404 unknown app, 413 data too large; never a 200.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .. import names
from . import protocol
from .core import Core
from .signing import check_request
from .signing import RequestAuthError
from .state import AppState
from .state import Effects
from .state import is_cache
from .state import is_presence

log = logging.getLogger("flask_pusher.server")

MAX_CHANNELS_PER_TRIGGER = 100
MAX_BATCH = 10

Apply = Callable[[Effects], None]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HTTPError(Exception):
    """An API error answered with ``status`` and a text body ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n")


def _json(value: Any) -> web.Response:
    # ASCII-escaped: a user id may hold a lone surrogate, which UTF-8 cannot encode.
    return web.json_response(value, dumps=_dumps_ascii)


_dumps_ascii = json.JSONEncoder(separators=(",", ":")).encode


class HTTPApi:
    """Route handlers bound to a :class:`Core` and a function applying effects."""

    def __init__(self, core: Core, apply: Apply) -> None:
        self.core = core
        self.apply = apply

    def add_routes(self, app: web.Application) -> None:
        """Register the API routes, plus PY 3.3.4's terminate alias (§4.6)."""
        wrap = self._authenticated
        app.router.add_post("/apps/{app_id}/events", wrap(self.events))
        app.router.add_post("/apps/{app_id}/batch_events", wrap(self.batch_events))
        app.router.add_get("/apps/{app_id}/channels", wrap(self.channels))
        app.router.add_get("/apps/{app_id}/channels/{channel}", wrap(self.channel))
        app.router.add_get("/apps/{app_id}/channels/{channel}/users", wrap(self.users))
        terminate = wrap(self.terminate)
        app.router.add_post("/apps/{app_id}/users/{user_id}/terminate_connections", terminate)
        app.router.add_post("/users/{user_id}/terminate_connections", terminate)

    def _authenticated(
        self, handler: Callable[[web.Request, AppState, bytes], Awaitable[web.Response]]
    ) -> Handler:
        async def wrapper(request: web.Request) -> web.StreamResponse:
            app_id = request.match_info.get("app_id")
            if app_id is not None:
                app = self.core.apps_by_id.get(app_id)
                if app is None:
                    return _error(404, f"Unknown app ID {app_id!r}")
            else:  # the alias without /apps/{app_id}: find the app by its key
                key = request.query.get("auth_key", "")
                app = self.core.apps_by_key.get(key)
                if app is None:
                    return _error(401, "Unknown auth_key")
            body = await request.read()
            try:
                check_request(
                    app.config,
                    request.method,
                    (request.path, request.raw_path.split("?", 1)[0]),
                    request.query,
                    body,
                )
                if not app.config.enabled:
                    raise HTTPError(403, f"App {app.config.app_id} is disabled")
                response = await handler(request, app, body)
            except RequestAuthError as exc:
                return _error(exc.status, exc.message)
            except HTTPError as exc:
                return _error(exc.status, exc.message)
            log.debug("%s %s -> %s", request.method, request.path, response.status)
            return response

        return wrapper

    # -- events -----------------------------------------------------------

    async def events(self, request: web.Request, app: AppState, body: bytes) -> web.Response:
        """``POST /apps/{app_id}/events`` (reference §4.2)."""
        payload = _json_body(body)
        channels = payload.get("channels")
        if channels is None and "channel" in payload:
            channels = [payload["channel"]]
        if not isinstance(channels, list) or not channels:
            raise HTTPError(400, "channels must be a non-empty list of channel names")
        if len(channels) > MAX_CHANNELS_PER_TRIGGER:
            raise HTTPError(400, f"At most {MAX_CHANNELS_PER_TRIGGER} channels per event")
        info = self._trigger(app, payload, channels)
        if info is None:
            return _json({})
        return _json({"channels": info})

    async def batch_events(self, request: web.Request, app: AppState, body: bytes) -> web.Response:
        """``POST /apps/{app_id}/batch_events`` (reference §4.2)."""
        payload = _json_body(body)
        batch = payload.get("batch")
        if not isinstance(batch, list) or not batch:
            raise HTTPError(400, "batch must be a non-empty list of events")
        if len(batch) > MAX_BATCH:
            raise HTTPError(400, f"At most {MAX_BATCH} events per batch")
        for item in batch:
            if not isinstance(item, dict):
                raise HTTPError(400, "Each batch item must be an object")
            _validate_event(app, item, [item.get("channel")])
        results = [self._trigger(app, item, [item["channel"]]) for item in batch]
        if all(r is None for r in results):
            return _json({})
        return _json(
            {
                "batch": [
                    (r or {}).get(item["channel"], {})
                    for r, item in zip(results, batch, strict=True)
                ]
            }
        )

    def _trigger(
        self, app: AppState, item: dict[str, Any], channels: list[Any]
    ) -> dict[str, dict[str, int]] | None:
        _validate_event(app, item, channels)
        socket_id = item.get("socket_id")
        self.apply(self.core.trigger(app, channels, item["name"], item["data"], socket_id))
        attributes = _attributes(item.get("info") or "")
        if not attributes:
            return None
        result: dict[str, dict[str, int]] = {}
        for name in channels:
            channel = app.channels.get(name)
            entry: dict[str, int] = {}
            if "user_count" in attributes and is_presence(name):
                entry["user_count"] = len(channel.members) if channel else 0
            if "subscription_count" in attributes and not is_presence(name):
                entry["subscription_count"] = len(channel.subscribers) if channel else 0
            result[name] = entry
        return result

    # -- channels ---------------------------------------------------------

    async def channels(self, request: web.Request, app: AppState, body: bytes) -> web.Response:
        """``GET /apps/{app_id}/channels`` (reference §4.2)."""
        prefix = request.query.get("filter_by_prefix", "")
        attributes = _attributes(request.query.get("info", ""))
        unknown = attributes - {"user_count", "subscription_count"}
        if unknown:
            raise HTTPError(400, f"Unsupported info attributes: {', '.join(sorted(unknown))}")
        if "user_count" in attributes and not prefix.startswith("presence-"):
            raise HTTPError(400, "info=user_count needs filter_by_prefix starting with 'presence-'")
        result: dict[str, dict[str, int]] = {}
        for name, channel in app.channels.items():
            if not name.startswith(prefix):
                continue
            entry: dict[str, int] = {}
            if "user_count" in attributes:
                entry["user_count"] = len(channel.members)
            if "subscription_count" in attributes:
                entry["subscription_count"] = len(channel.subscribers)
            result[name] = entry
        return _json({"channels": result})

    async def channel(self, request: web.Request, app: AppState, body: bytes) -> web.Response:
        """``GET /apps/{app_id}/channels/{channel}`` (reference §4.2)."""
        name = _channel_name(request)
        attributes = _attributes(request.query.get("info", ""))
        unknown = attributes - {"user_count", "subscription_count", "cache"}
        if unknown:
            raise HTTPError(400, f"Unsupported info attributes: {', '.join(sorted(unknown))}")
        if "user_count" in attributes and not is_presence(name):
            raise HTTPError(400, "info=user_count is only available for presence channels")
        if "subscription_count" in attributes and is_presence(name):
            raise HTTPError(400, "info=subscription_count is not available for presence channels")
        if "cache" in attributes and not is_cache(name):
            raise HTTPError(400, "info=cache is only available for cache channels")
        channel = app.channels.get(name)
        result: dict[str, Any] = {"occupied": channel is not None}
        if "user_count" in attributes:
            result["user_count"] = len(channel.members) if channel else 0
        if "subscription_count" in attributes:
            result["subscription_count"] = len(channel.subscribers) if channel else 0
        if "cache" in attributes:
            cached = self.core.cached(app, name)
            result["cache"] = None
            if cached is not None:
                ttl = max(0, int(cached[2] - self.core.clock()))
                result["cache"] = {"data": cached[1], "ttl": ttl}
        return _json(result)

    async def users(self, request: web.Request, app: AppState, body: bytes) -> web.Response:
        """``GET /apps/{app_id}/channels/{channel}/users`` (reference §4.2)."""
        name = _channel_name(request)
        if not is_presence(name):
            raise HTTPError(400, "Users can only be listed for presence channels")
        channel = app.channels.get(name)
        members = channel.members if channel is not None else {}
        return _json({"users": [{"id": uid} for uid in members]})

    async def terminate(self, request: web.Request, app: AppState, body: bytes) -> web.Response:
        """``POST .../users/{user_id}/terminate_connections`` (§4.2, §4.6)."""
        user_id = request.match_info["user_id"]
        if not names.valid_name(user_id):
            raise HTTPError(400, "Invalid user id: use 1 to 200 of A-Z a-z 0-9 _ - = @ , . ;")
        self.apply(self.core.terminate(app, user_id))
        return _json({})


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise HTTPError(400, "The body must be a JSON object") from None
    if not isinstance(payload, dict):
        raise HTTPError(400, "The body must be a JSON object")
    return payload


def _validate_event(app: AppState, item: dict[str, Any], channels: list[Any]) -> None:
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise HTTPError(400, "name must be a non-empty string")
    if len(name) > protocol.MAX_EVENT_NAME:
        raise HTTPError(400, f"Event name too long ({protocol.MAX_EVENT_NAME} characters at most)")
    data = item.get("data")
    if not isinstance(data, str):
        raise HTTPError(400, "data must be a string")
    size = len(data.encode("utf-8", "surrogatepass"))
    if size > app.config.max_event_size:
        raise HTTPError(
            413,
            f"Event data too large: {size} bytes (at most {app.config.max_event_size})",
        )
    for channel in channels:
        if not isinstance(channel, str) or not protocol.valid_channel_name(channel):
            raise HTTPError(400, f"Invalid channel name {channel!r}")
    if len(channels) > 1 and any(c.startswith("private-encrypted-") for c in channels):
        raise HTTPError(400, "An event to an encrypted channel must have only that channel")
    socket_id = item.get("socket_id")
    if socket_id is not None and not names.valid_socket_id(socket_id):
        raise HTTPError(400, f"Invalid socket_id {socket_id!r}")
    _attributes(item.get("info") or "")  # a 400 for a bad info before anything is sent


def _attributes(info: Any) -> set[str]:
    if isinstance(info, str):
        return {a.strip() for a in info.split(",") if a.strip()}
    raise HTTPError(400, "info must be a comma-separated string")


def _channel_name(request: web.Request) -> str:
    name = request.match_info["channel"]
    if not protocol.valid_channel_name(name):
        raise HTTPError(400, f"Invalid channel name {name!r}")
    return name
