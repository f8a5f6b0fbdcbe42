"""The HTTP API's reads of the cluster's state, from Redis, before the core answers.

An HTTP API read must see every node's subscribers (reference: Pusher's
channels endpoints, https://pusher.com/docs/channels/library_auth_reference/rest-api/#channels),
so the Redis backend reads the counts and members it needs into a
:class:`~flask_pusher.server.state.Snapshot`, and the core answers from that
as it would from its own state. Nothing here knows HTTP: the I/O layer passes
the operation's name, the channel of its path and its query.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from typing import TYPE_CHECKING

from ... import names
from .. import protocol
from ..errors import APIError
from ..state import ChannelCounts
from ..state import Snapshot
from ..state import StateView

if TYPE_CHECKING:
    from ..core import Core
    from ..state import AppState


class Reads:
    """Reads of one cluster's shared state.

    :param redis: the node's redis-py client.
    :param prefix: the cluster's key prefix.
    :param errors: the errors of an unreachable Redis.
    """

    def __init__(self, redis: Any, prefix: str, errors: tuple[type[BaseException], ...]) -> None:
        self.redis = redis
        self.prefix = prefix
        self.errors = errors

    async def view(
        self,
        operation: str,
        app: AppState,
        body: bytes,
        channel: str | None,
        query: Mapping[str, str],
    ) -> StateView | None:
        """The cluster's counts and members an HTTP API operation reads, or
        ``None`` (the operation reads nothing shared).

        :param operation: ``trigger``, ``trigger_batch``, ``channels``,
            ``channel``, ``users`` or ``terminate``.
        :param body: the request body (a trigger's ``info`` channels are read).
        :param channel: the channel of the path, if any.
        :param query: the decoded query (``filter_by_prefix``).
        :raises APIError: 503 while Redis is unreachable, but for a trigger
            (delivered, its ``info`` then counting this node's subscribers).
        """
        wanted: list[str] | None = None
        if operation == "terminate":
            return None
        if operation in ("trigger", "trigger_batch"):
            if b'"info"' not in body:
                return None
            try:
                wanted = trigger_channels(protocol.loads(body))
            except ValueError:  # deeply nested too: the core answers 400
                return None
            if not wanted:
                return None
        try:
            return await self._read(operation, app, wanted, channel or "", query)
        except self.errors as exc:
            if wanted is not None:  # a trigger is delivered; its info counts this node's
                return None
            raise APIError(503, "The cluster's shared state (Redis) is unreachable; retry") from exc

    async def _read(
        self,
        operation: str,
        app: AppState,
        wanted: list[str] | None,
        name: str,
        query: Mapping[str, str],
    ) -> StateView:
        base = f"{self.prefix}:{app.config.app_id}"
        r = self.redis
        if operation in ("users", "channel") and not names.valid_channel_name(name):
            return Snapshot({})  # the core answers 400
        if operation == "users":
            ids = await r.hkeys(f"{base}:pm:{name}")
            return Snapshot({}, {name: dict.fromkeys(ids)})
        if operation == "channels":
            prefix = query.get("filter_by_prefix", "")
            totals = {
                channel: int(n)
                for channel, n in (await r.hgetall(f"{base}:ch")).items()
                if channel.startswith(prefix)
            }
        else:
            wanted = wanted if wanted is not None else [name]
            values = await r.hmget(f"{base}:ch", wanted)
            totals = {channel: int(n) for channel, n in zip(wanted, values, strict=True) if n}
        presence = [channel for channel in totals if names.is_presence(channel)]
        user_counts: dict[str, int] = {}
        if presence:
            async with r.pipeline(transaction=False) as pipe:
                for channel in presence:
                    pipe.hlen(f"{base}:pm:{channel}")
                user_counts = dict(zip(presence, await pipe.execute(), strict=True))
        counts = {
            channel: ChannelCounts(total, user_counts.get(channel, 0))
            for channel, total in totals.items()
        }
        return Snapshot(counts)

    async def load_caches(self, core: Core) -> None:
        """Take the cache channels' last events from Redis (a node that
        starts late knows them too)."""
        for app_id, app in core.apps_by_id.items():
            start = f"{self.prefix}:{app_id}:cache:"
            async for key in self.redis.scan_iter(match=f"{start}*", count=500):
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.get(key)
                    pipe.pttl(key)
                    value, ttl = await pipe.execute()
                if value is None or ttl is None or ttl <= 0:
                    continue
                try:
                    event, data = json.loads(value)
                except (ValueError, TypeError):
                    continue
                app.cache[key[len(start) :]] = (event, data, core.clock() + ttl / 1000)


def trigger_channels(payload: Any) -> list[str]:
    """The channel names of a trigger or batch body that asks for ``info``."""
    found: list[str] = []
    if not isinstance(payload, dict):
        return found
    items = payload.get("batch") if "batch" in payload else [payload]
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict) or not item.get("info"):
            continue
        channels = item.get("channels")
        if channels is None:
            channels = [item.get("channel")]
        if isinstance(channels, list):
            found.extend(c for c in channels if names.valid_channel_name(c))
    return found
