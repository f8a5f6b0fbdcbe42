"""The webhook stream: every node reads it through one consumer group.

Each event is sent by one node and acknowledged once sent (``XACK`` and
``XDEL``, through the writer), so that a node that dies leaves its unsent
events to another: a dead node's pending entries are claimed by the node that
reaped it, and every :data:`ADOPT_EVERY` heartbeats any consumer that is no
node any more is adopted (Redis streams: https://redis.io/docs/latest/develop/data-types/streams/).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from typing import TYPE_CHECKING

from ..webhook_queue import WebhookStats
from .messages import Op

if TYPE_CHECKING:
    from ..state import AppState
    from ..webhooks import WebhookSender

log = logging.getLogger("flask_pusher.server.cluster")

GROUP = "senders"
#: Stream entries read at once.
READ_COUNT = 100
#: Heartbeats between two looks for stream consumers that are no node any more.
ADOPT_EVERY = 5
#: Milliseconds a webhook stream entry must have been idle to be claimed.
CLAIM_IDLE = 1000
#: Entries the webhook stream holds at most. When full, the script drops the
#: oldest state event (:data:`~flask_pusher.server.webhook_queue.FLOODS`)
#: first, and the oldest entry only when none is left (``lua/common.lua``).
STREAM_MAX = 100_000


class WebhookStream:
    """This node's consumer of the shared webhook stream.

    :param redis: the node's redis-py client.
    :param prefix: the cluster's key prefix; the stream is ``{prefix}:wh``.
    :param apps: the apps served, by app ID.
    :param webhooks: sends the events taken; tells :meth:`done` when one is sent.
    :param queue: queues an operation for the writer.
    :param is_up: whether Redis is reachable.
    """

    def __init__(
        self,
        redis: Any,
        prefix: str,
        apps: Mapping[str, AppState],
        webhooks: WebhookSender,
        queue: Callable[[list[Any]], None],
        is_up: Callable[[], bool],
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.key = f"{prefix}:wh"
        self.apps = apps
        self.webhooks = webhooks
        self.queue = queue
        self.is_up = is_up
        self.node_id = ""
        self.consuming = True
        #: Entries sent while Redis was away, acknowledged once it is back.
        self.unacknowledged: list[str] = []
        webhooks.on_done = self.done

    async def create_group(self, errors: type[BaseException]) -> None:
        """Create the consumer group (and the stream) unless it exists."""
        with contextlib.suppress(errors):  # BUSYGROUP: it exists
            await self.redis.xgroup_create(self.key, GROUP, id="$", mkstream=True)

    def acknowledge_later(self) -> None:
        """Redis is back: queue the acknowledgements made while it was away."""
        acknowledged, self.unacknowledged = self.unacknowledged, []
        for entry_id in acknowledged:
            self.queue([Op.ACK, entry_id])

    async def consume(self) -> None:
        """Read entries for this node until :attr:`consuming` is false.

        :raises redis.exceptions.RedisError: and the other errors of a lost link.
        """
        while self.consuming:
            entries = await self.redis.xreadgroup(
                GROUP, self.node_id, {self.key: ">"}, count=READ_COUNT, block=1000
            )
            for _, items in entries or ():
                self.take(items)

    def take(self, items: list[tuple[str, Mapping[str, str] | None]]) -> None:
        """Send the events of stream entries (an unreadable one is acknowledged)."""
        for entry_id, fields in items:
            if not fields:
                continue
            app = self.apps.get(fields.get("a", ""))
            try:
                event = json.loads(fields.get("e", ""))
            except ValueError:
                event = None
            if app is None or not isinstance(event, dict):
                self.queue([Op.ACK, entry_id])
                continue
            self.webhooks.emit(app.config, event, token=entry_id)

    def dropped(self, drops: Any) -> Any:
        """Count the webhook events the script dropped from the full stream
        (``drops``: its answer, JSON ``[[app ID, event type], ...]`` or
        empty) in the webhook sender's figures of each app
        (``webhooks_dropped_full_total``); returns ``drops``."""
        if drops:
            try:
                dropped = json.loads(drops)
            except ValueError:
                return drops
            stats = self.webhooks.stats
            for app_id, name in dropped:
                figures = stats.setdefault(str(app_id), WebhookStats())
                figures.dropped_full += 1
                figures.dropped_by_type[name] = figures.dropped_by_type.get(name, 0) + 1
        return drops

    def done(self, entry_id: str) -> None:
        """The webhook sender sent (or gave up on) the event of ``entry_id``."""
        if self.is_up():
            self.queue([Op.ACK, entry_id])
        else:  # acknowledged once Redis is back
            self.unacknowledged.append(entry_id)

    async def claim(self, node: str) -> None:
        """Take over the webhook events a dead node had taken but not sent.

        Only entries idle for :data:`CLAIM_IDLE` ms: a claim makes them busy
        again, so two nodes claiming at once do not both send them.
        """
        pending = await self.redis.xpending_range(
            self.key, GROUP, min="-", max="+", count=10_000, consumername=node
        )
        ids = [p["message_id"] for p in pending]
        if not ids:
            return
        claimed = await self.redis.xclaim(self.key, GROUP, self.node_id, CLAIM_IDLE, ids)
        if claimed:
            self.take(claimed)
            log.warning("took over %d webhook events of dead node %s", len(claimed), node)

    async def adopt(self) -> None:
        """Take over the events of stream consumers that are no node any
        more (a claim that failed, a node gone while none was left to reap
        it), and forget those that hold none."""
        live = set(await self.redis.zrange(f"{self.prefix}:nodes", 0, -1))
        for consumer in await self.redis.xinfo_consumers(self.key, GROUP):
            name = consumer["name"]
            if name in live or name == self.node_id:
                continue
            if consumer["pending"]:
                await self.claim(name)
            else:
                await self.redis.xgroup_delconsumer(self.key, GROUP, name)
