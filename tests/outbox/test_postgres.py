"""The outbox on a real PostgreSQL server (tests/outbox/postgres.py): relays share
the work with ``SELECT ... FOR UPDATE SKIP LOCKED`` and keep each channel's order;
three ``flask pusher relay`` processes send every event once."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import threading
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select

from flask_pusher.server import LocalServer

from ..listener import Listener
from .conftest import AppFactory
from .conftest import relay_for
from .postgres import PostgresServer
from .test_outbox import relay_env
from .test_outbox import ROOT

_names = itertools.count()


@pytest.fixture
def pg_uri(postgres: PostgresServer) -> str:
    return postgres.create_database(f"outbox_{next(_names)}")


def test_relays_share_the_work_and_keep_each_channels_order(
    make: AppFactory, pg_uri: str, pusher_server: LocalServer
) -> None:
    app, db, pusher = make(uri=pg_uri, PUSHER_OUTBOX=True)
    first, second = relay_for(app, limit=4), relay_for(app, limit=100)
    assert first.skip_locked and second.skip_locked
    with app.app_context():
        for n in range(6):
            pusher.trigger("a" if n < 3 else "b", "e", {"n": n})  # a: 0-2, b: 3-5
        pusher.trigger("a", "e", {"n": 6})
        db.session.commit()
    with first.engine.begin() as conn:
        claimed = first._claim(conn, 4)  # locks the 4 oldest rows: a 0-2, b 3
        assert [r.id for r in claimed] == [1, 2, 3, 4]
        with second.engine.begin() as other:
            # Rows 1-4 are skipped; a's 6 and b's 4-5 would overtake rows held above.
            assert second._claim(other, 100) == []
    with Listener(pusher_server, ["a", "b"]) as listener:
        assert first.run_once() == 4
        assert second.run_once() == 3
        got = listener.take(7)
    assert [d["n"] for c, _, d in got if c == "a"] == [0, 1, 2, 6]
    assert [d["n"] for c, _, d in got if c == "b"] == [3, 4, 5]


@pytest.mark.parametrize(
    "commands",
    [[["relay"]] * 3, [["relay", "--threads", "3"]]],
    ids=["three processes", "three threads"],
)
def test_three_relays_send_every_event_once(
    make: AppFactory, pg_uri: str, pusher_server: LocalServer, commands: list[list[str]]
) -> None:
    app, db, pusher = make(uri=pg_uri, PUSHER_OUTBOX=True)
    channels = [f"ch-{i}" for i in range(20)]
    count = 600
    env = relay_env(pg_uri, pusher_server.port)
    with Listener(pusher_server, channels) as listener:
        relays = [
            subprocess.Popen(
                [sys.executable, "-m", "flask", "pusher", *command],
                env=env,
                cwd=ROOT,
                stderr=subprocess.PIPE,
                text=True,
            )
            for command in commands
        ]
        try:

            def commit(thread: int) -> None:
                with app.app_context():
                    for n in range(thread, count, 4):
                        pusher.trigger(channels[n % 20], "e", {"n": n, "t": thread})
                        if n % 8 < 4:
                            db.session.commit()
                    db.session.commit()

            writers = [threading.Thread(target=commit, args=(t,)) for t in range(4)]
            for w in writers:
                w.start()
            for w in writers:
                w.join(60)
            got = listener.take(count, timeout=30)
        finally:
            outputs = []
            for proc in relays:
                proc.send_signal(signal.SIGTERM)
                outputs.append(proc.communicate(timeout=30)[1])
        assert listener.events.empty()
    assert all(proc.returncode == 0 for proc in relays), outputs
    seen = Counter(d["n"] for _, _, d in got)
    assert sorted(seen) == list(range(count)) and set(seen.values()) == {1}
    check_order(got)
    sent_by = [int(_stat(out, "sent")) for out in outputs]
    assert sum(sent_by) == count, sent_by
    print("events sent by each relay:", sent_by)
    with app.app_context():
        table = pusher.outbox.table  # type: ignore[union-attr]
        unsent = db.session.execute(select(table).where(table.c.sent_at.is_(None))).all()
    assert unsent == []


def check_order(got: list[tuple[str, str, Any]]) -> None:
    """Each writer's events on each channel arrive in the order it committed them."""
    last: dict[tuple[str, int], int] = {}
    for channel, _, data in got:
        key = (channel, data["t"])
        assert data["n"] > last.get(key, -1), f"{data} overtook an earlier event on {channel}"
        last[key] = data["n"]


def _stat(output: str, name: str) -> str:
    import json

    line = next(li for li in output.splitlines() if li.startswith("Relay stopped: "))
    return str(json.loads(line.removeprefix("Relay stopped: "))[name])


def test_a_relay_killed_mid_batch_loses_nothing(
    make: AppFactory, pg_uri: str, pusher_server: LocalServer
) -> None:
    """SIGKILL after a batch_events request left and before its rows were marked
    sent: the next relay sends everything; duplicates are at most that batch."""
    app, db, pusher = make(uri=pg_uri, PUSHER_OUTBOX=True)
    count = 50
    with app.app_context():
        for n in range(count):
            pusher.trigger(f"ch-{n % 5}", "e", {"n": n, "t": 0})
        db.session.commit()
    command = [sys.executable, "-m", "flask", "pusher", "relay"]
    channels = [f"ch-{i}" for i in range(5)]
    with Listener(pusher_server, channels) as listener:
        slow = subprocess.Popen(
            command,
            env=relay_env(pg_uri, pusher_server.port, OUTBOX_SLOW_SEND="60"),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert slow.stdout is not None
            assert slow.stdout.readline().strip() == "SENT"
            first = listener.take(10)  # the batch in flight reached the subscriber
        finally:
            slow.send_signal(signal.SIGKILL)
            slow.communicate(timeout=10)
        again = subprocess.Popen(
            command,
            env=relay_env(pg_uri, pusher_server.port),
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            rest = listener.take(count, timeout=30)  # the 10 again, then the 40 others
        finally:
            again.send_signal(signal.SIGTERM)
            again.communicate(timeout=30)
    got = first + rest
    seen = Counter(d["n"] for _, _, d in got)
    assert sorted(seen) == list(range(count))
    duplicates = sum(seen.values()) - count
    print(f"duplicates after the SIGKILL: {duplicates} (the batch in flight: 10)")
    assert duplicates == 10
    check_order(rest)
