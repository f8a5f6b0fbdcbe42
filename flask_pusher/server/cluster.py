"""Many server processes as one Pusher app, through one Redis server.

Imported only when a server is started with a Redis URL (``--redis``,
``PUSHER_SERVER_REDIS_URL``). Every process started with the same URL and
prefix is a *node* of one cluster. What the nodes share lives in Redis, and
every decision that must be taken once for the cluster is taken by one Lua
script (:data:`SCRIPT`), which Redis runs atomically:

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

HTTP API triggers and client events are delivered at once to the node's own
clients and published for the others (never echoed back to their node). The layout of the keys is in
``docs/scaling.rst``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from typing import TYPE_CHECKING

import redis.asyncio
import redis.exceptions
from aiohttp import web

from .. import names
from . import protocol
from . import users
from .errors import APIError
from .state import AppState
from .state import ChannelCounts
from .state import Connection
from .state import Effects
from .state import Snapshot
from .state import StateView

if TYPE_CHECKING:
    from .config import AppConfig
    from .core import Core
    from .webhooks import WebhookSender

log = logging.getLogger("flask_pusher.server.cluster")

#: Errors that mean Redis cannot be reached (or answered nonsense): the node
#: carries on alone and reconnects.
REDIS_ERRORS = (redis.exceptions.RedisError, OSError, asyncio.TimeoutError)
#: Seconds between two heartbeats of a node (fewer with a short node timeout).
BEAT_INTERVAL = 1.0
#: Seconds between reconnection attempts: from the first to the last, doubling.
RECONNECT_FIRST = 0.1
RECONNECT_MAX = 5.0
#: Changes sent to Redis in one script call at most.
MAX_OPS = 1000
#: Stream entries read at once, and the stream's approximate length cap.
READ_COUNT = 100
#: Webhooks of a channel above this many subscribers wait this many seconds
#: between two ``subscription_count`` events, as without a cluster.
COUNT_THROTTLE_SUBSCRIBERS = 100
COUNT_THROTTLE_INTERVAL = 5.0
GROUP = "senders"
#: Heartbeats between two looks for stream consumers that are no node any more.
ADOPT_EVERY = 5
#: Milliseconds a webhook stream entry must have been idle to be claimed.
CLAIM_IDLE = 1000

#: The cluster's one Lua script. ARGV: prefix, node id, mode, the apps'
#: settings as JSON ``{app_id: {"h": webhooks 0/1, "c": subscription counts
#: 0/1, "d": webhook delay in ms}}``, then the mode's arguments.
SCRIPT = r"""
local P = ARGV[1]
local node = ARGV[2]
local mode = ARGV[3]
local apps = cjson.decode(ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local WH = P .. ':wh'
local WHD = P .. ':whd'
local WHK = P .. ':whk'
local NODES = P .. ':nodes'
local nodekey = P .. ':node:' .. node

-- Every node has a pub/sub channel of its own: one subscription, so it sees
-- all messages in the order Redis published them, and none of its own echoed.
local live = nil
local function send(text, others)
  if live == nil then live = redis.call('ZRANGE', NODES, 0, -1) end
  for _, n in ipairs(live) do
    if not (others and n == node) then redis.call('PUBLISH', P .. ':to:' .. n, text) end
  end
end
local function pub(msg) send(cjson.encode(msg), false) end

local function hook(app, ev)
  local cfg = apps[app]
  if not cfg or cfg.h == 0 then return end
  local key = app .. '\n' .. ev.channel .. '\n' .. (ev.user_id or '')
  local name = ev.name
  if name == 'channel_vacated' or name == 'member_removed' then
    if cfg.d > 0 then
      local seq = redis.call('INCR', P .. ':whseq')
      local held = cjson.encode({a = app, e = ev, k = key, n = seq})
      redis.call('ZADD', WHD, now + cfg.d, held)
      redis.call('HSET', WHK, key, held)
      return
    end
  else
    local held = redis.call('HGET', WHK, key)
    if held then
      redis.call('ZREM', WHD, held)
      redis.call('HDEL', WHK, key)
      return
    end
  end
  redis.call('XADD', WH, 'MAXLEN', '~', 100000, '*', 'a', app, 'e', cjson.encode(ev))
end

local function nodeadd(f, d)
  local cur = tonumber(redis.call('HGET', nodekey, f) or '0')
  if cur + d < 0 then d = -cur end
  if d == 0 then return 0 end
  if cur + d == 0 then
    redis.call('HDEL', nodekey, f)
  else
    redis.call('HINCRBY', nodekey, f, d)
  end
  return d
end

local function sub(app, chan, d)
  d = nodeadd('s\n' .. app .. '\n' .. chan, d)
  if d == 0 then return end
  local key = P .. ':' .. app .. ':ch'
  local total = redis.call('HINCRBY', key, chan, d)
  if total <= 0 then
    redis.call('HDEL', key, chan)
    total = 0
  end
  local before = total - d
  if before <= 0 and total > 0 then hook(app, {name = 'channel_occupied', channel = chan}) end
  if total == 0 and before > 0 then hook(app, {name = 'channel_vacated', channel = chan}) end
  local cfg = apps[app]
  if cfg and cfg.c == 1 and string.sub(chan, 1, 9) ~= 'presence-' then
    pub({k = 'n', a = app, c = chan, n = total, o = node})
  end
end

local function member(app, chan, user, d, info, sid)
  d = nodeadd('m\n' .. app .. '\n' .. chan .. '\n' .. user, d)
  if d == 0 then return end
  local pm = P .. ':' .. app .. ':pm:' .. chan
  local pi = P .. ':' .. app .. ':pi:' .. chan
  local n = redis.call('HINCRBY', pm, user, d)
  if n <= 0 then
    redis.call('HDEL', pm, user)
    redis.call('HDEL', pi, user)
    if n - d > 0 then
      pub({k = 'mr', a = app, c = chan, u = user})
      hook(app, {name = 'member_removed', channel = chan, user_id = user})
    end
  elseif n - d <= 0 then
    redis.call('HSET', pi, user, info or 'null')
    pub({k = 'ma', a = app, c = chan, u = user, i = info or 'null', x = sid or ''})
    hook(app, {name = 'member_added', channel = chan, user_id = user})
  end
end

local function signed(app, uid, d)
  d = nodeadd('u\n' .. app .. '\n' .. uid, d)
  if d == 0 then return end
  local key = P .. ':' .. app .. ':users'
  local n = redis.call('HINCRBY', key, uid, d)
  if n <= 0 then
    redis.call('HDEL', key, uid)
    if n - d > 0 then pub({k = 'off', a = app, u = uid}) end
  elseif n - d <= 0 then
    pub({k = 'on', a = app, u = uid})
  end
end

local function change(f, d, info)
  local kind = string.sub(f, 1, 1)
  local count = (kind == 'm') and 4 or 3
  local parts = {}
  local start = 1
  for i = 1, count - 1 do
    local j = string.find(f, '\n', start, true)
    parts[i] = string.sub(f, start, j - 1)
    start = j + 1
  end
  parts[count] = string.sub(f, start)
  if kind == 's' then sub(parts[2], parts[3], d)
  elseif kind == 'm' then member(parts[2], parts[3], parts[4], d, info, nil)
  else signed(parts[2], parts[3], d) end
end

-- Make this node's counts those of `desired` ({{field, count, info}, ...}):
-- removals first (members before subscriptions), then additions.
local function sync(desired)
  local want, infos, cur = {}, {}, {}
  for _, e in ipairs(desired) do
    want[e[1]] = e[2]
    infos[e[1]] = e[3]
  end
  local flat = redis.call('HGETALL', nodekey)
  for i = 1, #flat, 2 do cur[flat[i]] = tonumber(flat[i + 1]) end
  for _, kind in ipairs({'m', 's', 'u'}) do
    for f, c in pairs(cur) do
      local d = (want[f] or 0) - c
      if string.sub(f, 1, 1) == kind and d < 0 then change(f, d, nil) end
    end
  end
  for _, kind in ipairs({'s', 'm', 'u'}) do
    for f, n in pairs(want) do
      local d = n - (cur[f] or 0)
      if string.sub(f, 1, 1) == kind and d > 0 then change(f, d, infos[f]) end
    end
  end
end

if mode == 'ops' then
  local to_node = P .. ':to:' .. node
  for _, op in ipairs(cjson.decode(ARGV[5])) do
    local t = op[1]
    if t == 's' then sub(op[2], op[3], op[4])
    elseif t == 'm' then member(op[2], op[3], op[4], op[5], op[6], op[7])
    elseif t == 'u' then signed(op[2], op[3], op[4])
    elseif t == 'j' then
      -- a presence subscription: app, channel, user, info, socket id, member limit,
      -- join number
      local pm = P .. ':' .. op[2] .. ':pm:' .. op[3]
      if redis.call('HEXISTS', pm, op[4]) == 0 and redis.call('HLEN', pm) >= op[7] then
        redis.call('PUBLISH', to_node,
          cjson.encode({k = 'jr', a = op[2], c = op[3], x = op[6], s = op[8]}))
      else
        sub(op[2], op[3], 1)
        member(op[2], op[3], op[4], 1, op[5], op[6])
        local members = redis.call('HGETALL', P .. ':' .. op[2] .. ':pi:' .. op[3])
        redis.call('PUBLISH', to_node,
          cjson.encode({k = 'jr', a = op[2], c = op[3], x = op[6], s = op[8], m = members}))
      end
    elseif t == 'q' then
      -- the members of a presence channel: app, channel, socket id, join number
      local members = redis.call('HGETALL', P .. ':' .. op[2] .. ':pi:' .. op[3])
      redis.call('PUBLISH', to_node,
        cjson.encode({k = 'jr', a = op[2], c = op[3], x = op[4], s = op[5], m = members}))
    elseif t == 'g' then
      -- a cache channel's last event: app, key, socket id, channel
      local value = redis.call('GET', op[3])
      local ttl = redis.call('PTTL', op[3])
      redis.call('PUBLISH', to_node,
        cjson.encode({k = 'cr', a = op[2], x = op[4], c = op[5], v = value, t = ttl}))
    elseif t == 'w' then
      -- a signed-in connection's watchlist: app, socket id, user ids
      local key = P .. ':' .. op[2] .. ':users'
      local on = {}
      for _, id in ipairs(op[4]) do
        if redis.call('HEXISTS', key, id) == 1 then on[#on + 1] = id end
      end
      redis.call('PUBLISH', to_node, cjson.encode({k = 'wr', a = op[2], x = op[3], on = on}))
    elseif t == 'p' then send(op[2], true)
    elseif t == 'c' then redis.call('SET', op[2], op[3], 'PX', op[4])
    elseif t == 'h' then redis.call('XADD', WH, 'MAXLEN', '~', 100000, '*', 'a', op[2], 'e', op[3])
    elseif t == 'a' then
      redis.call('XACK', WH, 'senders', op[2])
      redis.call('XDEL', WH, op[2])
    elseif t == 'S' then
      redis.call('ZADD', NODES, now, node)
      live = nil
      sync(op[2])
    end
  end
  return 0
elseif mode == 'beat' then
  local timeout = tonumber(ARGV[5])
  local existed = redis.call('ZSCORE', NODES, node)
  redis.call('ZADD', NODES, now, node)
  local due = redis.call('ZRANGEBYSCORE', WHD, '-inf', now, 'LIMIT', 0, 500)
  for _, held in ipairs(due) do
    redis.call('ZREM', WHD, held)
    local h = cjson.decode(held)
    if redis.call('HGET', WHK, h.k) == held then redis.call('HDEL', WHK, h.k) end
    redis.call('XADD', WH, 'MAXLEN', '~', 100000, '*', 'a', h.a, 'e', cjson.encode(h.e))
  end
  local dead = redis.call('ZRANGEBYSCORE', NODES, '-inf', now - timeout, 'LIMIT', 0, 10)
  for _, d in ipairs(dead) do
    nodekey = P .. ':node:' .. d
    sync({})
    redis.call('DEL', nodekey)
    redis.call('ZREM', NODES, d)
  end
  return {existed and 1 or 0, dead}
end
return redis.error_reply('unknown mode ' .. mode)
"""


class _Join:
    """A presence subscription waiting for the cluster's answer."""

    __slots__ = ("again", "cancelled", "conn", "name", "user_id", "user_info")

    def __init__(
        self, conn: Connection, name: str, user_id: str, user_info: Any, again: bool
    ) -> None:
        self.conn = conn
        self.name = name
        self.user_id = user_id
        self.user_info = user_info
        self.again = again  # already subscribed: only the member list is asked
        self.cancelled = False


class Cluster:
    """This node's side of a cluster: the link between its core and Redis.

    The core calls the hooks (:meth:`join`, :meth:`subscribed`,
    :meth:`publish`, ...) synchronously; they queue changes that one writer
    task sends to Redis in order, and what Redis decides comes back through
    pub/sub as effects applied with ``apply``.

    :param core: this node's core; its apps' ``cluster`` is set to this.
    :param apply: applies effects (:meth:`flask_pusher.server.app.Server.apply`).
    :param webhooks: sends the webhook events this node takes from the stream.
    :param url: the Redis URL: ``redis://[[user]:password@]host[:port][/db]``,
        ``rediss://`` (TLS) or ``unix://path``.
    :param prefix: the start of every key and pub/sub channel name. Default
        ``flask-pusher`` (``--redis-prefix``).
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
        prefix: str = "flask-pusher",
        node_timeout: float = 30.0,
        webhook_delay: float = 3.0,
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
        self._script = self.redis.register_script(SCRIPT)
        for app in core.apps_by_id.values():
            app.cluster = self
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
        self.stream = f"{prefix}:wh"
        #: Events delivered to this node's clients only: Redis was unreachable.
        self.events_not_published = 0
        self._ops: list[list[Any]] = []
        #: Changes queued and written since the start (a full state "S" not
        #: counted), and what waits for a change to be written.
        self.queued = 0
        self._written = 0
        self._waiters: collections.deque[tuple[int, Callable[[], None]]] = collections.deque()
        self._wake = asyncio.Event()
        #: Joins waiting for Redis, by number (the answer carries it), and
        #: the number of the latest one of each (app, socket id, channel).
        self._joins: dict[int, _Join] = {}
        self._waiting: dict[tuple[str, str, str], int] = {}
        self._join_numbers = itertools.count(1)
        #: Webhook stream entries sent while Redis was away, to acknowledge.
        self._unacknowledged: list[str] = []
        #: subscription_count webhooks held back by the throttle: (count, due).
        self._count_hooks: dict[tuple[str, str], tuple[int, float]] = {}
        self._count_hook_sent: dict[tuple[str, str], float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._session_tasks: list[asyncio.Task[None]] = []
        self._recovering: asyncio.Task[None] | None = None
        self._down_since: float | None = None
        self._down_reason = "connecting to Redis"
        self._pubsub: Any = None
        self._closing = False
        self._consuming = True
        webhooks.on_done = self._webhook_done

    # -- lifecycle ----------------------------------------------------------

    async def start(self, node: str) -> None:
        """Join the cluster as ``node``. If Redis cannot be reached, serve
        alone and keep trying (``/ready`` answers 503 meanwhile)."""
        self.node_id = f"{node}/{uuid.uuid4().hex[:8]}"
        self._tasks = [
            asyncio.ensure_future(self._writer()),
            asyncio.ensure_future(self._beat()),
        ]
        try:
            await self._connect()
        except REDIS_ERRORS as exc:
            self._lost(exc)
        else:
            log.info("node %s joined the cluster at %s", self.node_id, self._where())

    def not_ready(self) -> str | None:
        """Why this node is not ready (a readiness check), or ``None``."""
        return None if self.up else self._down_reason

    def stop_consuming(self) -> None:
        """Take no more webhook events from the shared stream (at shutdown,
        before the webhook sender closes)."""
        self._consuming = False

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
        self._wrote(self.queued)  # what still waits is answered now (shutting down)
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
        with contextlib.suppress(redis.exceptions.ResponseError):  # BUSYGROUP: it exists
            await self.redis.xgroup_create(self.stream, GROUP, id="$", mkstream=True)
        await self._close_pubsub()
        self._pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(f"{self.prefix}:to:{self.node_id}")
        await self._load_caches()
        # From here on the core's changes are queued after the full state.
        self.up = True
        self._ops.insert(0, ["S", self._desired()])
        acknowledged, self._unacknowledged = self._unacknowledged, []
        for entry_id in acknowledged:
            self._queue(["a", entry_id])
        self._wake.set()
        self._session_tasks = [
            asyncio.ensure_future(self._listen(self._pubsub)),
            asyncio.ensure_future(self._consume()),
        ]

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                await pubsub.aclose()

    def _lost(self, exc: BaseException) -> None:
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
        dropped = sum(1 for op in self._ops if op[0] == "p")
        self.events_not_published += dropped
        self._unacknowledged.extend(op[1] for op in self._ops if op[0] == "a")
        self._ops.clear()
        self._wrote(self.queued)
        for task in self._session_tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self._session_tasks = []
        # Presence subscriptions waiting for Redis are completed with what this node knows.
        joins, self._joins = self._joins, {}
        self._waiting.clear()
        for join in joins.values():
            conn, name = join.conn, join.name
            if join.cancelled or conn.closing:
                continue
            members = conn.app.members(name)
            if join.again:
                self._confirm(conn, name, members)
                continue
            members.setdefault(join.user_id, join.user_info)
            self.apply(self.core.join_done(conn, name, join.user_id, join.user_info, members))
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

    def _desired(self) -> list[list[Any]]:
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
        return desired

    # -- the writer and the heartbeat ------------------------------------------

    def _queue(self, op: list[Any]) -> None:
        self._ops.append(op)
        self.queued += 1
        self._wake.set()

    def after_written(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the changes queued so far are in Redis (at
        once if they are, or if Redis is unreachable)."""
        if not self.up or self._written >= self.queued:
            callback()
        else:
            self._waiters.append((self.queued, callback))

    async def written(self) -> None:
        """Return once the changes queued so far are in Redis, or Redis is lost."""
        if not self.up or self._written >= self.queued:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not done.done():
                done.set_result(None)

        self._waiters.append((self.queued, wake))
        await done

    def _wrote(self, count: int) -> None:
        self._written = count
        waiters = self._waiters
        while waiters and waiters[0][0] <= count:
            waiters.popleft()[1]()

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._ops and self.up:
                ops = self._ops[:MAX_OPS]
                del self._ops[:MAX_OPS]
                try:
                    await self._script(args=self._args("ops", _pack(ops)))
                except REDIS_ERRORS as exc:
                    self.events_not_published += sum(1 for op in ops if op[0] == "p")
                    self._unacknowledged.extend(op[1] for op in ops if op[0] == "a")
                    self._lost(exc)
                    break
                self._wrote(self._written + sum(1 for op in ops if op[0] != "S"))

    def _args(self, mode: str, extra: Any) -> list[Any]:
        return [self.prefix, self.node_id, mode, self._apps_json, extra]

    async def _beat(self) -> None:
        interval = min(BEAT_INTERVAL, self.node_timeout / 3)
        timeout_ms = int(self.node_timeout * 1000)
        for beat in itertools.count(1):
            await asyncio.sleep(interval)
            if not self.up:
                continue
            try:
                existed, dead = await self._script(args=self._args("beat", timeout_ms))
                if not existed and self.up:
                    # Reaped while this node could not beat: put its state back.
                    log.warning("node %s was taken for dead: re-registering", self.node_id)
                    # After the changes queued: they are in the state it writes.
                    self._ops.append(["S", self._desired()])
                    self._wake.set()
                for node in dead:
                    log.warning("node %s stopped answering: its connections were removed", node)
                    await self._claim(node)
                if beat % ADOPT_EVERY == 0:
                    await self._adopt()
            except REDIS_ERRORS as exc:
                self._lost(exc)
                continue
            self._flush_count_hooks()

    async def _claim(self, node: str) -> None:
        """Take over the webhook events a dead node had taken but not sent.

        Only entries idle for :data:`CLAIM_IDLE` ms: a claim makes them busy
        again, so two nodes claiming at once do not both send them.
        """
        pending = await self.redis.xpending_range(
            self.stream, GROUP, min="-", max="+", count=10_000, consumername=node
        )
        ids = [p["message_id"] for p in pending]
        if not ids:
            return
        claimed = await self.redis.xclaim(self.stream, GROUP, self.node_id, CLAIM_IDLE, ids)
        if claimed:
            self._take(claimed)
            log.warning("took over %d webhook events of dead node %s", len(claimed), node)

    async def _adopt(self) -> None:
        """Take over the events of stream consumers that are no node any
        more (a claim that failed, a node gone while none was left to reap
        it), and forget those that hold none."""
        live = set(await self.redis.zrange(f"{self.prefix}:nodes", 0, -1))
        for consumer in await self.redis.xinfo_consumers(self.stream, GROUP):
            name = consumer["name"]
            if name in live or name == self.node_id:
                continue
            if consumer["pending"]:
                await self._claim(name)
            else:
                await self.redis.xgroup_delconsumer(self.stream, GROUP, name)

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
                self._lost(exc)

    async def _consume(self) -> None:
        try:
            while self._consuming:
                entries = await self.redis.xreadgroup(
                    GROUP, self.node_id, {self.stream: ">"}, count=READ_COUNT, block=1000
                )
                for _, items in entries or ():
                    self._take(items)
        except asyncio.CancelledError:
            raise
        except REDIS_ERRORS as exc:  # NOGROUP too: Redis lost its data, connect recreates it
            self._lost(exc)

    def _take(self, items: list[tuple[str, Mapping[str, str] | None]]) -> None:
        apps = self.core.apps_by_id
        for entry_id, fields in items:
            if not fields:
                continue
            app = apps.get(fields.get("a", ""))
            try:
                event = json.loads(fields.get("e", ""))
            except ValueError:
                event = None
            if app is None or not isinstance(event, dict):
                self._queue(["a", entry_id])
                continue
            self.webhooks.emit(app.config, event, token=entry_id)

    def _webhook_done(self, entry_id: str) -> None:
        if self.up:
            self._queue(["a", entry_id])
        else:  # acknowledged once Redis is back
            self._unacknowledged.append(entry_id)

    def _on_message(self, text: str) -> None:
        try:
            message = json.loads(text)
            app = self.core.apps_by_id.get(message["a"])
            if app is not None:
                self._dispatch(app, message["k"], message)
        except Exception:  # a bug must not stop this node's listening
            log.exception("cluster message not handled: %.200s", text)

    def _dispatch(self, app: AppState, kind: str, message: dict[str, Any]) -> None:
        core = self.core
        mine = message.get("o") == self.node_id
        if kind == "e":
            if not mine:
                events = [
                    ({"name": e[0], "data": e[1], "socket_id": e[2]}, e[3]) for e in message["ev"]
                ]
                self.apply(core.deliver(app, events))
        elif kind == "ce":
            if not mine:
                self.apply(core.relay(app, message["c"], message["f"]))
        elif kind == "ma":
            name, user_id = message["c"], message["u"]
            frame = protocol.member_added(name, user_id, json.loads(message["i"]))
            self.apply(core.relay(app, name, frame, message.get("x") or None, user_id))
        elif kind == "mr":
            name = message["c"]
            self.apply(core.relay(app, name, protocol.member_removed(name, message["u"])))
        elif kind == "n":
            self.apply(core.count_update(app, message["c"], message["n"]))
            # A channel left empty gets channel_vacated, as without a cluster.
            if mine and app.config.webhooks and message["n"]:
                self._count_hook(app, message["c"], message["n"])
        elif kind in ("on", "off"):
            effects = Effects()
            users.notify_watchers(app, message["u"], kind == "on", effects)
            self.apply(effects)
        elif kind == "t":
            if not mine:
                self.apply(core.close_user(app, message["u"]))
        elif kind == "jr":
            self._joined(app, message)
        elif kind == "cr":
            conn = app.connections.get(message["x"])
            if conn is not None:
                self._cache_answer(conn, message)
        elif kind == "wr":
            conn = app.connections.get(message["x"])
            if conn is not None:
                effects = Effects()
                users.watch_state(conn, set(message.get("on") or ()), effects)
                self.apply(effects)

    def _joined(self, app: AppState, message: dict[str, Any]) -> None:
        name, number = message["c"], message["s"]
        join = self._joins.pop(number, None)
        if join is None:
            return
        key = (app.config.app_id, message["x"], name)
        if self._waiting.get(key) == number:
            del self._waiting[key]
        flat = message.get("m")
        conn = join.conn
        if join.again:  # a repeated subscribe: confirmed, as one server does
            if not conn.closing and flat is not None:
                listed = {flat[i]: json.loads(flat[i + 1]) for i in range(0, len(flat), 2)}
                self._confirm(conn, name, listed)
            return
        if join.cancelled or conn.closing:
            if flat is not None:  # it was counted: count it out
                self._leave(app, name, join.user_id)
            return
        members = None
        if flat is not None:
            members = {flat[i]: json.loads(flat[i + 1]) for i in range(0, len(flat), 2)}
        self.apply(self.core.join_done(conn, name, join.user_id, join.user_info, members))

    def _confirm(self, conn: Connection, name: str, members: dict[str, Any]) -> None:
        """Confirm a repeated presence subscription with ``members``."""
        effects = Effects()
        data = protocol.presence_data(members)
        effects.send(conn, protocol.subscription_succeeded(name, data))
        self.apply(effects)

    def _cache_answer(self, conn: Connection, message: dict[str, Any]) -> None:
        cached: tuple[str, str] | None = None
        value, ttl = message.get("v"), message.get("t")
        if isinstance(value, str) and isinstance(ttl, int) and ttl > 0:
            with contextlib.suppress(ValueError, TypeError):
                event, data = json.loads(value)
                cached = (str(event), str(data))
        effects = self.core.cache_answer(conn, message["c"], cached, (ttl or 0) / 1000)
        # After the subscription_succeeded that waits for the same write.
        self.after_written(functools.partial(self.apply, effects))

    def _count_hook(self, app: AppState, name: str, total: int) -> None:
        """A ``subscription_count`` webhook for a change this node made,
        throttled above :data:`COUNT_THROTTLE_SUBSCRIBERS` subscribers."""
        key = (app.config.app_id, name)
        now = time.monotonic()
        last = self._count_hook_sent.get(key, float("-inf"))
        if total > COUNT_THROTTLE_SUBSCRIBERS and now - last < COUNT_THROTTLE_INTERVAL:
            self._count_hooks[key] = (total, last + COUNT_THROTTLE_INTERVAL)
            return
        self._count_hooks.pop(key, None)
        self._send_count_hook(key, total, now)

    def _send_count_hook(self, key: tuple[str, str], total: int, now: float) -> None:
        if total:
            self._count_hook_sent[key] = now
        else:
            self._count_hook_sent.pop(key, None)
        event = {"name": "subscription_count", "channel": key[1], "subscription_count": total}
        self._queue(["h", key[0], json.dumps(event)])

    def _flush_count_hooks(self) -> None:
        now = time.monotonic()
        for key, (total, due) in list(self._count_hooks.items()):
            if due <= now:
                del self._count_hooks[key]
                self._send_count_hook(key, total, now)

    # -- the core's hooks ------------------------------------------------------

    def join(
        self, conn: Connection, name: str, user_id: str, user_info: Any, again: bool = False
    ) -> None:
        """Ask the cluster to add ``conn`` to presence channel ``name`` (or,
        ``again``, for the members of a channel it is subscribed to);
        :meth:`~flask_pusher.server.core.Core.join_done` answers."""
        app_id = conn.app.config.app_id
        key = (app_id, conn.socket_id, name)
        number = self._waiting.get(key)
        if number is not None:
            waiting = self._joins[number]
            if again or not waiting.again:
                waiting.cancelled = False  # subscribed, unsubscribed, subscribed again
                return
            # Only the members were asked (a repeat, since unsubscribed): that
            # is still answered, and this subscription joins for real.
        number = next(self._join_numbers)
        self._joins[number] = _Join(conn, name, user_id, user_info, again)
        self._waiting[key] = number
        if again:
            self._queue(["q", app_id, name, conn.socket_id, number])
            return
        limit = conn.app.config.max_presence_members
        info = json.dumps(user_info)
        self._queue(["j", app_id, name, user_id, info, conn.socket_id, limit, number])

    def cancel_join(self, conn: Connection, name: str) -> None:
        """``conn`` unsubscribed from ``name`` before the cluster answered its join."""
        number = self._waiting.get((conn.app.config.app_id, conn.socket_id, name))
        if number is not None:
            self._joins[number].cancelled = True

    def subscribed(self, conn: Connection, name: str, user_id: str | None, user_info: Any) -> None:
        """``conn`` subscribed to ``name`` on this node without asking the
        cluster (any channel but presence, or presence while Redis is away)."""
        if not self.up:
            return
        app_id = conn.app.config.app_id
        self._queue(["s", app_id, name, 1])
        if user_id is not None:
            self._queue(["m", app_id, name, user_id, 1, json.dumps(user_info), conn.socket_id])

    def unsubscribed(self, conn: Connection, name: str, user_id: str | None) -> None:
        """``conn`` left ``name`` (as member ``user_id`` of a presence channel)."""
        if self.up:
            self._leave(conn.app, name, user_id)

    def _leave(self, app: AppState, name: str, user_id: str | None) -> None:
        app_id = app.config.app_id
        if user_id is not None:
            self._queue(["m", app_id, name, user_id, -1, None, None])
        self._queue(["s", app_id, name, -1])

    def disconnected(self, conn: Connection) -> None:
        """``conn`` is gone: its joins still waiting are cancelled."""
        for join in self._joins.values():
            if join.conn is conn:
                join.cancelled = True

    def signed_in(self, conn: Connection) -> None:
        """``conn`` signed in (its ``user_id`` and ``watchlist`` are set)."""
        if not self.up:
            return
        app_id = conn.app.config.app_id
        self._queue(["u", app_id, conn.user_id, 1])
        if conn.watchlist:
            self._queue(["w", app_id, conn.socket_id, list(conn.watchlist)])

    def signed_out(self, app: AppState, user_id: str) -> None:
        """A connection signed in as ``user_id`` closed or signed in again."""
        if self.up:
            self._queue(["u", app.config.app_id, user_id, -1])

    def cache_lookup(self, conn: Connection, name: str) -> None:
        """Ask Redis for cache channel ``name``'s last event for ``conn``;
        :meth:`~flask_pusher.server.core.Core.cache_answer` answers."""
        app_id = conn.app.config.app_id
        key = f"{self.prefix}:{app_id}:cache:{name}"
        self._queue(["g", app_id, key, conn.socket_id, name])

    def publish(self, app: AppState, events: list[tuple[dict[str, Any], list[str]]]) -> None:
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
                    self._queue(["c", f"{self.prefix}:{app_id}:cache:{name}", value, ttl])
        message = {"k": "e", "o": self.node_id, "a": app_id, "ev": packed}
        self._queue(["p", json.dumps(message)])

    def client_event(self, app: AppState, name: str, frame: str, socket_id: str) -> None:
        """Relay a client event to the channel's subscribers on other nodes."""
        if not self.up:
            self.events_not_published += 1
            return
        message = {"k": "ce", "o": self.node_id, "a": app.config.app_id, "c": name, "f": frame}
        self._queue(["p", json.dumps(message)])

    def terminate(self, app: AppState, user_id: str) -> None:
        """Close ``user_id``'s connections on the other nodes too."""
        if not self.up:
            self.events_not_published += 1
            return
        message = {"k": "t", "o": self.node_id, "a": app.config.app_id, "u": user_id}
        self._queue(["p", json.dumps(message)])

    def hook(self, app: AppConfig, event: dict[str, Any]) -> None:
        """Queue a webhook event the core decided alone (``client_event``,
        ``cache_miss``) in the shared stream, so that it survives this node."""
        if not app.webhooks:
            return
        if self.up:
            self._queue(["h", app.app_id, json.dumps(event)])
        else:
            self.webhooks.emit(app, event)

    # -- the HTTP API's reads ------------------------------------------------

    async def view(
        self, operation: str, request: web.Request, app: AppState, body: bytes
    ) -> StateView | None:
        """The cluster's counts and members an HTTP API operation reads.

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
                wanted = _trigger_channels(json.loads(body))
            except ValueError:
                return None
            if not wanted:
                return None
        try:
            return await self._read(operation, request, app, wanted)
        except REDIS_ERRORS as exc:
            if wanted is not None:  # a trigger is delivered; its info counts this node's
                return None
            raise APIError(503, "The cluster's shared state (Redis) is unreachable; retry") from exc

    async def _read(
        self, operation: str, request: web.Request, app: AppState, wanted: list[str] | None
    ) -> StateView:
        base = f"{self.prefix}:{app.config.app_id}"
        r = self.redis
        if operation in ("users", "channel"):
            name = request.match_info["channel"]
            if not names.valid_channel_name(name):
                return Snapshot({})  # the core answers 400
        if operation == "users":
            ids = await r.hkeys(f"{base}:pm:{name}")
            return Snapshot({}, {name: dict.fromkeys(ids)})
        if operation == "channels":
            prefix = request.query.get("filter_by_prefix", "")
            totals = {
                name: int(n)
                for name, n in (await r.hgetall(f"{base}:ch")).items()
                if name.startswith(prefix)
            }
        else:
            wanted = wanted if wanted is not None else [request.match_info["channel"]]
            values = await r.hmget(f"{base}:ch", wanted)
            totals = {name: int(n) for name, n in zip(wanted, values, strict=True) if n}
        presence = [name for name in totals if names.is_presence(name)]
        user_counts: dict[str, int] = {}
        if presence:
            async with r.pipeline(transaction=False) as pipe:
                for name in presence:
                    pipe.hlen(f"{base}:pm:{name}")
                user_counts = dict(zip(presence, await pipe.execute(), strict=True))
        counts = {
            name: ChannelCounts(total, user_counts.get(name, 0)) for name, total in totals.items()
        }
        return Snapshot(counts)

    async def _load_caches(self) -> None:
        """Take the cache channels' last events from Redis (a node that
        starts late knows them too)."""
        for app_id, app in self.core.apps_by_id.items():
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
                app.cache[key[len(start) :]] = (event, data, self.core.clock() + ttl / 1000)


def _pack(ops: list[list[Any]]) -> bytes:
    """The script's JSON argument: UTF-8, lone surrogates passed as bytes
    (cjson decodes a ``\ud800`` escape as an error, raw bytes as they are)."""
    return json.dumps(ops, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _trigger_channels(payload: Any) -> list[str]:
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


def _unreachable(exc: BaseException) -> str:
    """The public reason (``/ready``) for a Redis failure: the error's type,
    never its text, which names Redis's address (the log has it)."""
    return f"Redis unreachable ({type(exc).__name__})"
