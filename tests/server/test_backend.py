"""The core against a remote backend, without Redis or sockets (issue 15: "the
core's behaviour with a remote backend is unit-tested with a fake backend").

:class:`FakeBackend` decides nothing: it records what the core asks, as a
backend that answers later (Redis) would see it, and the test then answers
through the core's callbacks (``join_done``, ``relay``, ``deliver``,
``count_update``, ``cache_answer``, ``close_user``, ``watchers_changed``,
``watch_state``), checking the frames and webhooks of each (reference §3.2
presence, §5.6 subscription counts, §5.10 cache channels, §4.4 terminate).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from flask_pusher.server.backend import Events
from flask_pusher.server.core import Connection
from flask_pusher.server.core import Core
from flask_pusher.server.core import Effects
from flask_pusher.server.events import ChannelEvent
from flask_pusher.server.events import Encoded
from flask_pusher.server.state import AppState
from flask_pusher.server.state import Channel

from .helpers import KEY
from .test_core import Clock
from .test_core import connect
from .test_core import events
from .test_core import frames
from .test_core import hooks
from .test_core import make_core
from .test_core import send
from .test_core import signin
from .test_core import subscribe
from .test_core import trigger


class FakeBackend:
    """A :class:`~flask_pusher.server.backend.Backend` that only records."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def subscribed(
        self, conn: Connection, channel: Channel, occupied: bool, effects: Effects
    ) -> None:
        self.calls.append(("subscribed", conn, channel.name, occupied))

    def count_changed(self, app: AppState, channel: Channel, effects: Effects) -> None:
        self.calls.append(("count_changed", channel.name, len(channel)))

    def join(
        self, conn: Connection, name: str, user_id: str, user_info: Any, effects: Effects
    ) -> None:
        self.calls.append(("join", conn, name, user_id, user_info))

    def rejoin(self, conn: Connection, name: str, effects: Effects) -> None:
        self.calls.append(("rejoin", conn, name))

    def cancel_join(self, conn: Connection, name: str) -> None:
        self.calls.append(("cancel_join", conn, name))

    def left(
        self,
        conn: Connection,
        channel: Channel,
        user_id: str | None,
        vacated: bool,
        last: bool,
        effects: Effects,
    ) -> None:
        self.calls.append(("left", conn, channel.name, user_id, vacated, last))

    def disconnected(self, conn: Connection) -> None:
        self.calls.append(("disconnected", conn))

    def signed_in(self, conn: Connection, first: bool, effects: Effects) -> None:
        self.calls.append(("signed_in", conn, conn.user_id, first, conn.watchlist))

    def signed_out(self, app: AppState, user_id: str, last: bool, effects: Effects) -> None:
        self.calls.append(("signed_out", user_id, last))

    def cache_miss(self, conn: Connection, name: str, effects: Effects) -> None:
        self.calls.append(("cache_miss", conn, name))

    def count_sent(self, app: AppState, name: str, count: int, effects: Effects) -> None:
        self.calls.append(("count_sent", name, count))

    def publish(self, app: AppState, events: Events) -> None:
        self.calls.append(("publish", events))

    def client_event(self, app: AppState, event: ChannelEvent, socket_id: str) -> None:
        self.calls.append(("client_event", event.channel, json.loads(event.encode()), socket_id))

    def terminate(self, app: AppState, user_id: str) -> None:
        self.calls.append(("terminate", user_id))

    async def admit(self, app: AppState, address: str | None = None) -> str | None:
        self.calls.append(("admit",))
        return None

    async def take(self, app: AppState, bucket: str, amount: int, limit: int) -> bool:
        self.calls.append(("take", bucket, amount, limit))
        return True


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def core(fake: FakeBackend) -> Core:
    made = make_core(Clock())
    made.backend = fake
    return made


def app_of(core: Core) -> AppState:
    return core.apps_by_key[KEY]


def test_presence_subscription_waits_for_the_backend(core: Core, fake: FakeBackend) -> None:
    """Nothing is confirmed, changed or announced until the backend decides."""
    ann = connect(core)
    e = subscribe(core, ann, "presence-a", {"user_id": "ann", "user_info": {"n": 1}})
    assert frames(e, ann) == [] and hooks(e) == []
    assert fake.calls == [("join", ann, "presence-a", "ann", {"n": 1})]
    assert "presence-a" not in ann.channels and app_of(core).members("presence-a") == {}
    members = {"bob": None, "ann": {"n": 1}}  # bob is on another node
    e = core.join_done(ann, "presence-a", "ann", {"n": 1}, members)
    (ok,) = frames(e, ann)
    assert ok["event"] == "pusher_internal:subscription_succeeded"
    assert json.loads(ok["data"])["presence"] == {
        "count": 2,
        "ids": ["bob", "ann"],
        "hash": {"bob": None, "ann": {"n": 1}},
    }
    assert app_of(core).members("presence-a") == {"ann": {"n": 1}}
    # member_added is the backend's to relay: the core sent nothing to others.
    assert [s.to for s in e.sends] == [(ann,)] and hooks(e) == []


def test_full_presence_channel_is_refused_with_403(core: Core) -> None:
    ann = connect(core)
    subscribe(core, ann, "presence-a", {"user_id": "ann"})
    (refusal,) = frames(core.join_done(ann, "presence-a", "ann", None, None), ann)
    assert refusal["event"] == "pusher:subscription_error"
    assert refusal["data"]["status"] == 403
    assert "presence-a" not in ann.channels


def test_join_done_after_the_connection_left_changes_nothing(core: Core) -> None:
    ann = connect(core)
    subscribe(core, ann, "presence-a", {"user_id": "ann"})
    core.disconnect(ann)
    e = core.join_done(ann, "presence-a", "ann", None, {"ann": None})
    assert e.sends == [] and app_of(core).channels == {}


def test_repeated_presence_subscribe_asks_the_backend(core: Core, fake: FakeBackend) -> None:
    ann = connect(core)
    subscribe(core, ann, "presence-a", {"user_id": "ann"})
    core.join_done(ann, "presence-a", "ann", None, {"ann": None})
    fake.calls.clear()
    assert frames(subscribe(core, ann, "presence-a", {"user_id": "ann"}), ann) == []
    assert fake.calls == [("rejoin", ann, "presence-a")]


def test_leaving_tells_the_backend_and_announces_nothing(core: Core, fake: FakeBackend) -> None:
    ann, bob = connect(core), connect(core)
    for conn, uid in ((ann, "ann"), (bob, "bob")):
        subscribe(core, conn, "presence-a", {"user_id": uid})
        core.join_done(conn, "presence-a", uid, None, {uid: None})
    fake.calls.clear()
    e = send(core, ann, "pusher:unsubscribe", {"channel": "presence-a"})
    assert e.sends == [] and hooks(e) == []  # member_removed comes from the backend
    assert fake.calls == [("left", ann, "presence-a", "ann", False, True)]
    fake.calls.clear()
    core.disconnect(bob)
    assert fake.calls == [("left", bob, "presence-a", "bob", True, True), ("disconnected", bob)]


def test_unsubscribe_before_the_join_is_decided_cancels_it(core: Core, fake: FakeBackend) -> None:
    ann = connect(core)
    subscribe(core, ann, "presence-a", {"user_id": "ann"})
    send(core, ann, "pusher:unsubscribe", {"channel": "presence-a"})
    assert fake.calls[-1] == ("cancel_join", ann, "presence-a")


def test_public_subscription_order(core: Core, fake: FakeBackend) -> None:
    """The backend hears of the subscription before it is confirmed (so a
    backend can write it first), and of the count change after."""
    ann = connect(core)
    e = subscribe(core, ann, "news")
    assert events(e, ann) == ["pusher_internal:subscription_succeeded"]
    assert hooks(e) == []  # channel_occupied is the backend's
    assert fake.calls == [("subscribed", ann, "news", True), ("count_changed", "news", 1)]
    fake.calls.clear()
    send(core, ann, "pusher:unsubscribe", {"channel": "news"})
    assert fake.calls == [("left", ann, "news", None, True, False)]  # vacated: no count


def test_count_update_sends_counts_throttled_above_100(fake: FakeBackend) -> None:
    """Reference §5.6: every change up to 100 subscribers, then one count per
    5 s, the latest one, sent by the tick once due."""
    clock = Clock()
    core = make_core(clock)
    core.backend = fake
    app = app_of(core)
    ann = connect(core)
    subscribe(core, ann, "news")
    e = core.count_update(app, "news", 7)
    (count,) = frames(e, ann)
    assert count["event"] == "pusher_internal:subscription_count"
    assert json.loads(count["data"]) == {"subscription_count": 7}
    assert fake.calls[-1] == ("count_sent", "news", 7)
    clock.now += 1
    assert frames(core.count_update(app, "news", 101), ann) == []  # over 100: held
    clock.now += 1
    assert frames(core.count_update(app, "news", 150), ann) == []
    assert frames(core.count_update(app, "news", 160), ann) == []
    clock.now += 2.9
    assert frames(core.tick(), ann) == []
    clock.now += 0.2
    (late,) = [f for f in frames(core.tick(), ann) if f["event"].endswith("count")]
    assert json.loads(late["data"]) == {"subscription_count": 160}
    assert core.count_update(app, "elsewhere", 3).sends == []  # not occupied here


def test_relay_excludes_a_socket_and_a_members_connections(core: Core) -> None:
    ann, ann2, bob = connect(core), connect(core), connect(core)
    for conn, uid in ((ann, "ann"), (ann2, "ann"), (bob, "bob")):
        subscribe(core, conn, "presence-a", {"user_id": uid})
        core.join_done(conn, "presence-a", uid, None, {uid: None})
    e = core.relay(app_of(core), "presence-a", Encoded('{"event":"x"}'), member="ann")
    assert [s.to for s in e.sends] == [[bob]]
    e = core.relay(app_of(core), "presence-a", Encoded('{"event":"x"}'), exclude=bob.socket_id)
    assert sorted(c.socket_id for c in e.sends[0].to) == sorted([ann.socket_id, ann2.socket_id])
    assert core.relay(app_of(core), "nobody-here", Encoded("{}")).sends == []


def test_trigger_delivers_here_and_publishes(core: Core, fake: FakeBackend) -> None:
    ann = connect(core)
    subscribe(core, ann, "news")
    fake.calls.clear()
    e = trigger(core, ["news"], "ev", "1")
    assert frames(e, ann) == [{"event": "ev", "channel": "news", "data": "1"}]
    ((kind, published),) = fake.calls
    assert kind == "publish" and published[0][1] == ["news"]
    e = core.deliver(app_of(core), [({"name": "other", "data": "2", "socket_id": None}, ["news"])])
    assert frames(e, ann) == [{"event": "other", "channel": "news", "data": "2"}]


def test_client_event_goes_to_the_backend(core: Core, fake: FakeBackend) -> None:
    ann, bob = connect(core), connect(core)
    for conn in (ann, bob):
        subscribe(core, conn, "private-c")
    fake.calls.clear()
    e = send(core, ann, "client-x", {"v": 1}, channel="private-c")
    assert events(e, bob) == ["client-x"]
    assert fake.calls == [
        (
            "client_event",
            "private-c",
            {"event": "client-x", "channel": "private-c", "data": {"v": 1}},
            ann.socket_id,
        )
    ]


def test_cache_miss_is_asked_and_answered(core: Core, fake: FakeBackend) -> None:
    """Reference §5.10: the backend is asked for a cache channel's last event."""
    ann, bob = connect(core), connect(core)
    e = subscribe(core, ann, "cache-x")
    assert events(e, ann) == ["pusher_internal:subscription_succeeded"]
    assert ("cache_miss", ann, "cache-x") in fake.calls
    e = core.cache_answer(ann, "cache-x", ("ev", "42"), 60)
    assert frames(e, ann) == [{"event": "ev", "channel": "cache-x", "data": "42"}]
    # Kept for 60 s: the next subscriber is answered here.
    e = subscribe(core, bob, "cache-x")
    assert frames(e, bob)[1] == {"event": "ev", "channel": "cache-x", "data": "42"}
    e = core.cache_answer(bob, "cache-other", None, 0)  # bob is not subscribed to it
    assert e.sends == []
    send(core, ann, "pusher:subscribe", {"channel": "cache-y"})
    e = core.cache_answer(ann, "cache-y", None, 0)
    assert events(e, ann) == ["pusher:cache_miss"]
    assert hooks(e) == [{"name": "cache_miss", "channel": "cache-y"}]


def test_signin_and_watchlists_through_the_backend(core: Core, fake: FakeBackend) -> None:
    ann, bob = connect(core), connect(core)
    e = signin(core, bob, {"id": "bob", "watchlist": ["ann"]})
    assert events(e, bob) == ["pusher:signin_success"]  # who is online: the backend's
    assert fake.calls[-1] == ("signed_in", bob, "bob", True, ("ann",))
    (state,) = frames(core.watch_state(bob, {"ann"}), bob)
    assert state["event"] == "pusher_internal:watchlist_events"
    assert json.loads(state["data"]) == {"events": [{"name": "online", "user_ids": ["ann"]}]}
    e = signin(core, ann, {"id": "ann"})
    assert frames(e, bob) == []
    e = core.watchers_changed(app_of(core), "ann", True)
    (online,) = frames(e, bob)
    assert json.loads(online["data"]) == {"events": [{"name": "online", "user_ids": ["ann"]}]}
    fake.calls.clear()
    core.disconnect(ann)
    assert ("signed_out", "ann", True) in fake.calls


def test_terminate_closes_here_and_tells_the_backend(core: Core, fake: FakeBackend) -> None:
    ann = connect(core)
    signin(core, ann, {"id": "ann"})
    e = core.terminate(app_of(core), "ann")
    assert [(c.conn, c.code) for c in e.closes] == [(ann, 4009)]
    assert fake.calls[-1] == ("terminate", "ann")
    e = core.close_user(app_of(core), "nobody")
    assert e.closes == []
