"""Property test: random subscribe / unsubscribe / signin / disconnect
sequences on several connections, checked against a simple model of presence
members, subscriber counts, member frames and webhooks (reference §3.2, §5.6)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant
from hypothesis.stateful import precondition
from hypothesis.stateful import rule
from hypothesis.stateful import RuleBasedStateMachine

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

SLOTS = st.integers(0, 4)
CHANNELS = st.sampled_from(["news", "private-p", "presence-a", "presence-b"])
USERS = st.sampled_from(["u1", "u2", "u3"])


class Slot:
    """The model of one connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.channels: dict[str, str | None] = {}  # channel -> presence user id
        self.user: str | None = None


class ServerModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        hook = WebhookConfig("http://127.0.0.1:1/")
        self.core = Core([AppConfig(APP_ID, KEY, SECRET, webhooks=[hook])], lambda: 0.0)
        self.app = self.core.apps_by_key[KEY]
        self.slots: dict[int, Slot] = {}

    # -- the model's view --------------------------------------------------

    def subscribers(self, channel: str) -> list[Slot]:
        return [s for s in self.slots.values() if channel in s.channels]

    def members(self, channel: str) -> set[str]:
        return {m for s in self.subscribers(channel) if (m := s.channels[channel]) is not None}

    def snapshot(self) -> dict[str, tuple[int, frozenset[str]]]:
        names = {c for s in self.slots.values() for c in s.channels}
        return {c: (len(self.subscribers(c)), frozenset(self.members(c))) for c in names}

    def check_step(self, before: dict[str, tuple[int, frozenset[str]]], effects: Effects) -> None:
        """Webhooks and member frames of one step must follow from the model's diff."""
        after = self.snapshot()
        expected: Counter[str] = Counter()
        for channel in before.keys() | after.keys():
            old = before.get(channel, (0, frozenset()))
            new = after.get(channel, (0, frozenset()))
            if old[0] == 0 < new[0]:
                expected[f"channel_occupied {channel}"] += 1
            if new[0] == 0 < old[0]:
                expected[f"channel_vacated {channel}"] += 1
            for uid in new[1] - old[1]:
                expected[f"member_added {channel} {uid}"] += 1
            for uid in old[1] - new[1]:
                expected[f"member_removed {channel} {uid}"] += 1
        got = Counter(
            " ".join(str(e[k]) for k in ("name", "channel", "user_id") if k in e)
            for e in (hook.event for hook in effects.webhooks)
            if e["name"] != "subscription_count"
        )
        assert got == expected
        for send in effects.sends:
            frame, targets = json.loads(send.frame), send.to
            if frame["event"] in ("pusher_internal:member_added", "pusher_internal:member_removed"):
                channel = frame["channel"]
                uid = json.loads(frame["data"])["user_id"]
                receivers = {s.conn for s in self.subscribers(channel)}
                joining = {s.conn for s in self.subscribers(channel) if s.channels[channel] == uid}
                assert set(targets) == receivers - joining

    # -- rules ----------------------------------------------------------------

    @precondition(lambda self: len(self.slots) < 5)
    @rule(slot=SLOTS)
    def connect(self, slot: int) -> None:
        if slot not in self.slots:
            conn = self.core.connect(self.app).result
            self.slots[slot] = Slot(conn)

    @rule(slot=SLOTS, channel=CHANNELS, user=st.none() | USERS)
    def subscribe(self, slot: int, channel: str, user: str | None) -> None:
        s = self.slots.get(slot)
        if s is None:
            return
        before = self.snapshot()
        data: dict[str, Any] = {"channel": channel}
        presence = channel.startswith("presence-")
        channel_data = {"user_id": user} if user is not None and presence else None
        if channel.startswith(("private-", "presence-")):
            data.update(channel_auth(s.conn.socket_id, channel, channel_data))
        effects = self.core.receive(s.conn, json.dumps({"event": "pusher:subscribe", "data": data}))
        refused = any(
            json.loads(s.frame)["event"] == "pusher:subscription_error" for s in effects.sends
        )
        if channel not in s.channels:
            if channel.startswith("presence-"):
                uid = user if user is not None else s.user
                assert refused == (uid is None)
                if uid is not None:
                    s.channels[channel] = uid
            else:
                assert not refused
                s.channels[channel] = None
        self.check_step(before, effects)

    @rule(slot=SLOTS, channel=CHANNELS)
    def unsubscribe(self, slot: int, channel: str) -> None:
        s = self.slots.get(slot)
        if s is None:
            return
        before = self.snapshot()
        s.channels.pop(channel, None)
        frame = {"event": "pusher:unsubscribe", "data": {"channel": channel}}
        self.check_step(before, self.core.receive(s.conn, json.dumps(frame)))

    @rule(slot=SLOTS, user=USERS)
    def signin(self, slot: int, user: str) -> None:
        s = self.slots.get(slot)
        if s is None:
            return
        before = self.snapshot()
        frame = {"event": "pusher:signin", "data": user_auth(s.conn.socket_id, {"id": user})}
        effects = self.core.receive(s.conn, json.dumps(frame))
        s.user = user
        self.check_step(before, effects)

    @rule(slot=SLOTS)
    def disconnect(self, slot: int) -> None:
        if slot not in self.slots:
            return
        before = self.snapshot()
        s = self.slots.pop(slot)
        self.check_step(before, self.core.disconnect(s.conn))

    # -- invariants -----------------------------------------------------------

    @invariant()
    def state_matches_model(self) -> None:
        model = self.snapshot()
        occupied = {name for name, (count, _) in model.items() if count}
        assert set(self.app.channels) == occupied
        for name, channel in self.app.channels.items():
            assert len(channel) == model[name][0]
            assert set(channel.members) == model[name][1]
        online = {s.user for s in self.slots.values() if s.user is not None}
        assert set(self.app.users) == online
        assert set(self.app.connections) == {s.conn.socket_id for s in self.slots.values()}


TestServerModel = ServerModel.TestCase
TestServerModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
