"""Property test: random subscribe / unsubscribe / signin / disconnect
sequences on several connections, checked against a simple model of presence
members, subscriber counts, member frames and webhooks (reference §3.2, §5.6)."""

from __future__ import annotations

import json
from collections import Counter

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant
from hypothesis.stateful import precondition
from hypothesis.stateful import rule
from hypothesis.stateful import RuleBasedStateMachine

from flask_pusher.server import AppConfig
from flask_pusher.server import WebhookConfig
from flask_pusher.server.core import Core
from flask_pusher.server.core import Effects

from .helpers import APP_ID
from .helpers import KEY
from .helpers import SECRET
from .helpers import user_auth
from .model import hook_key
from .model import Model
from .model import Slot
from .model import Snapshot

SLOTS = st.integers(0, 4)
CHANNELS = st.sampled_from(["news", "private-p", "presence-a", "presence-b"])
USERS = st.sampled_from(["u1", "u2", "u3"])


class ServerModel(Model, RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        hook = WebhookConfig("http://127.0.0.1:1/")
        self.core = Core([AppConfig(APP_ID, KEY, SECRET, webhooks=[hook])], lambda: 0.0)
        self.app = self.core.apps_by_key[KEY]
        self.slots: dict[int, Slot] = {}

    def check_step(self, before: Snapshot, effects: Effects) -> None:
        """Webhooks and member frames of one step must follow from the model's diff."""
        got = Counter(
            hook_key(e)
            for e in (hook.event for hook in effects.webhooks)
            if e["name"] != "subscription_count"
        )
        assert got == self.hooks_since(before)
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
        was = channel in s.channels
        effects = self.core.receive(s.conn, s.subscribe(channel, user))
        refused = any(
            json.loads(f.frame)["event"] == "pusher:subscription_error" for f in effects.sends
        )
        if not was:  # refused only a presence channel without a user id
            assert refused == (channel not in s.channels)
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
