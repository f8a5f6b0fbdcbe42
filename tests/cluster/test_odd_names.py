"""User ids and infos a single server accepts stay right across nodes: non-ASCII,
emoji, a newline, a lone surrogate from a JSON ``"\\ud800"`` escape, the longest
id (reference §5.5: ``user_id`` is any string; §5.6). Redis's Lua decodes a
``\\ud800`` escape as an error, so a careless cluster would fail every later
change of the node (and of its re-syncs) on such a name."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pusher
import pytest
from pusher.http import GET
from pusher.http import POST
from pusher.http import Request

from ..e2e.conftest import APP_ID
from .conftest import MakeCluster
from .conftest import raw_connect
from .conftest import TIMEOUT

ODD = ["a\ud800b", "😀 é", "line\nbreak", "x" * 128]


async def _frame(ws: Any, event: str) -> dict[str, Any]:
    while True:
        frame: dict[str, Any] = await ws.receive_json(timeout=TIMEOUT)
        if frame["event"] == event:
            return frame


def test_odd_user_ids_and_infos_across_nodes(make_cluster: MakeCluster) -> None:
    """Each odd id joins a presence channel on node A or B, with itself as
    user_info; an observer on B sees every member_added with the id and info
    unchanged; the member list and GET .../users from B hold them all; then
    they leave, and delivery across nodes still works."""
    cluster = make_cluster(2)
    api_a, api_b = cluster.api(0), cluster.api(1)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            observer, observer_id = await raw_connect(session, cluster.nodes[1].port)
            auth = api_b.authenticate("presence-odd", observer_id, {"user_id": "observer"})
            await observer.send_str(
                json.dumps(
                    {"event": "pusher:subscribe", "data": {"channel": "presence-odd", **auth}}
                )
            )
            await _frame(observer, "pusher_internal:subscription_succeeded")
            members = []
            for i, user in enumerate(ODD):
                ws, socket_id = await raw_connect(session, cluster.nodes[i % 2].port)
                data = {"user_id": user, "user_info": {"name": user}}
                auth = api_a.authenticate("presence-odd", socket_id, data)
                subscribe = {"channel": "presence-odd", **auth}
                await ws.send_str(json.dumps({"event": "pusher:subscribe", "data": subscribe}))
                frame = await _frame(ws, "pusher_internal:subscription_succeeded")
                presence = json.loads(frame["data"])["presence"]
                assert presence["hash"][user] == {"name": user}
                added = await _frame(observer, "pusher_internal:member_added")
                assert json.loads(added["data"]) == {"user_id": user, "user_info": {"name": user}}
                members.append(ws)
            users = await asyncio.to_thread(api_b.users_info, "presence-odd")
            assert sorted(u["id"] for u in users["users"]) == sorted([*ODD, "observer"])
            for ws in members:
                await ws.close()
            removed = [
                json.loads((await _frame(observer, "pusher_internal:member_removed"))["data"])
                for _ in ODD
            ]
            assert sorted(r["user_id"] for r in removed) == sorted(ODD)
            # The cluster still works: a trigger on A reaches the observer on B.
            await asyncio.to_thread(api_a.trigger, "presence-odd", "still", {"ok": "\ud800"})
            still = await _frame(observer, "still")
            assert json.loads(still["data"]) == {"ok": "\ud800"}
            await observer.close()

    asyncio.run(scenario())
    for node in cluster.nodes:
        assert node.server is not None and node.server.cluster is not None
        assert node.server.cluster.up


def test_unreadable_channel_names_in_http_reads_are_400(make_cluster: MakeCluster) -> None:
    """A signed trigger asking for ``info`` on a channel name with a lone
    surrogate (a JSON ``"\\ud800"``), and a GET of such a channel, are
    refused with 400 as on one server (reference §4.2), never a 500: the
    cluster reads counts from Redis before the core validates the name."""
    cluster = make_cluster(2)
    client = cluster.api(0)._pusher_client
    body = {"name": "e", "data": "{}", "channels": ["bad\ud800"], "info": "subscription_count"}
    with pytest.raises(pusher.errors.PusherBadRequest):
        client.http.send_request(Request(client, POST, f"/apps/{APP_ID}/events", body))
    other = cluster.api(1)._pusher_client
    for path in ("channels/bad%ED%A0%80", "channels/presence-bad%ED%A0%80/users"):
        request = Request(other, GET, f"/apps/{APP_ID}/{path}", {})
        with pytest.raises(pusher.errors.PusherBadRequest):
            other.http.send_request(request)
