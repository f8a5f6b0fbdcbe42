"""The HTTP API's reads (reference §4.2) answer the cluster's truth, the
same from every node, whichever node the subscribers are on."""

from __future__ import annotations

from .conftest import MakeCluster


def test_channels_are_the_same_from_every_node(make_cluster: MakeCluster) -> None:
    """GET /channels (plain, filter_by_prefix, info=user_count and
    subscription_count) and GET /channels/{name} from A, B and C."""
    cluster = make_cluster(3)
    clients = cluster.clients()
    subscriptions = {
        ("ann-a", 0, "ann"): ["presence-room", "news", "private-x"],
        ("ann-b", 1, "ann"): ["presence-room", "news"],
        ("bob-b", 1, "bob"): ["presence-room", "presence-other"],
        ("carol-c", 2, "carol"): ["news", "presence-other"],
    }
    for (name, node, user), channels in subscriptions.items():
        clients.connect(name, node, user=user)
        for channel in channels:
            assert clients.subscribe(name, channel)["ok"], (name, channel)
    everything = {
        "channels": {
            "news": {"subscription_count": 3},
            "private-x": {"subscription_count": 1},
            "presence-room": {"subscription_count": 3},
            "presence-other": {"subscription_count": 2},
        }
    }
    presence = {
        "channels": {
            "presence-room": {"user_count": 2, "subscription_count": 3},
            "presence-other": {"user_count": 2, "subscription_count": 2},
        }
    }
    for node in range(3):
        api = cluster.api(node)
        assert api.channels_info() == {"channels": {name: {} for name in everything["channels"]}}
        assert api.channels_info(attributes=["subscription_count"]) == everything
        assert api.channels_info("presence-", ["user_count", "subscription_count"]) == presence
        assert api.channels_info("pres") == {
            "channels": {name: {} for name in presence["channels"]}
        }
        assert api.channel_info("news", ["subscription_count"]) == {
            "occupied": True,
            "subscription_count": 3,
        }
        assert api.channel_info("presence-room", ["user_count"]) == {
            "occupied": True,
            "user_count": 2,
        }
        assert api.channel_info("empty") == {"occupied": False}
