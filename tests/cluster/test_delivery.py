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
