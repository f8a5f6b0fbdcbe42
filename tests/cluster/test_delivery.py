"""Delivery across nodes (reference §4.2, §5.8, §5.9): pusher-js 8.6 clients
on nodes B and C receive what the official library triggers on node A."""

from __future__ import annotations

from .conftest import MakeCluster


def test_public_trigger_reaches_every_node(make_cluster: MakeCluster) -> None:
    """A trigger sent to node A reaches subscribers on A, B and C (reference §5.8)."""
    cluster = make_cluster(3)
    clients = cluster.clients()
    for i, name in enumerate("abc"):
        clients.connect(name, i)
        assert clients.subscribe(name, "news") == {"ok": True}
    cluster.api(0).trigger("news", "greet", {"hello": "world"})
    for name in "abc":
        [got] = clients.wait(name, channel="news", event="greet")
        assert got["data"] == {"hello": "world"}


def test_private_encrypted_and_presence_delivery(make_cluster: MakeCluster) -> None:
    """Private, encrypted (reference §5.9: encrypted by the official library
    with the master key, decrypted by pusher-js) and presence channels: a
    trigger on A reaches the subscribers on B and C, and a multi-channel
    trigger (reference §4.2) reaches each channel once."""
    cluster = make_cluster(3)
    clients = cluster.clients()
    channels = ["private-room", "private-encrypted-vault", "presence-room"]
    for node, name in ((1, "bob"), (2, "carol")):
        clients.connect(name, node, user=name)
        for channel in channels:
            assert clients.subscribe(name, channel)["ok"], (name, channel)
    api = cluster.api(0)
    api.trigger("private-room", "secret", {"n": 42})
    api.trigger("private-encrypted-vault", "secret", {"hello": "encrypted world"})
    api.trigger("presence-room", "secret", {"n": 7})
    api.trigger(["private-room", "presence-room"], "both", {"n": 2})
    for name in ("bob", "carol"):
        [room] = clients.wait(name, channel="private-room", event="secret")
        [vault] = clients.wait(name, channel="private-encrypted-vault", event="secret")
        [presence] = clients.wait(name, channel="presence-room", event="secret")
        assert (room["data"], vault["data"], presence["data"]) == (
            {"n": 42},
            {"hello": "encrypted world"},
            {"n": 7},
        )
        assert len(clients.wait(name, channel="private-room", event="both")) == 1
        assert len(clients.wait(name, channel="presence-room", event="both")) == 1


def test_batch_trigger_reaches_other_nodes(make_cluster: MakeCluster) -> None:
    """``POST /batch_events`` on node A (reference §4.2): each event reaches
    its channel's subscribers on B and C, in the batch's order."""
    cluster = make_cluster(3)
    clients = cluster.clients()
    clients.connect("b", 1, user="bob")
    clients.connect("c", 2, user="carol")
    assert clients.subscribe("b", "news")["ok"]
    assert clients.subscribe("b", "private-orders.1")["ok"]
    assert clients.subscribe("c", "news")["ok"]
    cluster.api(0).trigger_batch(
        [
            {"channel": "news", "name": "first", "data": {"n": 1}},
            {"channel": "private-orders.1", "name": "shipped", "data": {"n": 2}},
            {"channel": "news", "name": "second", "data": {"n": 3}},
        ]
    )
    clients.wait("b", channel="news", event="second")
    clients.wait("c", channel="news", event="second")
    [shipped] = clients.wait("b", channel="private-orders.1", event="shipped")
    assert shipped["data"] == {"n": 2}
    for name in "bc":
        news = [
            (e["event"], e["data"])
            for e in clients.events(name, channel="news")
            if not e["event"].startswith("pusher")
        ]
        assert news == [("first", {"n": 1}), ("second", {"n": 3})]


def test_socket_id_exclusion_on_another_node(make_cluster: MakeCluster) -> None:
    """A trigger on A with the socket_id of a connection on B leaves that
    connection out and reaches the others on A, B and C (reference §4.2, §5.8)."""
    cluster = make_cluster(3)
    clients = cluster.clients()
    sockets = {}
    for name, node in (("a", 0), ("b1", 1), ("b2", 1), ("c", 2)):
        sockets[name] = clients.connect(name, node)
        assert clients.subscribe(name, "news")["ok"]
    api = cluster.api(0)
    api.trigger("news", "ev", {"n": 1}, socket_id=sockets["b1"])
    # A later event b1 does get: anything of the first would come before it.
    api.trigger("news", "ev", {"n": 2})
    for name in sockets:
        clients.wait(name, channel="news", event="ev", data={"n": 2})
    for name in ("a", "b2", "c"):
        assert [e["data"] for e in clients.events(name, event="ev")] == [{"n": 1}, {"n": 2}]
    assert [e["data"] for e in clients.events("b1", event="ev")] == [{"n": 2}]
