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
