"""The model both property tests check the server against (one process in
test_model.py, a cluster in test_cluster_model.py): which connection is
subscribed to what, as which presence member, and the webhooks a change must
give (reference §3.2, §5.5, §5.6)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from flask_pusher.server.state import Connection

from .helpers import channel_auth

#: ``{channel: (subscribers, presence member ids)}``
Snapshot = dict[str, tuple[int, frozenset[str]]]


class Slot:
    """The model of one connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.channels: dict[str, str | None] = {}  # channel -> presence user id
        self.user: str | None = None

    def subscribe(self, channel: str, user: str | None) -> str:
        """Model a subscription to ``channel`` (joining a presence channel as
        ``user``, else as the signed-in user); return the frame to send."""
        presence = channel.startswith("presence-")
        data: dict[str, Any] = {"channel": channel}
        channel_data = {"user_id": user} if user is not None and presence else None
        if channel.startswith(("private-", "presence-")):
            data.update(channel_auth(self.conn.socket_id, channel, channel_data))
        if channel not in self.channels:
            uid = (user if user is not None else self.user) if presence else None
            if not presence or uid is not None:
                self.channels[channel] = uid
        return json.dumps({"event": "pusher:subscribe", "data": data})


class Model:
    """The connections of one app, wherever they are (a mixin of the state
    machines, which fill ``slots``)."""

    slots: dict[int, Any]

    def subscribers(self, channel: str) -> list[Slot]:
        return [s for s in self.slots.values() if channel in s.channels]

    def members(self, channel: str) -> set[str]:
        return {m for s in self.subscribers(channel) if (m := s.channels[channel]) is not None}

    def snapshot(self) -> Snapshot:
        names = {c for s in self.slots.values() for c in s.channels}
        return {c: (len(self.subscribers(c)), frozenset(self.members(c))) for c in names}

    def hooks_since(self, before: Snapshot) -> Counter[str]:
        """The webhooks (``"name channel [user_id]"``) the change from
        ``before`` to now must give, subscription counts aside."""
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
        return expected


def hook_key(event: dict[str, Any]) -> str:
    """A webhook event as :meth:`Model.hooks_since` names it."""
    return " ".join(str(event[k]) for k in ("name", "channel", "user_id") if k in event)
