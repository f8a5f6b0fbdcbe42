"""The cluster's webhook stream is bounded and fair (issue 16 item 3): when
full it drops the state events anyone can flood (``channel_occupied``,
``channel_vacated``, ``subscription_count``) before the app's member, client
and cache-miss events, as the single node's queue does, and counts what it
drops by type. Over a real Redis: the script itself, then a node whose
receiver never answers (reference §3 for the webhook events)."""

from __future__ import annotations

import json
import uuid
from functools import partial
from typing import Any

import aiohttp
import pytest
import redis
import requests

from flask_pusher.server import AppConfig
from flask_pusher.server import LocalServer
from flask_pusher.server import WebhookConfig
from flask_pusher.server.cluster import script
from flask_pusher.server.cluster import stream
from flask_pusher.server.cluster.messages import Op
from flask_pusher.server.cluster.messages import pack

from ..server.helpers import APP_ID
from ..server.helpers import KEY
from ..server.helpers import run_scenario
from ..server.helpers import SECRET
from .conftest import TIMEOUT
from .conftest import wait_until

SUCCEEDED = "pusher_internal:subscription_succeeded"


def _event(name: str, channel: str) -> str:
    return json.dumps({"name": name, "channel": channel})


def _stream_names(client: redis.Redis, key: str) -> list[tuple[str, str]]:
    entries: Any = client.xrange(key)
    return [
        (json.loads(fields["e"])["name"], json.loads(fields["e"])["channel"])
        for _, fields in entries
    ]


def test_the_script_drops_state_events_first_and_says_which(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream, "STREAM_MAX", 10)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    run = client.register_script(script.load())
    prefix = f"stream-{uuid.uuid4().hex[:8]}"
    apps = json.dumps({APP_ID: {"h": 1, "c": 1, "d": 0}})

    def ops(*events: str) -> list[list[str]]:
        batch = pack([[Op.WEBHOOK.value, APP_ID, e] for e in events])
        answer = run(args=[prefix, "n1", "ops", apps, batch])
        return json.loads(answer) if answer else []

    floods = [_event("channel_occupied", f"c{i}") for i in range(6)]
    assert ops(*floods, _event("member_added", "presence-a"), *floods[:3]) == []
    # Full (10): each new event drops the oldest state event.
    drops = ops(_event("cache_miss", "cache-a"), _event("subscription_count", "c9"))
    assert drops == [[APP_ID, "channel_occupied"], [APP_ID, "channel_occupied"]]
    names = _stream_names(client, f"{prefix}:wh")
    assert len(names) == 10
    assert ("member_added", "presence-a") in names and ("cache_miss", "cache-a") in names
    # The two oldest went (c0 and c1 of the first six; the later c0 and c1 stay).
    assert names[0] == ("channel_occupied", "c2") and names.count(("channel_occupied", "c0")) == 1
    # State events sent (acknowledged) are skipped: the next one in the stream goes.
    oldest: Any = client.xrange(f"{prefix}:wh", count=1)
    first = oldest[0][0]
    run(args=[prefix, "n1", "ops", apps, pack([[Op.ACK.value, first]])])
    assert ops(_event("channel_vacated", "c1")) == []  # room for one: nothing dropped
    assert ops(_event("client_event", "private-a")) == [[APP_ID, "channel_occupied"]]
    # With only the app's events left, the oldest of them goes.
    drops = ops(*[_event("client_event", f"private-{i}") for i in range(12)])
    assert {tuple(d) for d in drops} >= {(APP_ID, "member_added"), (APP_ID, "cache_miss")}
    assert len(drops) == 12 and client.xlen(f"{prefix}:wh") == 10
    assert client.llen(f"{prefix}:whs") <= 10
    # State events sent leave the list as new ones come: it stays short.
    for _ in range(5):
        for entry_id, _fields in client.xrange(f"{prefix}:wh"):  # type: ignore[union-attr]
            run(args=[prefix, "n1", "ops", apps, pack([[Op.ACK.value, entry_id]])])
        ops(*[_event("channel_occupied", f"d{i}") for i in range(4)])
    assert client.llen(f"{prefix}:whs") <= 8


def _metric(node: LocalServer, kind: str) -> float:
    for line in requests.get(f"{node.url}/metrics", timeout=TIMEOUT).text.splitlines():
        if line.startswith("pusher_webhooks_dropped_full_total{") and f'type="{kind}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_node_under_churn_keeps_the_apps_events_in_the_full_stream(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Churn over public channels fills the stream while the receiver never
    answers (nothing is sent, so nothing leaves it): a cache_miss queued
    among 300 channel_occupied stays, and the node's metrics count the
    dropped channel_occupied events."""
    monkeypatch.setattr(stream, "STREAM_MAX", 100)
    prefix = f"stream-{uuid.uuid4().hex[:8]}"
    hook = WebhookConfig(url="http://127.0.0.1:9/never")  # the discard port: refused
    app = AppConfig(APP_ID, KEY, SECRET, webhooks=[hook], enable_subscription_count=False)
    node = LocalServer([app], redis_url=redis_url, redis_prefix=prefix, node="A").start()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        wait_until(partial(_ready, node), "the node to be ready")

        async def scenario(session: aiohttp.ClientSession) -> None:
            ws = await session.ws_connect(f"{node.url}/app/{KEY}?protocol=7")
            await ws.receive(TIMEOUT)
            names = [f"churn-{i}" for i in range(150)] + ["cache-keep"]
            names += [f"churn-{i}" for i in range(150, 300)]
            for name in names:
                await ws.send_json({"event": "pusher:subscribe", "data": {"channel": name}})
            seen: set[str] = set()
            while len(seen) < len(names):
                frame: Any = json.loads((await ws.receive(TIMEOUT)).data)
                if frame["event"] in (
                    "pusher_internal:subscription_succeeded",
                    "pusher:cache_miss",
                ):
                    seen.add(frame["channel"])
            await ws.close()

        run_scenario(scenario)
        wait_until(
            lambda: _metric(node, "channel_occupied") >= 200, "channel_occupied drops counted"
        )
        names = _stream_names(client, f"{prefix}:wh")
        assert len(names) <= 100
        assert ("cache_miss", "cache-keep") in names
        assert _metric(node, "cache_miss") == 0
    finally:
        node.stop()


def _ready(node: LocalServer) -> bool:
    return requests.get(f"{node.url}/ready", timeout=TIMEOUT).status_code == 200
