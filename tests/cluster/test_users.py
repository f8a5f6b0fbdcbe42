"""Users across nodes (reference §1.5, §4.2, §5.10, §5.11, §5.12):
terminate, send_to_user, watchlists, cache channels and subscription counts
where the API call and the clients are on different nodes."""

from __future__ import annotations

from functools import partial

from .conftest import Clients
from .conftest import MakeCluster
from .conftest import wait_until


def test_terminate_closes_the_users_connection_on_another_node(make_cluster: MakeCluster) -> None:
    """terminate_user_connections on node A closes ann's signed-in connections
    on B and C with 4009 (reference §4.2, §5.12); bob's stays open."""
    cluster = make_cluster(3)
    clients = cluster.clients()
    for name, node, user in (("ann-b", 1, "ann"), ("ann-c", 2, "ann"), ("bob-b", 1, "bob")):
        clients.connect(name, node, user=user)
        assert clients.call("signin", client=name)["channel"] == f"#server-to-user-{user}"
        assert clients.subscribe(name, "news")["ok"]
    assert cluster.api(0).terminate_user_connections("ann") == {}
    for name in ("ann-b", "ann-c"):
        clients.wait(name, kind="error", code=4009)
        # 4009 is "refused" for pusher-js: it does not reconnect.
        clients.wait(name, kind="state", state="disconnected")
    cluster.api(0).trigger("news", "after", {})
    clients.wait("bob-b", channel="news", event="after")
    assert clients.events("bob-b", kind="error") == []
    assert clients.events("ann-b", channel="news", event="after") == []


def test_send_to_user_on_another_node(make_cluster: MakeCluster) -> None:
    """ann signs in on B; send_to_user through A reaches her there, and only
    her (reference §1.5, §4.2: #server-to-user-ann)."""
    cluster = make_cluster(3)
    clients = cluster.clients()
    clients.connect("ann", 1, user="ann")
    clients.connect("bob", 2, user="bob")
    clients.call("signin", client="ann")
    clients.call("signin", client="bob")
    api = cluster.api(0)
    api.send_to_user("ann", "note", {"text": "hi ann"})
    api.send_to_user("bob", "note", {"text": "hi bob"})
    [ann] = clients.wait("ann", kind="user", event="note")
    [bob] = clients.wait("bob", kind="user", event="note")
    assert (ann["data"], bob["data"]) == ({"text": "hi ann"}, {"text": "hi bob"})


def test_watchlist_online_offline_across_nodes(make_cluster: MakeCluster) -> None:
    """ann on A watches bob: offline at signin, online when bob signs in on
    B, still online while a second connection of bob on C closes, offline
    after his last (reference §1.5)."""
    cluster = make_cluster(3)
    clients = cluster.clients()
    clients.connect("ann", 0, user="ann", watchlist=["bob"])
    clients.call("signin", client="ann")
    [initial] = clients.wait("ann", kind="watchlist")
    assert initial["data"] == {"name": "offline", "user_ids": ["bob"]}
    clients.connect("bob-b", 1, user="bob")
    clients.call("signin", client="bob-b")
    [online] = clients.wait("ann", kind="watchlist", event="online")
    assert online["data"] == {"name": "online", "user_ids": ["bob"]}
    clients.connect("bob-c", 2, user="bob")
    clients.call("signin", client="bob-c")
    clients.call("disconnect", client="bob-c")
    clients.call("disconnect", client="bob-b")
    [_, offline] = clients.wait("ann", kind="watchlist", event="offline", count=2)
    assert offline["data"] == {"name": "offline", "user_ids": ["bob"]}
    # One online and one offline after the initial state: bob-c changed nothing.
    assert [e["event"] for e in clients.events("ann", kind="watchlist")] == [
        "offline",
        "online",
        "offline",
    ]


def test_watchlist_of_a_user_already_online_on_another_node(make_cluster: MakeCluster) -> None:
    """bob is signed in on B before ann signs in on A watching him: her
    initial watchlist event says online (reference §1.5)."""
    cluster = make_cluster(2)
    clients = cluster.clients()
    clients.connect("bob", 1, user="bob")
    clients.call("signin", client="bob")
    clients.connect("ann", 0, user="ann", watchlist=["bob", "carol"])
    clients.call("signin", client="ann")
    [online] = clients.wait("ann", kind="watchlist", event="online")
    assert online["data"] == {"name": "online", "user_ids": ["bob"]}


def test_cache_channel_across_nodes(make_cluster: MakeCluster) -> None:
    """A cache channel's last event (reference §5.10): a subscriber on C gets
    pusher:cache_miss; triggered on A, it reaches that subscriber; a later
    subscriber on B gets it replayed; GET .../channels/{name}?info=cache on B
    and on a node with no subscriber answer it."""
    cluster = make_cluster(3)
    clients = cluster.clients()
    clients.connect("c", 2)
    assert clients.subscribe("c", "cache-prices")["ok"]
    clients.wait("c", channel="cache-prices", event="pusher:cache_miss")
    cluster.api(0).trigger("cache-prices", "price", {"eur": 10})
    clients.wait("c", channel="cache-prices", event="price")
    clients.connect("b", 1)
    assert clients.subscribe("b", "cache-prices")["ok"]
    [replayed] = clients.wait("b", channel="cache-prices", event="price")
    assert replayed["data"] == {"eur": 10}
    assert clients.events("b", channel="cache-prices", event="pusher:cache_miss") == []
    for node in (1, 0):
        info = cluster.api(node).channel_info("cache-prices", ["cache"])
        assert info["occupied"] is True
        assert info["cache"]["data"] == '{"eur": 10}'
        assert 0 < info["cache"]["ttl"] <= 1800
    [miss] = cluster.wait_webhook("cache_miss", "cache-prices")
    assert miss == {"name": "cache_miss", "channel": "cache-prices"}


def test_subscription_count_counts_every_node(make_cluster: MakeCluster) -> None:
    """pusher:subscription_count (reference §5.11) counts the subscribers on
    all nodes: 3 with one on each of A, B and C, 2 after C's leaves."""
    cluster = make_cluster(3)
    clients = cluster.clients()
    for node, name in enumerate("abc"):
        clients.connect(name, node)
        assert clients.subscribe(name, "room")["ok"]
    for name in "abc":
        clients.wait(name, event="pusher:subscription_count", data={"subscription_count": 3})
    clients.call("unsubscribe", client="c", channel="room")
    # Counts are coalesced per channel and heartbeat (issue 16): an
    # intermediate count may be skipped, the latest arrives within a second.
    for name in "ab":
        wait_until(partial(_last_count, clients, name, 2), f"{name} to see the count 2 last")
    seen = [
        e["data"]["subscription_count"]
        for e in clients.events("a", event="pusher:subscription_count")
    ]
    assert seen[0] == 1 and 3 in seen and seen[-1] == 2 and seen.index(3) < len(seen) - 1


def _last_count(clients: Clients, name: str, count: int) -> bool:
    seen = clients.events(name, event="pusher:subscription_count")
    return (
        bool(seen)
        and seen[-1]["data"]["subscription_count"] == count
        and any(e["data"]["subscription_count"] == 3 for e in seen)
    )
