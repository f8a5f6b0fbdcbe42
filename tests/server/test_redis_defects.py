"""Two defects of the Redis backend found while cutting the backend seam
(issue 15 "Two defects found on the way"), each failing before its fix:

- the ``subscription_count`` webhook throttle remembered every channel a node
  ever changed (about 283 B each, never forgotten: 30,000 channels used once
  held 8.5 MB on a node with a webhook configured);
- a signed trigger whose body nests deeply and names ``info`` answered 500 with
  a traceback in cluster mode (the backend decoded it with ``json.loads``, whose
  ``RecursionError`` nobody caught), where one server answers 400 (reference
  §4.2: malformed JSON is a bad request).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import aiohttp
import pytest

from flask_pusher.server import AppConfig
from flask_pusher.server import LocalServer
from flask_pusher.server import WebhookConfig
from flask_pusher.server.app import Server

from .helpers import APP_ID
from .helpers import KEY
from .helpers import Receiver
from .helpers import SECRET
from .redis_server import RedisServer
from .test_hostile import signed_query

TIMEOUT = 10.0
CHANNELS = 300


def _throttle_size(server: Server) -> int:
    """How many channels the node's count-webhook throttle remembers."""
    backend: Any = server.cluster
    return len(backend.count_hooks)


def test_count_webhook_throttle_forgets_vacated_channels(redis_server: RedisServer) -> None:
    """300 channels each subscribed once and left again leave nothing in the
    node's throttle of ``subscription_count`` webhooks (reference §6: the
    webhook is sent on count changes, throttled for big channels): it was one
    entry per channel, forever."""
    receiver = Receiver()
    app = AppConfig(APP_ID, KEY, SECRET, webhooks=[WebhookConfig(receiver.url)])

    async def scenario() -> None:
        server = Server([app], redis_url=redis_server.url, redis_prefix="defect1")
        cluster: Any = server.cluster
        seen: set[str] = set()
        handle = cluster._on_message

        def on_message(text: str) -> None:
            message = json.loads(text)
            if message.get("kind", message.get("k")) == "marker":
                seen.add(message["n"])
            else:
                handle(text)

        cluster._on_message = on_message
        await cluster.start("n1")
        assert cluster.up
        core = server.core
        conn = core.connect(core.apps_by_key[KEY]).result
        for i in range(CHANNELS):
            sub = {"event": "pusher:subscribe", "data": {"channel": f"c{i}"}}
            server.apply(core.receive(conn, json.dumps(sub)))
            unsub = {"event": "pusher:unsubscribe", "data": {"channel": f"c{i}"}}
            server.apply(core.receive(conn, json.dumps(unsub)))
        await cluster.written()
        # Redis publishes to a node's channel in order: once the marker is
        # back, every count message of the changes above was handled.
        marker = json.dumps({"k": "marker", "kind": "marker", "a": APP_ID, "n": "m"})
        await cluster.redis.publish(f"{cluster.prefix}:to:{cluster.node_id}", marker)
        deadline = time.monotonic() + TIMEOUT
        while "m" not in seen:
            assert time.monotonic() < deadline, "the marker never came back"
            await asyncio.sleep(0.01)
        assert _throttle_size(server) == 0
        cluster.stop_consuming()
        await server.webhooks.close()
        await cluster.close()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 30))
    finally:
        receiver.close()


def test_deeply_nested_trigger_with_info_is_400(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A signed trigger naming ``info`` whose body nests 100,000 levels deep
    is a 400 from a cluster node, as from one server, with no traceback."""
    caplog.set_level(logging.DEBUG)
    app = AppConfig(APP_ID, KEY, SECRET)
    body = ('{"info":"subscription_count","x":' + "[" * 100_000 + "]" * 100_000 + "}").encode()
    path = f"/apps/{APP_ID}/events"
    with LocalServer([app], redis_url=redis_server.url, redis_prefix="defect2") as server:

        async def scenario() -> None:
            query = signed_query("POST", path, body, str(int(time.time())))
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    server.url + path, params=query, data=body, skip_auto_headers=["Content-Type"]
                ) as r,
            ):
                assert r.status == 400, await r.text()
                assert "JSON object" in await r.text()

        asyncio.run(asyncio.wait_for(scenario(), 30))
    assert "Traceback" not in caplog.text
