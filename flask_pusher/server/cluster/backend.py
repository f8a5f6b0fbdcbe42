"""Many server processes as one Pusher app, through one Redis server.

Imported only when a server is started with a Redis URL (``--redis``,
``PUSHER_SERVER_REDIS_URL``). Every process started with the same URL and
prefix is a *node* of one cluster. What the nodes share lives in Redis, and
every decision that must be taken once for the cluster is taken by the
cluster's Lua script (one ``.lua`` file per operation, :mod:`.script`), which
Redis runs atomically:

- each node keeps, in a hash of its own, how many of its connections are
  subscribed to each channel, are connections of each presence member, and
  are signed in as each user; the script keeps the cluster's totals beside
  them, so that the first subscriber anywhere gives ``channel_occupied``, the
  first connection of a user ``member_added`` (once, however many nodes join
  at the same instant), the last ones ``channel_vacated`` and
  ``member_removed``;
- what those changes tell clients (member events, subscription counts,
  watchlist online/offline, a presence subscription's member list) the script
  publishes on Redis pub/sub itself, on one channel per node, so that every
  node sees them in the order Redis decided them;
- webhook events go to a Redis stream, read by every node through one
  consumer group: each event is sent by one node, and acknowledged only once
  sent, so that a node that dies leaves its unsent events to another one.
  ``channel_vacated`` and ``member_removed`` wait their 3 s in a sorted set
  first, where a ``channel_occupied`` or ``member_added`` cancels them;
- each node writes a heartbeat every second; a node silent for
  ``node_timeout`` seconds is *reaped* by the next heartbeat of another one:
  its connections are removed as if they had disconnected.

HTTP API triggers and client events reach the node's own clients at once and are
published for the others (never echoed back). The keys are in ``docs/scaling.rst``.

:class:`RedisBackend` is the core's :class:`~flask_pusher.server.backend.Backend` in a cluster;
its parts: the write queue (:mod:`.writer`), the heartbeat (:mod:`.heartbeat`), the webhook
stream (:mod:`.stream`), the HTTP API's reads (:mod:`.reads`), the messages (:mod:`.messages`).
While Redis is away it decides alone, through a :class:`~flask_pusher.server.backend.LocalBackend`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from typing import Any
from typing import TYPE_CHECKING

import redis.asyncio
import redis.exceptions

from ... import names
from ...server_options import DEFAULT_WEBHOOK_DELAY
from ..backend import Events
from ..backend import LocalBackend
from ..config import DEFAULT_NODE_TIMEOUT
from ..config import DEFAULT_REDIS_PREFIX
from ..events import ChannelEvent
from ..events import Encoded
from ..events import MemberAdded
from ..events import MemberRemoved
from ..state import AppState
from ..state import Channel
from ..state import Connection
from ..state import Effects
from ..throttle import CountThrottle
from . import limits
from . import script
from .heartbeat import beat_forever
from .joins import Joins
from .messages import decode
from .messages import encode
from .messages import Kind
from .messages import Message
from .messages import Op
from .reads import Reads
from .stream import WebhookStream
from .writer import Writer

if TYPE_CHECKING:
    from ..config import AppConfig
    from ..core import Core
    from ..webhooks import WebhookSender

log = logging.getLogger("flask_pusher.server.cluster")

#: Errors that mean Redis cannot be reached (or answered nonsense): the node
#: carries on alone and reconnects.
REDIS_ERRORS = (redis.exceptions.RedisError, OSError, asyncio.TimeoutError)
#: Seconds between reconnection attempts: from the first to the last, doubling.
RECONNECT_FIRST = 0.1
RECONNECT_MAX = 5.0


class RedisBackend:
    """This node's side of a cluster: the core's backend, through Redis.

    The core calls the :class:`~flask_pusher.server.backend.Backend` methods
    synchronously; they queue changes that one writer task sends to Redis in
    order, and what Redis decides comes back through pub/sub as the core's
    callbacks, whose effects are applied with ``apply``.

    :param core: this node's core; its ``backend`` is set to this.
    :param apply: applies effects (:meth:`flask_pusher.server.app.Server.apply`).
    :param webhooks: sends the webhook events this node takes from the stream.
    :param url: the Redis URL: ``redis://[[user]:password@]host[:port][/db]``,
        ``rediss://`` (TLS) or ``unix://path``.
    :param prefix: the start of every key and pub/sub channel name. Default
        :data:`~flask_pusher.server.config.DEFAULT_REDIS_PREFIX` (``--redis-prefix``).
    :param node_timeout: seconds after which a silent node is reaped. Default
        30.0 (``--node-timeout``).
    :param webhook_delay: seconds ``channel_vacated``/``member_removed`` wait
        for a cancelling ``channel_occupied``/``member_added``. Default 3.0.
    :raises ValueError: for a URL redis-py cannot use.
    """

    def __init__(
        self,
        core: Core,
        apply: Callable[[Effects], None],
        webhooks: WebhookSender,
        url: str,
        prefix: str = DEFAULT_REDIS_PREFIX,
        node_timeout: float = DEFAULT_NODE_TIMEOUT,
        webhook_delay: float = DEFAULT_WEBHOOK_DELAY,
    ) -> None:
        self.core = core
        self.apply = apply
        self.webhooks = webhooks
        self.prefix = prefix
        self.node_timeout = node_timeout
        # Any: with decode_responses=True redis-py answers str, but its
        # annotations say bytes | str everywhere.
        self.redis: Any = redis.asyncio.Redis.from_url(
            url,
            decode_responses=True,
            # User ids and infos may hold lone surrogates (a JSON "\ud800"),
            # which Lua's cjson refuses as escapes: they travel as bytes.
            encoding_errors="surrogatepass",
            socket_connect_timeout=5,
            socket_timeout=10,
            health_check_interval=30,
        )
        self.script = self.redis.register_script(script.load())
        #: Decides alone while Redis is away (Redis sends the webhooks of
        #: those changes once it is back).
        self.local = LocalBackend(core, state_hooks=False)
        core.backend = self
        self._apps_json = json.dumps(
            {
                app_id: {
                    "h": 1 if app.config.webhooks else 0,
                    "c": 1 if app.config.enable_subscription_count else 0,
                    "d": int(webhook_delay * 1000),
                }
                for app_id, app in core.apps_by_id.items()
            }
        )
        #: Whether Redis is reachable and this node's state is in it.
        self.up = False
        #: This node's id in the cluster: its name and a random part.
        self.node_id = ""
        #: Events delivered to this node's clients only: Redis was unreachable.
        self.events_not_published = 0
        self.writer = Writer(self._write, self._failed, self._is_up, REDIS_ERRORS)
        self.stream = WebhookStream(
            self.redis, prefix, core.apps_by_id, webhooks, self.writer.queue, self._is_up
        )
        self.reads = Reads(self.redis, prefix, REDIS_ERRORS)
        #: Presence subscriptions waiting for Redis.
        self.joins = Joins(core, self._apply, self.writer.queue, self._leave)
        #: The throttle of the subscription_count webhooks of this node's changes.
        self.count_hooks: CountThrottle[tuple[str, str]] = CountThrottle()
        self._tasks: list[asyncio.Task[None]] = []
        self._session_tasks: list[asyncio.Task[None]] = []
        self._recovering: asyncio.Task[None] | None = None
        self._down_since: float | None = None
        self._down_reason = "connecting to Redis"
        self._pubsub: Any = None
        self._closing = False

    def _is_up(self) -> bool:
        return self.up

    def _apply(self, effects: Effects) -> None:
        self.apply(effects)  # looked up at each call: tests replace apply

    # -- lifecycle ----------------------------------------------------------

    async def start(self, node: str) -> None:
        """Join the cluster as ``node``. If Redis cannot be reached, serve
        alone and keep trying (``/ready`` answers 503 meanwhile)."""
        self.node_id = self.stream.node_id = f"{node}/{uuid.uuid4().hex[:8]}"
        self._tasks = [
            asyncio.ensure_future(self.writer.run()),
            asyncio.ensure_future(beat_forever(self)),
        ]
        try:
            await self._connect()
        except REDIS_ERRORS as exc:
            self.lost(exc)
        else:
            log.info("node %s joined the cluster at %s", self.node_id, self._where())

    def not_ready(self) -> str | None:
        """Why this node is not ready (a readiness check), or ``None``."""
        return None if self.up else self._down_reason

    def stop_consuming(self) -> None:
        """Take no more webhook events from the shared stream (at shutdown,
        before the webhook sender closes)."""
        self.stream.consuming = False

    async def close(self) -> None:
        """Leave the cluster: send the changes still queued (the clients
        closed by the shutdown), then mark this node as gone, so that another
        node takes over its unsent webhooks at its next heartbeat."""
        self._closing = True
        if self.up:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.written(), 2.0)
            with contextlib.suppress(*REDIS_ERRORS):
                gone = self.redis.zadd(f"{self.prefix}:nodes", {self.node_id: 0})
                await asyncio.wait_for(gone, 2.0)
        self.writer.release()  # what still waits is answered now (shutting down)
        for task in [*self._tasks, *self._session_tasks]:
            task.cancel()
        if self._recovering is not None:
            self._recovering.cancel()
        await asyncio.gather(*self._tasks, *self._session_tasks, return_exceptions=True)
        await self._close_pubsub()
        with contextlib.suppress(*REDIS_ERRORS):
            await self.redis.aclose()

    def _where(self) -> str:
        kwargs = self.redis.connection_pool.connection_kwargs
        if "path" in kwargs:
            return f"unix:{kwargs['path']}"
        return f"{kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('db', 0)}"

    async def _connect(self) -> None:
        """Connect (again): subscribe, load the caches, put this node's state
        into Redis, start reading."""
        # Connections from before a Redis restart would fail once each.
        await self.redis.connection_pool.disconnect()
        await self.redis.ping()
        await self.stream.create_group(redis.exceptions.ResponseError)
        await self._close_pubsub()
        self._pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(f"{self.prefix}:to:{self.node_id}")
        await self.reads.load_caches(self.core)
        # From here on the core's changes are queued after the full state.
        self.up = True
        self.writer.sync(self.desired(), first=True)
        self.stream.acknowledge_later()
        self._session_tasks = [
            asyncio.ensure_future(self._listen(self._pubsub)),
            asyncio.ensure_future(self._consume()),
        ]

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                await pubsub.aclose()

    async def _write(self, ops: bytes) -> Any:
        return self.stream.dropped(await self.script(args=self.args("ops", ops)))

    def args(self, mode: str, extra: Any) -> list[Any]:
        """The script's arguments for ``mode`` (``ops``, ``beat``, ``admit`` or ``take``)."""
        return [self.prefix, self.node_id, mode, self._apps_json, extra]

    def _dropped(self, ops: list[list[Any]]) -> None:
        """Operations that will never be written: count the events, keep the
        acknowledgements for later."""
        self.events_not_published += sum(1 for op in ops if op[0] == Op.PUBLISH)
        self.stream.unacknowledged.extend(op[1] for op in ops if op[0] == Op.ACK)

    def _failed(self, ops: list[list[Any]], exc: BaseException) -> None:
        self._dropped(ops)
        self.lost(exc)

    def lost(self, exc: BaseException) -> None:
        """Redis failed: serve alone, and reconnect in the background."""
        if self._closing:
            return
        was_up = self.up
        self.up = False
        self._down_reason = _unreachable(exc)
        if was_up or self._down_since is None:
            self._down_since = time.monotonic()
            log.warning(
                "node %s lost Redis at %s (%s): serving its own clients alone, "
                "reconnecting; until then its clients miss the other nodes' events",
                self.node_id,
                self._where(),
                str(exc)[:200] or type(exc).__name__,
            )
        self._dropped(self.writer.drop())
        for task in self._session_tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self._session_tasks = []
        self.joins.complete_locally()
        if self._recovering is None or self._recovering.done():
            self._recovering = asyncio.ensure_future(self._recover())

    async def _recover(self) -> None:
        wait = RECONNECT_FIRST
        while not self._closing:
            await asyncio.sleep(wait * (0.5 + random.random()))
            try:
                await self._connect()
            except REDIS_ERRORS as exc:
                self._down_reason = _unreachable(exc)
                wait = min(wait * 2, RECONNECT_MAX)
                continue
            down = time.monotonic() - (self._down_since or time.monotonic())
            log.warning(
                "node %s is back in the cluster at %s after %.1f s (%d events could "
                "not be sent to other nodes meanwhile)",
                self.node_id,
                self._where(),
                down,
                self.events_not_published,
            )
            self._down_since = None
            return

    def desired(self) -> list[list[Any]]:
        """This node's whole state, as the script's ``sync`` takes it."""
        desired: list[list[Any]] = []
        for app_id, app in self.core.apps_by_id.items():
            for name, channel in app.channels.items():
                desired.append([f"s\n{app_id}\n{name}", len(channel), None])
                for user_id, member in channel.members.items():
                    field = f"m\n{app_id}\n{name}\n{user_id}"
                    info = json.dumps(member.user_info)
                    desired.append([field, len(member.connections), info])
            for user_id, conns in app.users.items():
                desired.append([f"u\n{app_id}\n{user_id}", len(conns), None])
            desired.extend(limits.desired(app))
        return desired

    # -- the write queue ------------------------------------------------------

    @property
    def queued(self) -> int:
        """Changes queued since the start (they grow when an operation wrote one)."""
        return self.writer.queued

    def _queue(self, op: list[Any]) -> None:
        self.writer.queue(op)

    def after_written(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the changes queued so far are in Redis (at
        once if they are, or if Redis is unreachable)."""
        self.writer.after_written(callback)

    async def written(self) -> None:
        """Return once the changes queued so far are in Redis, or Redis is lost."""
        await self.writer.written()

    # -- reading: pub/sub and the webhook stream -------------------------------

    async def _listen(self, pubsub: Any) -> None:
        try:
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    self._on_message(message["data"])
        except asyncio.CancelledError:
            raise
        except REDIS_ERRORS as exc:
            if self._pubsub is pubsub:
                self.lost(exc)

    async def _consume(self) -> None:
        try:
            await self.stream.consume()
        except asyncio.CancelledError:
            raise
        except REDIS_ERRORS as exc:  # NOGROUP too: Redis lost its data, connect recreates it
            self.lost(exc)

    def _on_message(self, text: str) -> None:
        try:
            message = decode(text)
            app = self.core.apps_by_id.get(message.app)
            if app is not None:
                self._dispatch(app, message)
        except Exception:  # a bug must not stop this node's listening
            log.exception("cluster message not handled: %.200s", text)

    def _dispatch(self, app: AppState, message: Message) -> None:
        core = self.core
        kind = message.kind
        mine = message.origin == self.node_id
        if kind is Kind.EVENTS:
            if not mine:
                events = [
                    ({"name": e[0], "data": e[1], "socket_id": e[2]}, e[3]) for e in message.events
                ]
                self.apply(core.deliver(app, events))
        elif kind is Kind.CLIENT_EVENT:
            if not mine:
                self.apply(core.relay(app, message.channel, Encoded(message.frame)))
        elif kind is Kind.MEMBER_ADDED:
            name, user_id = message.channel, message.user
            frame = MemberAdded(name, user_id, json.loads(message.info))
            self.apply(core.relay(app, name, frame, message.exclude or None, user_id))
        elif kind is Kind.MEMBER_REMOVED:
            name = message.channel
            self.apply(core.relay(app, name, MemberRemoved(name, message.user)))
        elif kind is Kind.COUNT:
            self.apply(core.count_update(app, message.channel, message.count))
            # A channel left empty gets channel_vacated, as without a cluster.
            if not message.count:
                self.count_hooks.forget((app.config.app_id, message.channel))
            elif mine and app.config.webhooks:
                self._count_hook(app, message.channel, message.count)
        elif kind is Kind.ONLINE or kind is Kind.OFFLINE:
            self.apply(core.watchers_changed(app, message.user, kind is Kind.ONLINE))
        elif kind is Kind.TERMINATE:
            if not mine:
                self.apply(core.close_user(app, message.user))
        elif kind is Kind.JOINED:
            self.joins.answered(app, message)
        elif kind is Kind.CACHED:
            conn = app.connections.get(message.socket)
            if conn is not None:
                self._cache_answer(conn, message)
        elif kind is Kind.WATCHLIST:
            conn = app.connections.get(message.socket)
            if conn is not None:
                self.apply(core.watch_state(conn, set(message.online or ())))

    def _cache_answer(self, conn: Connection, message: Message) -> None:
        cached: tuple[str, str] | None = None
        value, ttl = message.value, message.ttl
        if isinstance(value, str) and isinstance(ttl, int) and ttl > 0:
            with contextlib.suppress(ValueError, TypeError):
                event, data = json.loads(value)
                cached = (str(event), str(data))
        effects = self.core.cache_answer(conn, message.channel, cached, (ttl or 0) / 1000)
        # After the subscription_succeeded that waits for the same write.
        self.after_written(functools.partial(self.apply, effects))

    def _count_hook(self, app: AppState, name: str, total: int) -> None:
        """A ``subscription_count`` webhook for a change this node made,
        throttled as the core throttles its frames."""
        key = (app.config.app_id, name)
        if self.count_hooks.offer(key, total, time.monotonic()):
            self._send_count_hook(key, total)

    def _send_count_hook(self, key: tuple[str, str], total: int) -> None:
        event = {"name": "subscription_count", "channel": key[1], "subscription_count": total}
        self._queue([Op.WEBHOOK, key[0], json.dumps(event)])

    def flush_count_hooks(self) -> None:
        """Send the throttled ``subscription_count`` webhooks now due (each heartbeat)."""
        for key, total in self.count_hooks.due(time.monotonic()):
            self._send_count_hook(key, total)

    # -- the Backend ------------------------------------------------------------

    def subscribed(
        self, conn: Connection, channel: Channel, occupied: bool, effects: Effects
    ) -> None:
        if self.up:
            self._queue([Op.SUBSCRIBE, conn.app.config.app_id, channel.name, 1])

    def count_changed(self, app: AppState, channel: Channel, effects: Effects) -> None:
        if not self.up:  # else Redis publishes the cluster's count
            self.local.count_changed(app, channel, effects)

    def join(
        self, conn: Connection, name: str, user_id: str, user_info: Any, effects: Effects
    ) -> None:
        if self.up:
            self.joins.ask(conn, name, user_id, user_info, False)
        else:
            self.local.join(conn, name, user_id, user_info, effects)

    def rejoin(self, conn: Connection, name: str, effects: Effects) -> None:
        if self.up:
            self.joins.ask(conn, name, conn.presence[name] if conn.presence else "", None, True)
        else:
            self.local.rejoin(conn, name, effects)

    def left(
        self,
        conn: Connection,
        channel: Channel,
        user_id: str | None,
        vacated: bool,
        last: bool,
        effects: Effects,
    ) -> None:
        if self.up:
            self._leave(conn.app, channel.name, user_id)
        else:
            self.local.left(conn, channel, user_id, vacated, last, effects)

    def _leave(self, app: AppState, name: str, user_id: str | None) -> None:
        app_id = app.config.app_id
        if user_id is not None:
            self._queue([Op.MEMBER, app_id, name, user_id, -1, None, None])
        self._queue([Op.SUBSCRIBE, app_id, name, -1])

    def cancel_join(self, conn: Connection, name: str) -> None:
        self.joins.cancel(conn, name)

    def disconnected(self, conn: Connection) -> None:
        self.joins.disconnected(conn)
        limits.released(self, conn)

    admit = limits.admit  # the limits across nodes
    take = limits.take

    def signed_in(self, conn: Connection, first: bool, effects: Effects) -> None:
        if not self.up:
            self.local.signed_in(conn, first, effects)
            return
        app_id = conn.app.config.app_id
        self._queue([Op.SIGNIN, app_id, conn.user_id, 1])
        if conn.watchlist:
            self._queue([Op.WATCHLIST, app_id, conn.socket_id, list(conn.watchlist)])

    def signed_out(self, app: AppState, user_id: str, last: bool, effects: Effects) -> None:
        if self.up:
            self._queue([Op.SIGNIN, app.config.app_id, user_id, -1])
        else:
            self.local.signed_out(app, user_id, last, effects)

    def cache_miss(self, conn: Connection, name: str, effects: Effects) -> None:
        if not self.up:
            self.local.cache_miss(conn, name, effects)
            return
        app_id = conn.app.config.app_id
        key = f"{self.prefix}:{app_id}:cache:{name}"
        self._queue([Op.CACHE_GET, app_id, key, conn.socket_id, name])  # answered by cache_answer()

    def count_sent(self, app: AppState, name: str, count: int, effects: Effects) -> None:
        pass  # the node whose change it was sends the webhook (_count_hook)

    def publish(self, app: AppState, events: Events) -> None:
        """Send events this node accepted (and delivered to its own clients)
        to the other nodes; keep a cache channel's event in Redis."""
        if not self.up:
            self.events_not_published += len(events)
            return
        app_id = app.config.app_id
        ttl = int(app.config.cache_ttl * 1000)
        packed = []
        for item, channels in events:
            packed.append([item["name"], item["data"], item.get("socket_id"), channels])
            for name in channels:
                if names.is_cache(name) and ttl > 0:
                    value = json.dumps([item["name"], item["data"]])
                    self._queue([Op.CACHE_SET, f"{self.prefix}:{app_id}:cache:{name}", value, ttl])
        message = encode(Kind.EVENTS, app_id, origin=self.node_id, events=packed)
        self._queue([Op.PUBLISH, message])

    def client_event(self, app: AppState, event: ChannelEvent, socket_id: str) -> None:
        """Relay a client event to the channel's subscribers on other nodes."""
        if not self.up:
            self.events_not_published += 1
            return
        app_id = app.config.app_id
        frame, name = event.encode(), event.channel
        message = encode(Kind.CLIENT_EVENT, app_id, origin=self.node_id, channel=name, frame=frame)
        self._queue([Op.PUBLISH, message])

    def terminate(self, app: AppState, user_id: str) -> None:
        """Close ``user_id``'s connections on the other nodes too."""
        if not self.up:
            self.events_not_published += 1
            return
        message = encode(Kind.TERMINATE, app.config.app_id, origin=self.node_id, user=user_id)
        self._queue([Op.PUBLISH, message])

    def hook(self, app: AppConfig, event: dict[str, Any]) -> None:
        """Queue a webhook event the core decided alone (``client_event``,
        ``cache_miss``) in the shared stream, so that it survives this node."""
        if not app.webhooks:
            return
        if self.up:
            self._queue([Op.WEBHOOK, app.app_id, json.dumps(event)])
        else:
            self.webhooks.emit(app, event)


def _unreachable(exc: BaseException) -> str:
    """``/ready``'s reason: the error's type, never its text (Redis's address)."""
    return f"Redis unreachable ({type(exc).__name__})"
