"""Adversarial review of the Redis cluster (issue 8): each test here fails
against the code it was written for, for the reason its xfail names."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from .conftest import Cluster
from .conftest import raw_connect
from .conftest import TIMEOUT
from .conftest import wait_until

MakeNodes = Callable[..., Cluster]


@pytest.fixture
def make_nodes(redis_url: str) -> Iterator[MakeNodes]:
    """Like ``make_cluster`` but without pusher-js (raw WebSocket clients only)."""
    started: list[Cluster] = []

    def make(count: int = 2, webhook_delay: float = 0.2, **app_options: Any) -> Cluster:
        cluster = Cluster(redis_url, count, webhook_delay, **app_options)
        started.append(cluster)
        return cluster

    yield make
    for cluster in started:
        cluster.close()


#: Seconds a frame the test expects may take (a short bound: failing tests wait it out).
SHORT = 3.0


async def _frame(
    ws: Any, event: str, channel: str | None = None, timeout: float = TIMEOUT
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            frame: dict[str, Any] = await ws.receive_json()
            if frame["event"] == event and (channel is None or frame.get("channel") == channel):
                return frame


def _subscribe(channel: str, auth: dict[str, str]) -> str:
    return json.dumps({"event": "pusher:subscribe", "data": {"channel": channel, **auth}})


def _unsubscribe(channel: str) -> str:
    return json.dumps({"event": "pusher:unsubscribe", "data": {"channel": channel}})


@pytest.mark.xfail(
    strict=True,
    reason="cluster.py Cluster.join: a subscribe while an 'again' join (the member "
    "list asked for an already subscribed channel) waits only clears `cancelled` "
    "of that waiting join and queues no 'j'; Cluster._joined then drops the answer "
    "(again and not subscribed): the last subscribe is never answered",
)
def test_resubscribe_while_a_repeated_subscribe_waits(make_nodes: MakeNodes) -> None:
    """A client subscribed to a presence channel sends subscribe again (a
    repeat, reference §5.4: confirmed again), then unsubscribe and subscribe
    at once. A single server answers the last subscribe with
    subscription_succeeded and the user is a member; it must be so on a node."""
    cluster = make_nodes(2)
    api = cluster.api(0)
    name = "presence-again"

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            ws, socket_id = await raw_connect(session, cluster.nodes[0].port)
            auth = api.authenticate(name, socket_id, {"user_id": "u1"})
            await ws.send_str(_subscribe(name, auth))
            await _frame(ws, "pusher_internal:subscription_succeeded")
            for text in (_subscribe(name, auth), _unsubscribe(name), _subscribe(name, auth)):
                await ws.send_str(text)
            # The repeat may be confirmed, the re-subscription must be: two frames.
            await _frame(ws, "pusher_internal:subscription_succeeded", timeout=SHORT)
            await _frame(ws, "pusher_internal:subscription_succeeded", timeout=SHORT)
            await ws.close()

    asyncio.run(scenario())
