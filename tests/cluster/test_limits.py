"""Per-app limits on a 2-node cluster over a real Redis (issue 16, item 4):
the connection quota and the HTTP API's rates count every node's
connections and requests (reference §5.12 for 4004, pusher-servers §3 for
soketi's 429), a node that lost Redis keeps enforcing them alone, and
pusher-js 8.6 under authorized connections (reference §5.12 "More notes")."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from functools import partial
from typing import Any

import aiohttp
import pusher
import pytest
import redis
import requests

from flask_pusher.server import AppConfig
from flask_pusher.server import LocalServer

from ..server.helpers import APP_ID
from ..server.helpers import KEY
from ..server.helpers import pusher_client
from ..server.helpers import run_scenario
from ..server.helpers import SECRET
from ..server.redis_server import RedisServer
from .conftest import MakeCluster
from .conftest import TIMEOUT
from .conftest import wait_until

Nodes = Callable[..., list[LocalServer]]


@pytest.fixture
def nodes(redis_url: str) -> Iterator[Nodes]:
    """``nodes(url=None, **AppConfig options)``: two nodes of a cluster of
    their own (a fresh prefix) on ``url`` (default the session's Redis)."""
    started: list[LocalServer] = []

    def make(url: str | None = None, **options: Any) -> list[LocalServer]:
        app = AppConfig(APP_ID, KEY, SECRET, **options)
        prefix = f"limits-{uuid.uuid4().hex[:8]}"
        for name in ("A", "B"):
            node = LocalServer(
                [app], redis_url=url or redis_url, redis_prefix=prefix, node=f"node-{name}"
            )
            started.append(node.start())
        for node in started:
            wait_until(partial(_ready, node), f"{node.url}/ready")
        return started

    yield make
    for node in started:
        node.stop()


def _ready(node: LocalServer) -> bool:
    return requests.get(f"{node.url}/ready", timeout=TIMEOUT).status_code == 200


async def open_raw(
    session: aiohttp.ClientSession, node: LocalServer
) -> tuple[aiohttp.ClientWebSocketResponse[bool], dict[str, Any]]:
    ws = await session.ws_connect(f"{node.url}/app/{KEY}?protocol=7")
    return ws, json.loads((await ws.receive(TIMEOUT)).data)


def established(first: dict[str, Any]) -> bool:
    return bool(first["event"] == "pusher:connection_established")


def test_a_quota_of_n_admits_exactly_n_across_two_nodes(nodes: Nodes) -> None:
    a, b = nodes(max_connections=4)

    async def scenario(session: aiohttp.ClientSession) -> None:
        opened = await asyncio.gather(*(open_raw(session, (a, b)[i % 2]) for i in range(14)))
        admitted = [ws for ws, first in opened if established(first)]
        codes = [first["data"]["code"] for ws, first in opened if not established(first)]
        assert len(admitted) == 4 and codes == [4004] * 10, codes
        # One closed on either node frees a slot for either node.
        await admitted[0].close()
        for _ in range(200):
            ws, first = await open_raw(session, b)
            if established(first):
                break
            await ws.close()
            await asyncio.sleep(0.05)  # polling: the slot comes back through the writer
        assert established(first)
        ws, first = await open_raw(session, a)
        assert first["data"]["code"] == 4004

    run_scenario(scenario)


def _status(call: Callable[[], Any]) -> int:
    try:
        call()
    except pusher.errors.PusherBadStatus as exc:
        return int(str(exc).split(":")[0])
    return 200


def test_events_per_second_count_across_nodes(nodes: Nodes, redis_url: str) -> None:
    a, b = nodes(max_backend_events_per_second=4)
    batch = [{"channel": "a", "name": "e", "data": "{}"}] * 3
    clock = redis.Redis.from_url(redis_url)
    # Three events on A, then three on B within the same second of Redis's
    # clock: the second batch is over the cluster's four.
    for _ in range(10):
        before = clock.time()[0]
        first = _status(lambda: pusher_client(a.port).trigger_batch(batch))
        second = _status(lambda: pusher_client(b.port).trigger_batch(batch))
        if clock.time()[0] == before:
            break
        wait_until(partial(_after, clock, before), "the next second of Redis's clock")
    else:
        raise AssertionError("two requests never fitted in one second")
    assert (first, second) == (200, 429)


def _lost(node: LocalServer) -> bool:
    return not _ready(node)


def _after(clock: redis.Redis, second: int) -> bool:
    return int(clock.time()[0]) > second


def test_a_node_without_redis_enforces_the_quota_alone(
    nodes: Nodes, redis_server: RedisServer
) -> None:
    a, b = nodes(redis_server.url, max_connections=2)

    async def scenario(session: aiohttp.ClientSession) -> None:
        kept = []  # referenced: a client socket garbage-collected would close
        for node in (a, b):
            ws, first = await open_raw(session, node)
            assert established(first)
            kept.append(ws)
        ws, first = await open_raw(session, a)
        assert first["data"]["code"] == 4004  # the cluster's two are taken
        await asyncio.to_thread(redis_server.stop)
        await asyncio.to_thread(wait_until, partial(_lost, a), "A to lose Redis")
        # Alone, A counts its own one connection: one more, then 4004.
        ws, first = await open_raw(session, a)
        assert established(first)
        kept.append(ws)
        ws, first = await open_raw(session, a)
        assert first["data"]["code"] == 4004

    run_scenario(scenario)


def test_pusher_js_signs_in_and_stays_a_silent_client_is_closed_with_4009(
    make_cluster: MakeCluster,
) -> None:
    """pusher-js 8.6 with ``userAuthentication`` signs in on node A and stays;
    one that never signs in, on node B, gets 4009 after the timeout and does
    not reconnect (pusher-js: 4009 is "refused", reference §5.12)."""
    cluster = make_cluster(2, authorized_connections=True, user_authentication_timeout=2)
    clients = cluster.clients()
    clients.connect("ann", 0, user="ann")
    assert clients.call("signin", client="ann")["channel"] == "#server-to-user-ann"
    clients.connect("bob", 1, user="bob")
    clients.wait("bob", kind="error", code=4009)
    clients.wait("bob", kind="state", state="disconnected")
    # Two seconds past ann's own deadline too: still connected, still served.
    assert clients.subscribe("ann", "news")["ok"]
    cluster.api(1).trigger("news", "after", {"n": 1})
    clients.wait("ann", channel="news", event="after")
    assert [e["state"] for e in clients.events("ann", kind="state")] == ["connected"]
    assert clients.events("ann", kind="error") == []


def test_connections_per_address_count_across_two_nodes(nodes: Nodes, redis_url: str) -> None:
    """Issue 16 item 4's cap per client address counts both nodes' connections
    (reference §5.12's 4004 family), and a slot given back on one node is
    taken on the other."""
    a, b = nodes(max_connections_per_address=3)

    async def scenario(session: aiohttp.ClientSession) -> None:
        opened = await asyncio.gather(*(open_raw(session, (a, b)[i % 2]) for i in range(12)))
        admitted = [ws for ws, first in opened if established(first)]
        refusals = [first["data"] for ws, first in opened if not established(first)]
        assert len(admitted) == 3, refusals
        assert refusals == [{"code": 4004, "message": "Too many connections from this address"}] * 9
        await admitted[0].close()
        for _ in range(200):
            ws, first = await open_raw(session, b)
            if established(first):
                break
            await ws.close()
            await asyncio.sleep(0.05)  # polling: the slot comes back through the writer
        assert established(first)
        ws, first = await open_raw(session, a)
        assert first["data"]["code"] == 4004

    run_scenario(scenario)


def test_a_node_without_redis_caps_an_address_alone(
    nodes: Nodes, redis_server: RedisServer
) -> None:
    a, b = nodes(redis_server.url, max_connections_per_address=2)

    async def scenario(session: aiohttp.ClientSession) -> None:
        kept = []  # referenced: a client socket garbage-collected would close
        for node in (a, b):
            ws, first = await open_raw(session, node)
            assert established(first)
            kept.append(ws)
        ws, first = await open_raw(session, a)
        assert first["data"]["code"] == 4004  # the cluster's two are taken
        await asyncio.to_thread(redis_server.stop)
        await asyncio.to_thread(wait_until, partial(_lost, a), "A to lose Redis")
        # Alone, A counts its own one connection from the address: one more, then 4004.
        ws, first = await open_raw(session, a)
        assert established(first)
        kept.append(ws)
        ws, first = await open_raw(session, a)
        assert first["data"]["code"] == 4004

    run_scenario(scenario)
