"""Unit tests of the sans-IO core: rules without sockets (reference §1.5, §5)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flask_pusher.server import AppConfig
from flask_pusher.server import WebhookConfig
from flask_pusher.server.core import Connection
from flask_pusher.server.core import Core
from flask_pusher.server.core import Effects

from .helpers import APP_ID
from .helpers import channel_auth
from .helpers import KEY
from .helpers import SECRET
from .helpers import user_auth

HOOK = WebhookConfig("http://127.0.0.1:1/hook")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_core(clock: Clock, **options: Any) -> Core:
    return Core([AppConfig(APP_ID, KEY, SECRET, webhooks=[HOOK], **options)], clock)


@pytest.fixture
def core(clock: Clock) -> Core:
    return make_core(clock)


def connect(core: Core) -> Connection:
    effects = core.connect(core.apps_by_key[KEY])
    conn: Connection = effects.result
    (greeting,) = effects.sends
    assert greeting.to == (conn,)
    frame = json.loads(greeting.frame)
    assert frame["event"] == "pusher:connection_established"
    data = json.loads(frame["data"])
    assert data == {"socket_id": conn.socket_id, "activity_timeout": 120}
    return conn


def frames(effects: Effects, conn: Connection) -> list[dict[str, Any]]:
    """The frames ``effects`` sends to ``conn``, decoded."""
    return [json.loads(s.frame) for s in effects.sends if conn in s.to]


def events(effects: Effects, conn: Connection) -> list[str]:
    return [f["event"] for f in frames(effects, conn)]


def hooks(effects: Effects) -> list[dict[str, Any]]:
    return [hook.event for hook in effects.webhooks]


def send(
    core: Core, conn: Connection, event: str, data: Any, channel: str | None = None
) -> Effects:
    frame: dict[str, Any] = {"event": event, "data": data}
    if channel is not None:
        frame["channel"] = channel
    return core.receive(conn, json.dumps(frame))


def subscribe(
    core: Core, conn: Connection, channel: str, channel_data: dict[str, Any] | None = None
) -> Effects:
    data: dict[str, Any] = {"channel": channel}
    if channel.startswith(("private-", "presence-")):
        data.update(channel_auth(conn.socket_id, channel, channel_data))
        data.pop("shared_secret", None)  # pusher-js strips it (reference §1.3)
    return send(core, conn, "pusher:subscribe", data)


def trigger(core: Core, channels: list[str], name: str, data: str, **extra: Any) -> Effects:
    """An HTTP API trigger, as the decoded JSON body ``POST /events`` carries."""
    payload = {"channels": channels, "name": name, "data": data, **extra}
    return core.trigger(core.apps_by_key[KEY], payload)


def signin(core: Core, conn: Connection, user_data: dict[str, Any]) -> Effects:
    return send(core, conn, "pusher:signin", user_auth(conn.socket_id, user_data))


def test_socket_ids_are_digits_dot_digits_and_unique(core: Core) -> None:
    ids = {connect(core).socket_id for _ in range(50)}
    assert len(ids) == 50
    assert all(a.isdigit() and b.isdigit() for a, b in (i.split(".") for i in ids))


def test_duplicate_keys_are_refused(clock: Clock) -> None:
    with pytest.raises(ValueError, match="Duplicate"):
        Core([AppConfig("1", "k", "s"), AppConfig("2", "k", "t")], clock)


def test_app_config_repr_hides_secret() -> None:
    assert SECRET not in repr(AppConfig(APP_ID, KEY, SECRET))


@pytest.mark.parametrize("data", [{}, "", None, "{}"])
def test_ping_is_answered_whatever_its_data(core: Core, data: Any) -> None:
    conn = connect(core)
    assert events(send(core, conn, "pusher:ping", data), conn) == ["pusher:pong"]


@pytest.mark.parametrize(
    "text", ["not json", "[1, 2]", '{"data": {}}', '{"event": 5}', '{"event": "x", "channel": 1}']
)
def test_malformed_frames_get_pusher_error(core: Core, text: str) -> None:
    conn = connect(core)
    (frame,) = frames(core.receive(conn, text), conn)
    assert frame["event"] == "pusher:error"
    assert isinstance(frame["data"], dict) and frame["data"]["message"]


def test_public_subscription_and_occupied_webhook(core: Core) -> None:
    conn = connect(core)
    effects = subscribe(core, conn, "news")
    assert events(effects, conn) == [
        "pusher_internal:subscription_succeeded",
        "pusher_internal:subscription_count",
    ]
    assert hooks(effects) == [
        {"name": "channel_occupied", "channel": "news"},
        {"name": "subscription_count", "channel": "news", "subscription_count": 1},
    ]
    effects = send(core, conn, "pusher:unsubscribe", {"channel": "news"})
    assert hooks(effects) == [{"name": "channel_vacated", "channel": "news"}]
    assert "news" not in core.apps_by_key[KEY].channels


def test_subscription_data_may_be_a_json_string(core: Core) -> None:
    conn = connect(core)
    effects = send(core, conn, "pusher:subscribe", json.dumps({"channel": "news"}))
    assert events(effects, conn)[0] == "pusher_internal:subscription_succeeded"


@pytest.mark.parametrize("auth", [None, "", f"{KEY}:deadbeef", f"otherkey:{'0' * 64}"])
def test_private_subscription_with_bad_auth_is_refused(core: Core, auth: str | None) -> None:
    conn = connect(core)
    effects = send(core, conn, "pusher:subscribe", {"channel": "private-x", "auth": auth})
    (frame,) = frames(effects, conn)
    assert frame["event"] == "pusher:subscription_error"
    assert frame["channel"] == "private-x"
    assert frame["data"]["type"] == "AuthError"
    assert frame["data"]["status"] == 401
    assert "private-x" not in conn.channels
    assert hooks(effects) == []


def test_auth_signed_for_another_socket_is_refused(core: Core) -> None:
    conn = connect(core)
    data = {"channel": "private-x", **channel_auth("1.1", "private-x")}
    (frame,) = frames(send(core, conn, "pusher:subscribe", data), conn)
    assert frame["event"] == "pusher:subscription_error"


def test_private_subscription_with_good_auth(core: Core) -> None:
    conn = connect(core)
    assert events(subscribe(core, conn, "private-encrypted-x"), conn)[0] == (
        "pusher_internal:subscription_succeeded"
    )


def test_presence_members_are_keyed_by_user_id(core: Core) -> None:
    a1, a2, b = connect(core), connect(core), connect(core)
    ch = "presence-room"
    e = subscribe(core, a1, ch, {"user_id": "a", "user_info": {"n": 1}})
    (ok,) = [f for f in frames(e, a1) if f["event"].endswith("succeeded")]
    assert json.loads(ok["data"]) == {
        "presence": {"ids": ["a"], "hash": {"a": {"n": 1}}, "count": 1}
    }
    assert {"name": "member_added", "channel": ch, "user_id": "a"} in hooks(e)
    # b joins: a1 hears member_added, b does not.
    e = subscribe(core, b, ch, {"user_id": "b"})
    assert events(e, a1) == ["pusher_internal:member_added"]
    assert "pusher_internal:member_added" not in events(e, b)
    # a's second connection: no member event for anybody, still 2 members.
    e = subscribe(core, a2, ch, {"user_id": "a", "user_info": {"n": 1}})
    assert events(e, a1) == [] and events(e, b) == []
    assert [h["name"] for h in hooks(e)] == []
    (ok,) = frames(e, a2)
    assert json.loads(ok["data"])["presence"]["count"] == 2
    # a1 leaves: a still present through a2.
    e = core.disconnect(a1)
    assert events(e, b) == [] and hooks(e) == []
    # a2 leaves: member_removed to b, webhook.
    e = core.disconnect(a2)
    (removed,) = frames(e, b)
    assert removed["event"] == "pusher_internal:member_removed"
    assert json.loads(removed["data"]) == {"user_id": "a"}
    assert hooks(e) == [{"name": "member_removed", "channel": ch, "user_id": "a"}]


def test_numeric_user_ids_become_strings(core: Core) -> None:
    conn = connect(core)
    e = subscribe(core, conn, "presence-n", {"user_id": 10})
    assert json.loads(frames(e, conn)[0]["data"])["presence"]["ids"] == ["10"]


def test_presence_needs_channel_data_or_signin(core: Core) -> None:
    conn = connect(core)
    data = {"channel": "presence-x", **channel_auth(conn.socket_id, "presence-x")}
    (frame,) = frames(send(core, conn, "pusher:subscribe", data), conn)
    assert frame["event"] == "pusher:subscription_error"
    signin(core, conn, {"id": "u1", "user_info": {"name": "Ann"}})
    e = send(core, conn, "pusher:subscribe", data)
    (frame,) = frames(e, conn)
    assert json.loads(frame["data"])["presence"]["hash"] == {"u1": {"name": "Ann"}}


def test_presence_member_limit(clock: Clock) -> None:
    core = make_core(clock, max_presence_members=2)
    conns = [connect(core) for _ in range(3)]
    for i, conn in enumerate(conns[:2]):
        subscribe(core, conn, "presence-x", {"user_id": str(i)})
    (frame,) = frames(subscribe(core, conns[2], "presence-x", {"user_id": "2"}), conns[2])
    assert frame["event"] == "pusher:subscription_error"
    assert frame["data"]["status"] == 403


def test_client_events_rules(core: Core, clock: Clock) -> None:
    a, b = connect(core), connect(core)
    subscribe(core, a, "presence-chat", {"user_id": "ann"})
    subscribe(core, b, "presence-chat", {"user_id": "bob"})
    e = send(core, a, "client-typing", {"x": 1}, "presence-chat")
    assert frames(e, a) == []  # never echoed
    (frame,) = frames(e, b)
    assert frame == {
        "event": "client-typing",
        "channel": "presence-chat",
        "data": {"x": 1},
        "user_id": "ann",
    }
    assert hooks(e) == [
        {
            "name": "client_event",
            "channel": "presence-chat",
            "event": "client-typing",
            "data": '{"x": 1}',
            "socket_id": a.socket_id,
            "user_id": "ann",
        }
    ]
    # Not subscribed, or a public channel: refused.
    subscribe(core, a, "public")
    for channel in ("presence-other", "public"):
        (err,) = frames(send(core, a, "client-x", {}, channel), a)
        assert err["event"] == "pusher:error"


def test_client_event_rate_limit(core: Core, clock: Clock) -> None:
    a, b = connect(core), connect(core)
    for conn in (a, b):
        subscribe(core, conn, "private-chat")
    for _ in range(10):
        assert frames(send(core, a, "client-x", "hi", "private-chat"), b)
    (err,) = frames(send(core, a, "client-x", "hi", "private-chat"), a)
    assert err["event"] == "pusher:error" and err["data"]["code"] == 4301
    clock.now += 1.0
    assert frames(send(core, a, "client-x", "hi", "private-chat"), b)


def test_client_events_can_be_disabled(clock: Clock) -> None:
    core = make_core(clock, enable_client_events=False)
    a = connect(core)
    subscribe(core, a, "private-chat")
    (err,) = frames(send(core, a, "client-x", "hi", "private-chat"), a)
    assert err["event"] == "pusher:error"


def test_signin_and_server_to_user_routing(core: Core) -> None:
    a, b = connect(core), connect(core)
    e = signin(core, a, {"id": "u1"})
    (ok,) = frames(e, a)
    assert ok["event"] == "pusher:signin_success"
    assert json.loads(ok["data"]) == {"user_data": '{"id": "u1"}'}
    # Only u1 may subscribe to #server-to-user-u1.
    (err,) = frames(send(core, b, "pusher:subscribe", {"channel": "#server-to-user-u1"}), b)
    assert err["event"] == "pusher:subscription_error" and err["data"]["status"] == 403
    e = send(core, a, "pusher:subscribe", {"channel": "#server-to-user-u1", "auth": ""})
    assert events(e, a) == ["pusher_internal:subscription_succeeded"]
    e = trigger(core, ["#server-to-user-u1"], "hello", "{}")
    assert events(e, a) == ["hello"] and events(e, b) == []


def test_signin_with_bad_signature_is_an_error(core: Core) -> None:
    conn = connect(core)
    data = {"auth": f"{KEY}:{'0' * 64}", "user_data": '{"id": "u1"}'}
    (err,) = frames(send(core, conn, "pusher:signin", data), conn)
    assert err["event"] == "pusher:error"
    assert conn.user_id is None


def test_watchlist_online_offline(core: Core) -> None:
    watcher, friend1, friend2 = connect(core), connect(core), connect(core)
    signin(core, friend1, {"id": "f1"})
    e = signin(core, watcher, {"id": "w", "watchlist": ["f1", "f2"]})
    initial = [f for f in frames(e, watcher) if f["event"] == "pusher_internal:watchlist_events"]
    assert json.loads(initial[0]["data"]) == {
        "events": [{"name": "online", "user_ids": ["f1"]}, {"name": "offline", "user_ids": ["f2"]}]
    }
    e = signin(core, friend2, {"id": "f2"})
    (online,) = frames(e, watcher)
    assert json.loads(online["data"]) == {"events": [{"name": "online", "user_ids": ["f2"]}]}
    e = core.disconnect(friend1)
    (offline,) = frames(e, watcher)
    assert json.loads(offline["data"]) == {"events": [{"name": "offline", "user_ids": ["f1"]}]}


def test_watchlist_limit_gives_4302(clock: Clock) -> None:
    core = make_core(clock, max_watchlist=2)
    conn = connect(core)
    e = signin(core, conn, {"id": "w", "watchlist": ["a", "b", "c"]})
    assert "pusher:signin_success" in events(e, conn)
    (err,) = [f for f in frames(e, conn) if f["event"] == "pusher:error"]
    assert err["data"]["code"] == 4302
    assert conn.watchlist == ("a", "b")


def test_cache_channel_replays_last_http_event(core: Core, clock: Clock) -> None:
    conn = connect(core)
    e = subscribe(core, conn, "cache-x")
    assert events(e, conn) == [
        "pusher_internal:subscription_succeeded",
        "pusher:cache_miss",
        "pusher_internal:subscription_count",
    ]
    assert {"name": "cache_miss", "channel": "cache-x"} in hooks(e)
    trigger(core, ["cache-x"], "ev", "1")
    trigger(core, ["cache-x"], "ev", "2")
    late = connect(core)
    e = subscribe(core, late, "cache-x")
    assert frames(e, late)[1] == {"event": "ev", "channel": "cache-x", "data": "2"}
    clock.now += 1801
    e = subscribe(core, connect(core), "cache-x")
    assert {"name": "cache_miss", "channel": "cache-x"} in hooks(e)


def test_trigger_excludes_socket_id(core: Core) -> None:
    a, b = connect(core), connect(core)
    subscribe(core, a, "news")
    subscribe(core, b, "news")
    e = trigger(core, ["news"], "ev", "x", socket_id=a.socket_id)
    assert events(e, a) == [] and events(e, b) == ["ev"]
    assert len(e.sends) == 1  # encoded once for all targets


def test_subscription_count_is_throttled_above_100(core: Core, clock: Clock) -> None:
    conns = [connect(core) for _ in range(102)]
    for conn in conns[:101]:
        subscribe(core, conn, "big")
    e = subscribe(core, conns[101], "big")
    assert "pusher_internal:subscription_count" not in events(e, conns[0])
    assert core.tick().sends == []
    clock.now += 5
    e = core.tick()
    (frame,) = frames(e, conns[0])
    assert json.loads(frame["data"]) == {"subscription_count": 102}


def test_presence_channels_get_no_subscription_count(core: Core) -> None:
    conn = connect(core)
    e = subscribe(core, conn, "presence-x", {"user_id": "1"})
    assert "pusher_internal:subscription_count" not in events(e, conn)


def test_heartbeat_ping_then_4201(core: Core, clock: Clock) -> None:
    conn = connect(core)
    clock.now += 119
    assert core.tick().sends == []
    clock.now += 1
    assert events(core.tick(), conn) == ["pusher:ping"]
    clock.now += 29
    assert core.tick().closes == []
    clock.now += 1
    e = core.tick()
    assert [(c.conn, c.code) for c in e.closes] == [(conn, 4201)]


def test_any_frame_counts_as_activity(core: Core, clock: Clock) -> None:
    conn = connect(core)
    clock.now += 120
    core.tick()
    clock.now += 20
    send(core, conn, "pusher:pong", {})
    clock.now += 20
    assert core.tick().closes == []


def test_terminate_closes_signed_in_connections(core: Core) -> None:
    a, _other = connect(core), connect(core)
    signin(core, a, {"id": "u1"})
    e = core.terminate(core.apps_by_key[KEY], "u1")
    assert [(c.conn, c.code) for c in e.closes] == [(a, 4009)]


def test_shutdown_closes_everything_with_4200(core: Core) -> None:
    conns = [connect(core) for _ in range(3)]
    assert sorted(c.code for c in core.shutdown().closes) == [4200] * 3
    assert all(c.closing for c in conns)


def test_disconnect_is_idempotent(core: Core) -> None:
    conn = connect(core)
    subscribe(core, conn, "news")
    assert hooks(core.disconnect(conn))
    assert hooks(core.disconnect(conn)) == []
    assert core.receive(conn, '{"event":"pusher:ping"}').sends == []


def test_expired_cache_entries_are_forgotten(clock: Clock) -> None:
    core = make_core(clock, cache_ttl=10)
    app = core.apps_by_key[KEY]
    trigger(core, ["cache-a", "cache-b"], "ev", "1")
    clock.now += 5
    trigger(core, ["cache-b"], "ev", "2")
    clock.now += 6
    core.tick()
    assert list(app.cache) == ["cache-b"]  # nobody asked for cache-a, it is gone anyway


def test_subscribers_share_their_channel_s_name(core: Core) -> None:
    """Each parsed frame makes its own copy of the channel name; a connection
    keeps the channel's (issue 19: memory per idle connection), for public and
    presence channels alike."""
    conns = [connect(core) for _ in range(3)]
    for i, conn in enumerate(conns):
        send(core, conn, "pusher:subscribe", {"channel": "news"})
        data = {"user_id": str(i)}
        auth = channel_auth(conn.socket_id, "presence-room", data)
        send(core, conn, "pusher:subscribe", {"channel": "presence-room", **auth})
    for name in ("news", "presence-room"):
        channel = core.apps_by_key[KEY].channels[name]
        for conn in conns:
            (kept,) = [c for c in conn.channels if c == name]
            assert kept is channel.name
