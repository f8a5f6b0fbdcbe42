"""Typed events out of the core (issue 15 item 3; h11/wsproto style): the core's
effects carry frozen dataclasses that observers match on, encoded to the same
protocol JSON as before only at the edge (reference §5: the frames pusher-js reads)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from flask_pusher.server import events
from flask_pusher.server.core import Core

from .test_core import Clock
from .test_core import connect
from .test_core import make_core
from .test_core import send
from .test_core import subscribe


@pytest.fixture
def core() -> Core:
    return make_core(Clock(), max_presence_members=1)


def test_answers_are_typed(core: Core) -> None:
    ann, bob = connect(core), connect(core)
    (ok,) = [s.event for s in subscribe(core, ann, "presence-a", {"user_id": "ann"}).sends]
    assert ok == events.SubscriptionSucceeded("presence-a", {"ann": None})
    (full,) = [s.event for s in subscribe(core, bob, "presence-a", {"user_id": "bob"}).sends]
    assert full == events.SubscriptionRefused(
        "presence-a", "Presence channel presence-a is full (1 members)", 403, "LimitReached"
    )
    (bad,) = [s.event for s in send(core, ann, "pusher:subscribe", {"channel": "private-x"}).sends]
    assert isinstance(bad, events.SubscriptionRefused) and bad.status == 401
    (nope,) = [s.event for s in send(core, ann, "nope", {}).sends]
    assert isinstance(nope, events.ProtocolError) and nope.code is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        nope.code = 1  # type: ignore[misc]


def test_encoded_at_the_edge_as_pusher_js_reads_them() -> None:
    ok = events.SubscriptionSucceeded("presence-a", {"ann": {"n": 1}})
    assert json.loads(ok.encode()) == {
        "event": "pusher_internal:subscription_succeeded",
        "channel": "presence-a",
        "data": json.dumps(
            {"presence": {"ids": ["ann"], "hash": {"ann": {"n": 1}}, "count": 1}},
            separators=(",", ":"),
        ),
    }
    refused = events.SubscriptionRefused("private-x", "no", 401)
    assert json.loads(refused.encode()) == {
        "event": "pusher:subscription_error",
        "channel": "private-x",
        "data": {"type": "AuthError", "error": "no", "status": 401},
    }
    assert events.Encoded('{"event":"x"}').encode() == '{"event":"x"}'
    assert json.loads(events.PING.encode()) == {"event": "pusher:ping", "data": "{}"}
