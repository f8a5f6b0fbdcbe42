"""What one node acknowledged, the other nodes know at once (reference
§4.2, §5.5, §5.10): a single server gives that, so a cluster that "nothing tells
apart from one big server" (issue 8) must too.

A raw protocol-7 client (aiohttp) acts right after each acknowledgement; the
pusher-js harness adds milliseconds of latency that would hide the window."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from collections.abc import Callable
from typing import Any

import aiohttp

from .conftest import Cluster
from .conftest import MakeCluster
from .conftest import raw_connect
from .conftest import TIMEOUT

ROUNDS = 100
Check = Callable[[Any, int], Awaitable[str | None]]


async def _frame(ws: Any, event: str) -> dict[str, Any]:
    """The next frame other than ``pusher:*``/``pusher_internal:*`` or ``event``."""
    while True:
        frame: dict[str, Any] = await ws.receive_json(timeout=TIMEOUT)
        if frame["event"] == event or not frame["event"].startswith("pusher"):
            return frame


async def _failures(cluster: Cluster, check: Check) -> list[str]:
    """Run ``check(ws, i)`` ROUNDS times with a raw client on node B; return
    what the rounds that failed said."""
    async with aiohttp.ClientSession() as session:
        ws, _ = await raw_connect(session, cluster.nodes[1].port)
        try:
            found = [await check(ws, i) for i in range(ROUNDS)]
        finally:
            await ws.close()
    return [f for f in found if f is not None]


async def _subscribe(ws: Any, channel: str) -> None:
    await ws.send_str(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
    await _frame(ws, "pusher_internal:subscription_succeeded")


def test_cache_event_is_replayed_on_another_node_right_after_the_trigger(
    make_cluster: MakeCluster,
) -> None:
    """Trigger on a cache channel through A; once A answered, a subscriber on B
    gets the event replayed, never pusher:cache_miss (reference §5.10)."""
    cluster = make_cluster(2)
    api = cluster.api(0)

    async def check(ws: Any, i: int) -> str | None:
        channel = f"cache-prices-{i}"
        await asyncio.to_thread(api.trigger, channel, "price", {"n": i})
        await _subscribe(ws, channel)
        frame = await _frame(ws, "pusher:cache_miss")
        return None if frame["event"] == "price" else channel

    missed = asyncio.run(_failures(cluster, check))
    assert missed == [], f"{len(missed)} of {ROUNDS} subscriptions on B missed the cache"


def test_channel_is_occupied_everywhere_once_subscription_succeeded(
    make_cluster: MakeCluster,
) -> None:
    """Once B sent pusher_internal:subscription_succeeded (reference §5.5),
    GET /channels/{name} on A says occupied (reference §4.2)."""
    cluster = make_cluster(2)
    api = cluster.api(0)

    async def check(ws: Any, i: int) -> str | None:
        channel = f"room-{i}"
        await _subscribe(ws, channel)
        info = await asyncio.to_thread(api.channel_info, channel)
        return None if info["occupied"] else channel

    vacant = asyncio.run(_failures(cluster, check))
    assert vacant == [], f"{len(vacant)} of {ROUNDS} channels read as vacant on A"
