"""Property test of a cluster: three nodes over one real Redis, random
subscribe / unsubscribe / signin / disconnect steps on connections spread over
the nodes, checked against the single-server model of presence members,
subscriber counts, the member lists every client sees and the webhooks the
cluster sends (reference §3.2, §5.6; issue 8 "exactly as one server would do it").

After each step the test waits until the cluster is quiet: once every node's
changes are in Redis, a marker published to every node has reached it (Redis
delivers a channel's messages in order), twice, since answers may queue more
changes.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import threading
from collections import Counter
from collections.abc import Callable
from collections.abc import Coroutine
from typing import Any
from typing import TypeVar

import pytest
from aiohttp import web
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize
from hypothesis.stateful import invariant
from hypothesis.stateful import precondition
from hypothesis.stateful import rule
from hypothesis.stateful import RuleBasedStateMachine

from flask_pusher.server import AppConfig
from flask_pusher.server import WebhookConfig
from flask_pusher.server.app import Server
from flask_pusher.server.cluster import Cluster
from flask_pusher.server.state import Connection
from flask_pusher.server.state import Effects

from .helpers import APP_ID
from .helpers import KEY
from .helpers import SECRET
from .helpers import user_auth
from .model import hook_key
from .model import Model
from .model import Slot
from .redis_server import RedisServer

T = TypeVar("T")
NODES = 3
SLOTS = st.integers(0, 5)
NODE = st.integers(0, NODES - 1)
CHANNELS = st.sampled_from(["news", "private-p", "presence-a", "presence-a", "presence-b"])
USERS = st.sampled_from(["u1", "u2"])
QUIET_TIMEOUT = 3.0


class Loop:
    """An event loop in a thread, for the nodes, driven from the sync test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(QUIET_TIMEOUT * 2)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Node:
    """One node: a Server's core and cluster, with the frames it sends recorded."""

    def __init__(self, server: Server, frames: dict[Connection, list[dict[str, Any]]]) -> None:
        self.server = server
        cluster = server.cluster
        assert cluster is not None
        self.cluster: Cluster = cluster
        self.frames = frames
        self.markers: set[int] = set()
        cluster.apply = self.apply
        seen = cluster._on_message

        def on_message(text: str) -> None:
            message = json.loads(text)
            if message.get("k") == "marker":
                self.markers.add(message["n"])
            else:
                seen(text)

        cluster._on_message = on_message  # type: ignore[method-assign]

    def apply(self, effects: Effects) -> None:
        for send in effects.sends:
            for conn in send.to:
                self.frames.setdefault(conn, []).append(json.loads(send.frame))
        for hook in effects.webhooks:
            self.cluster.hook(hook.app, hook.event)


class NodeSlot(Slot):
    """The model of one connection, and the node it is on."""

    def __init__(self, node: Node, conn: Connection) -> None:
        super().__init__(conn)
        self.node = node


_prefixes = itertools.count()


class ClusterModel(Model, RuleBasedStateMachine):
    url = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = Loop()
        self.hooks: Counter[str] = Counter()
        self.expected: Counter[str] = Counter()
        self.frames: dict[Connection, list[dict[str, Any]]] = {}
        self.slots: dict[int, NodeSlot] = {}
        self.markers = itertools.count()
        self.nodes = self.loop.run(self._start())

    async def _start(self) -> list[Node]:
        async def receive(request: web.Request) -> web.Response:
            for event in (await request.json())["events"]:
                if event["name"] != "subscription_count":
                    self.hooks[hook_key(event)] += 1
            return web.Response()

        receiver = web.Application()
        receiver.router.add_post("/hooks", receive)
        self.runner = web.AppRunner(receiver)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        app = AppConfig(
            APP_ID, KEY, SECRET, webhooks=[WebhookConfig(f"http://127.0.0.1:{port}/hooks")]
        )
        prefix = f"model{next(_prefixes)}"
        nodes = []
        for i in range(NODES):
            server = Server([app], redis_url=self.url, redis_prefix=prefix, webhook_delay=0.0)
            node = Node(server, self.frames)
            await node.cluster.start(f"node{i}")
            assert node.cluster.up
            nodes.append(node)
        return nodes

    def teardown(self) -> None:
        async def stop() -> None:
            for node in self.nodes:
                node.cluster.stop_consuming()
                await node.server.webhooks.close()
                await node.cluster.close()
            await self.runner.cleanup()

        self.loop.run(stop())
        self.loop.close()

    # -- waiting for a quiet cluster -------------------------------------------

    async def _quiet(self) -> None:
        for _ in range(2):
            n = next(self.markers)
            for node in self.nodes:
                await node.cluster.written()
            marker = json.dumps({"k": "marker", "a": APP_ID, "n": n})
            redis = self.nodes[0].cluster.redis
            for node in self.nodes:
                await redis.publish(f"{node.cluster.prefix}:to:{node.cluster.node_id}", marker)
            await _until(functools.partial(self._marked, n))
        # Webhook events the step decided: sent once the receiver has them all.
        await _until(lambda: sum(self.hooks.values()) >= sum(self.expected.values()))

    def _marked(self, n: int) -> bool:
        return all(n in node.markers for node in self.nodes)

    def step(self, node: Node, operation: Any) -> None:
        """Run ``operation(core)`` on ``node``'s loop, apply it, wait for quiet."""

        async def run() -> None:
            node.apply(operation(node.server.core))
            await self._quiet()

        self.loop.run(run())

    # -- rules -----------------------------------------------------------------

    @initialize()
    def connect_one_per_node(self) -> None:
        for i in range(NODES):
            self.connect(i, i)

    @precondition(lambda self: len(self.slots) < 6)
    @rule(slot=SLOTS, node=NODE)
    def connect(self, slot: int, node: int) -> None:
        if slot in self.slots:
            return
        n = self.nodes[node]

        async def connect() -> Connection:
            effects = n.server.core.connect(n.server.core.apps_by_key[KEY])
            n.apply(effects)
            conn: Connection = effects.result
            return conn

        self.slots[slot] = NodeSlot(n, self.loop.run(connect()))

    @rule(slot=SLOTS, channel=CHANNELS, user=st.none() | USERS)
    def subscribe(self, slot: int, channel: str, user: str | None) -> None:
        s = self.slots.get(slot)
        if s is None:
            return
        before = self.snapshot()
        text = s.subscribe(channel, user)
        self.expected += self.hooks_since(before)
        self.step(s.node, lambda core: core.receive(s.conn, text))

    @rule(slot=SLOTS, channel=CHANNELS)
    def unsubscribe(self, slot: int, channel: str) -> None:
        s = self.slots.get(slot)
        if s is None:
            return
        before = self.snapshot()
        s.channels.pop(channel, None)
        self.expected += self.hooks_since(before)
        text = json.dumps({"event": "pusher:unsubscribe", "data": {"channel": channel}})
        self.step(s.node, lambda core: core.receive(s.conn, text))

    @rule(slot=SLOTS, user=USERS)
    def signin(self, slot: int, user: str) -> None:
        s = self.slots.get(slot)
        if s is None:
            return
        s.user = user
        text = json.dumps(
            {"event": "pusher:signin", "data": user_auth(s.conn.socket_id, {"id": user})}
        )
        self.step(s.node, lambda core: core.receive(s.conn, text))

    @rule(slot=SLOTS)
    def disconnect(self, slot: int) -> None:
        if slot not in self.slots:
            return
        before = self.snapshot()
        s = self.slots.pop(slot)
        self.expected += self.hooks_since(before)
        self.step(s.node, lambda core: core.disconnect(s.conn))

    # -- invariants ------------------------------------------------------------

    @invariant()
    def webhooks_once_per_cluster(self) -> None:
        assert self.hooks == self.expected

    @invariant()
    def redis_holds_the_model(self) -> None:
        async def read() -> tuple[dict[str, str], dict[str, list[str]]]:
            r = self.nodes[0].cluster.redis
            base = f"{self.nodes[0].cluster.prefix}:{APP_ID}"
            counts = await r.hgetall(f"{base}:ch")
            members = {c: await r.hkeys(f"{base}:pm:{c}") for c in ("presence-a", "presence-b")}
            return counts, members

        counts, members = self.loop.run(read())
        model = self.snapshot()
        assert {c: int(n) for c, n in counts.items()} == {c: n for c, (n, _) in model.items() if n}
        for channel, ids in members.items():
            assert set(ids) == self.members(channel)

    @invariant()
    def every_client_sees_the_members(self) -> None:
        """What each client knows of a presence channel's members (its
        subscription_succeeded, then member_added/member_removed) is the model's."""
        for s in self.slots.values():
            views: dict[str, set[str]] = {}
            for frame in self.frames.get(s.conn, []):
                event, channel = frame["event"], frame.get("channel", "")
                if event == "pusher_internal:subscription_succeeded" and channel.startswith(
                    "presence-"
                ):
                    views[channel] = set(json.loads(frame["data"])["presence"]["ids"])
                elif event == "pusher_internal:member_added":
                    added = json.loads(frame["data"])["user_id"]
                    assert added not in views[channel], f"{added} added twice to {channel}"
                    views[channel].add(added)
                elif event == "pusher_internal:member_removed":
                    views[channel].discard(json.loads(frame["data"])["user_id"])
            for channel, uid in s.channels.items():
                if uid is not None:
                    assert views[channel] == self.members(channel)


async def _until(condition: Callable[[], bool]) -> None:
    async def wait() -> None:
        while not condition():
            await asyncio.sleep(0.002)

    await asyncio.wait_for(wait(), QUIET_TIMEOUT)


@pytest.fixture(autouse=True)
def _cluster_url(redis_server: RedisServer) -> None:
    ClusterModel.url = redis_server.url


TestClusterModel = ClusterModel.TestCase
# Passes in about 20 s; a failure's shrinking waits out QUIET_TIMEOUT often.
TestClusterModel = pytest.mark.timeout(900)(TestClusterModel)
TestClusterModel.settings = settings(max_examples=60, stateful_step_count=50, deadline=None)
