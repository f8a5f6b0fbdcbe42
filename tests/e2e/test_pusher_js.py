"""pusher-js 8.6.0 in Node against the local server, authorized by the
extension's own ``/pusher/auth`` and ``/pusher/user-auth`` routes."""

from __future__ import annotations

import queue
from typing import Any

from .conftest import Stack


def test_public_channel(stack: Stack) -> None:
    assert stack.run("public") == [{"event": "greet", "data": {"hello": "world"}}]


def test_private_channel(stack: Stack) -> None:
    assert stack.run("private") == [{"event": "secret", "data": {"n": 42}}]


def test_socket_id_exclusion(stack: Stack) -> None:
    assert stack.run("exclusion") == [{"a_saw": [["a", 2]]}]


def test_presence_members_added_removed(stack: Stack) -> None:
    steps = {line["step"]: line for line in stack.run("presence")}
    ann = {"id": "ann", "info": {"name": "Ann"}}
    bob = {"id": "bob", "info": {"name": "Bob"}}
    assert steps["ann_subscribed"] == {
        "step": "ann_subscribed",
        "me": "ann",
        "count": 1,
        "members": [ann],
        "data_count": 1,
    }
    assert steps["member_added"]["member"] == bob
    assert steps["bob_subscribed"]["count"] == 2
    assert sorted(m["id"] for m in steps["bob_subscribed"]["members"]) == ["ann", "bob"]
    assert steps["member_removed"]["member"] == bob
    assert steps["after"]["members"] == [ann]


def test_encrypted_channel(stack: Stack) -> None:
    """Encrypted by the official library with the master key, decrypted by pusher-js."""
    assert stack.run("encrypted") == [{"event": "secret", "data": {"hello": "encrypted world"}}]


def test_client_events(stack: Stack) -> None:
    lines = stack.run("client_events")
    assert lines == [
        {"triggered": True},
        {"event": "client-typing", "data": {"typing": True}, "metadata": {"user_id": "bob"}},
        {"bob_echoes": []},
    ]


def test_signin_and_send_to_user(stack: Stack) -> None:
    lines = stack.run("signin")
    assert lines == [
        {"joined": "#server-to-user-ann"},
        {"event": "note", "data": {"text": "hi ann"}, "user": {"id": "ann"}},
        {"bob_saw": [{"text": "hi bob"}]},  # not ann's note
    ]


def test_watchlist_online_offline(stack: Stack) -> None:
    lines = stack.run("watchlist")
    assert lines == [
        {"step": "initial", "event": {"name": "offline", "user_ids": ["bob"]}},
        {"step": "online", "event": {"name": "online", "user_ids": ["bob"]}},
        {"step": "offline", "event": {"name": "offline", "user_ids": ["bob"]}},
    ]


def test_cache_channel(stack: Stack) -> None:
    assert stack.run("cache") == [
        {"step": "cache_miss"},
        {"step": "replayed", "data": {"eur": 10}},
    ]


def test_subscription_count(stack: Stack) -> None:
    assert stack.run("subscription_count") == [{"event": {"subscription_count": 2}, "property": 2}]


def test_refused_subscriptions_reach_listeners(stack: Stack) -> None:
    endpoint, server = stack.run("refused")
    assert endpoint == {"step": "endpoint", "error": {"type": "AuthError", "status": 403}}
    assert server["error"]["type"] == "AuthError"
    assert server["error"]["status"] == 401
    assert "Invalid signature" in server["error"]["error"]


def test_pusher_js_auth_batch(stack: Stack) -> None:
    results = {line["name"]: line for line in stack.run("batch")}
    assert results == {
        "private-a": {"name": "private-a", "ok": True},
        "private-b": {"name": "private-b", "ok": True},
        "presence-c": {"name": "presence-c", "ok": True, "me": "carol"},
        "private-forbidden": {"name": "private-forbidden", "ok": False},
    }
    assert len(stack.auth_requests) == 1, stack.auth_requests
    assert "channel_name[3]=private-forbidden" in stack.auth_requests[0]


def test_to_others_leaves_out_the_page_that_posted(stack: Stack) -> None:
    """flask-pusher.js sends X-Socket-ID on same-origin requests once connected;
    trigger(..., to_others=True) leaves that connection out (reference §4.2)."""
    assert stack.run("to_others") == [
        {"step": "not_connected", "header": None},
        {"step": "found", "header_is_page": True},
        {"step": "said", "header_is_page": True},
        {"step": "other_got", "data": {"n": 1}},
        {"step": "page_saw", "said": []},
        {"step": "request_object", "header_is_page": True},
        {"step": "cross_origin", "header": None},
    ]


def test_channel_routes_through_pusher_js(stack: Stack) -> None:
    assert stack.run("channel_routes") == [
        {"step": "order_42", "subscribed": True},
        {"step": "order_13", "status": 403},
        {"step": "team", "me": {"id": "ann", "info": {"team": "red"}}},
        {"step": "event", "data": {"at": "noon"}},
    ]


def test_channel_routes_in_a_pusher_js_auth_batch(stack: Stack) -> None:
    channels = [
        "private-orders.1",
        "private-orders.13",
        "presence-team.blue",
        "presence-team.forbidden",
    ]
    results = {line["name"]: line for line in stack.run("batch", channels=channels)}
    assert results == {
        "private-orders.1": {"name": "private-orders.1", "ok": True},
        "private-orders.13": {"name": "private-orders.13", "ok": False},
        "presence-team.blue": {"name": "presence-team.blue", "ok": True, "me": "carol"},
        # No route matches: @pusher.auth refuses it.
        "presence-team.forbidden": {"name": "presence-team.forbidden", "ok": False},
    }
    assert len(stack.auth_requests) == 1, stack.auth_requests


def test_webhooks_reach_the_extensions_handlers(stack: Stack) -> None:
    """The server sends, the extension verifies, the handlers run."""
    stack.run("presence")
    seen: list[dict[str, Any]] = []
    wanted = {"channel_vacated": {"name": "channel_vacated", "channel": "presence-room"}}
    while wanted["channel_vacated"] not in seen:
        try:
            seen.append(stack.webhooks.get(timeout=10))
        except queue.Empty:
            raise AssertionError(f"no channel_vacated webhook; got {seen}") from None
    names = [(e["name"], e.get("user_id")) for e in seen]
    # Batches are separate requests, so only their contents are ordered.
    assert names[0] == ("channel_occupied", None)
    assert sorted(names[1:3]) == [("member_added", "ann"), ("member_added", "bob")]
    assert ("member_removed", "bob") in names
    assert ("member_removed", "ann") in names
