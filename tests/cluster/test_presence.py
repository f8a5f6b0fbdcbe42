"""Presence across nodes (reference §5.5, §5.6, §4.2): the member list, the
member events, the counts and the member limit are the cluster's, not a node's."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pusher

from ..e2e.conftest import APP_ID
from ..e2e.conftest import KEY
from ..e2e.conftest import SECRET
from .conftest import Clients
from .conftest import Cluster
from .conftest import MakeCluster
from .conftest import raw_connect
from .conftest import TIMEOUT
from .conftest import wait_until

ROUNDS = 50


def member(user: str) -> dict[str, Any]:
    """A member as pusher-js reports it (the e2e app's user_info)."""
    return {"id": user, "info": {"name": user.title()}}


def ids(reply: dict[str, Any]) -> list[str]:
    return sorted(m["id"] for m in reply["members"]["members"])


def test_member_list_and_events_across_nodes(make_cluster: MakeCluster) -> None:
    """subscription_succeeded carries the cluster-wide member list (reference
    §5.5); member_added and member_removed reach members on every other node
    (reference §5.6)."""
    cluster = make_cluster(3)
    clients = cluster.clients()
    for node, user in enumerate(("ann", "bob", "carol")):
        clients.connect(user, node, user=user)
    ann = clients.subscribe("ann", "presence-room")
    assert ann["members"] == {"me": "ann", "count": 1, "members": [member("ann")]}
    bob = clients.subscribe("bob", "presence-room")
    assert (ids(bob), bob["members"]["count"]) == (["ann", "bob"], 2)
    [added] = clients.wait("ann", event="pusher:member_added")
    assert added["data"] == member("bob")
    carol = clients.subscribe("carol", "presence-room")
    assert (ids(carol), carol["members"]["count"]) == (["ann", "bob", "carol"], 3)
    assert member("ann") in carol["members"]["members"]
    for user in ("ann", "bob"):
        clients.wait(user, event="pusher:member_added", data=member("carol"))
    clients.call("disconnect", client="carol")
    for user in ("ann", "bob"):
        [removed] = clients.wait(user, event="pusher:member_removed")
        assert removed["data"] == member("carol")
    clients.call("unsubscribe", client="bob", channel="presence-room")
    clients.wait("ann", event="pusher:member_removed", count=2)
    removed_for_ann = clients.events("ann", event="pusher:member_removed")
    assert [e["data"]["id"] for e in removed_for_ann] == ["carol", "bob"]
    # The joining socket never gets its own member_added (reference §5.6).
    assert clients.events("carol", event="pusher:member_added") == []


def test_counts_and_users_from_a_node_without_subscribers(make_cluster: MakeCluster) -> None:
    """GET /channels/{name} (user_count, subscription_count) and GET .../users
    (reference §4.2) on node C, which has no client: the cluster's numbers,
    a user with connections on two nodes counted once."""
    cluster = make_cluster(3)
    clients = cluster.clients()
    clients.connect("ann-a", 0, user="ann")
    clients.connect("ann-b", 1, user="ann")
    clients.connect("bob", 1, user="bob")
    for name in ("ann-a", "ann-b", "bob"):
        assert clients.subscribe(name, "presence-room")["ok"]
    api = cluster.api(2)
    info = api.channel_info("presence-room", ["user_count", "subscription_count"])
    assert info == {"occupied": True, "user_count": 2, "subscription_count": 3}
    users = api.users_info("presence-room")
    assert sorted(u["id"] for u in users["users"]) == ["ann", "bob"]
    # ann's connection on A leaves: she is still a member through B.
    clients.call("disconnect", client="ann-a")
    wait_until(
        lambda: (
            api.channel_info("presence-room", ["subscription_count"])["subscription_count"] == 2
        ),
        "the cluster to count ann-a out",
    )
    clients.call("disconnect", client="bob")
    clients.wait("ann-b", event="pusher:member_removed", data=member("bob"))
    info = api.channel_info("presence-room", ["user_count", "subscription_count"])
    assert info == {"occupied": True, "user_count": 1, "subscription_count": 1}
    assert api.users_info("presence-room") == {"users": [{"id": "ann"}]}
    # A marker through A (not ann-b's node) comes after any member event
    # published before it: only bob was removed.
    cluster.api(0).trigger("presence-room", "marker", {})
    clients.wait("ann-b", channel="presence-room", event="marker")
    removed = clients.events("ann-b", event="pusher:member_removed")
    assert [e["data"]["id"] for e in removed] == ["bob"]


def test_member_limit_counts_the_whole_cluster(make_cluster: MakeCluster) -> None:
    """max_presence_members=2 (reference §5.5): with a member on A and one on
    B, a third user on C is refused; another connection of an existing member
    is not; once a member leaves, the third user gets in."""
    cluster = make_cluster(3, max_presence_members=2)
    clients = cluster.clients()
    for node, name in ((0, "ann"), (1, "bob"), (2, "carol"), (2, "ann")):
        clients.connect(f"{name}-{node}", node, user=name)
    assert clients.subscribe("ann-0", "presence-room")["ok"]
    assert clients.subscribe("bob-1", "presence-room")["ok"]
    refused = clients.subscribe("carol-2", "presence-room")
    assert refused["ok"] is False
    assert (refused["refusal"]["type"], refused["refusal"]["status"]) == ("LimitReached", 403)
    again = clients.subscribe("ann-2", "presence-room")
    assert (again["ok"], ids(again)) == (True, ["ann", "bob"])
    clients.call("unsubscribe", client="bob-1", channel="presence-room")
    clients.wait("ann-0", event="pusher:member_removed", data=member("bob"))
    clients.connect("carol-again", 2, user="carol")
    admitted = clients.subscribe("carol-again", "presence-room")
    assert (admitted["ok"], ids(admitted)) == (True, ["ann", "carol"])


async def _succeeded(ws: Any, channel: str) -> dict[str, Any]:
    while True:
        frame = await ws.receive_json(timeout=TIMEOUT)
        if frame["event"] == "pusher_internal:subscription_succeeded":
            assert frame["channel"] == channel, frame
            presence: dict[str, Any] = json.loads(frame["data"])["presence"]
            return presence
        assert frame["event"] == "pusher_internal:member_added", frame


async def _join_twice(cluster: Cluster, clients: Clients, channels: list[str]) -> None:
    signer = pusher.Pusher(APP_ID, KEY, SECRET)
    user = {"user_id": "dup", "user_info": {"name": "Dup"}}
    async with aiohttp.ClientSession() as session:
        (ws_a, sid_a), (ws_b, sid_b) = await asyncio.gather(
            raw_connect(session, cluster.nodes[0].port), raw_connect(session, cluster.nodes[1].port)
        )
        for channel in channels:
            reply = await asyncio.to_thread(clients.subscribe, "observer", channel)
            assert reply["ok"], reply
            frames = []
            for ws, sid in ((ws_a, sid_a), (ws_b, sid_b)):
                data = {"channel": channel, **signer.authenticate(channel, sid, user)}
                frames.append((ws, json.dumps({"event": "pusher:subscribe", "data": data})))
            await asyncio.gather(*(ws.send_str(frame) for ws, frame in frames))
            for presence in await asyncio.gather(
                _succeeded(ws_a, channel), _succeeded(ws_b, channel)
            ):
                assert (sorted(presence["hash"]), presence["count"]) == (["dup", "observer"], 2)
            for ws in (ws_a, ws_b):
                unsubscribe = {"event": "pusher:unsubscribe", "data": {"channel": channel}}
                await ws.send_str(json.dumps(unsubscribe))
            await asyncio.to_thread(
                clients.wait, "observer", channel=channel, event="pusher:member_removed"
            )
        await ws_a.close()
        await ws_b.close()


def test_one_user_joining_on_two_nodes_at_once(make_cluster: MakeCluster) -> None:
    """Two connections of one user subscribe to a presence channel on A and B
    at the same instant, 50 times: the observer (pusher-js on C) sees exactly
    one member_added and one member_removed each time, and the webhook
    receiver exactly one member_added and member_removed per round (reference
    §5.6, §3.2): the cluster decides "first connection" atomically."""
    cluster = make_cluster(3, webhook_delay=0.05)
    clients = cluster.clients()
    clients.connect("observer", 2, user="observer")
    channels = [f"presence-race-{i}" for i in range(ROUNDS)]
    asyncio.run(_join_twice(cluster, clients, channels))
    # A marker sent on A after all that reaches the observer on C after every
    # member event the cluster published before it (one Redis pub/sub channel).
    cluster.api(0).trigger(channels[:50], "end", {})
    for channel in channels:
        clients.wait("observer", channel=channel, event="end")
    for channel in channels:
        added = clients.events("observer", channel=channel, event="pusher:member_added")
        removed = clients.events("observer", channel=channel, event="pusher:member_removed")
        assert [e["data"] for e in added] == [{"id": "dup", "info": {"name": "Dup"}}], channel
        assert [e["data"] for e in removed] == [{"id": "dup", "info": {"name": "Dup"}}], channel
    # channel_vacated is queued after member_removed's delay: once all are in,
    # a duplicate member webhook would be too.
    clients.call("disconnect", client="observer")
    for channel in channels:
        cluster.wait_webhook("channel_vacated", channel)
    for channel in channels:
        for name in ("member_added", "member_removed"):
            dup = [e for e in cluster.received(name, channel) if e["user_id"] == "dup"]
            assert dup == [{"name": name, "channel": channel, "user_id": "dup"}], channel
