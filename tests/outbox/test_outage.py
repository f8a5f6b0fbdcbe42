"""Pusher away for 30 s (issue 17): the local server stopped while 4 threads commit
1,000 events over 20 channels through the outbox; real pusher-js 8.6 subscribers
(tests/outbox/subscriber.js) must then see every committed event, in order per
channel, none of a rolled-back transaction, and no duplicate unless a send had an
unknown outcome (reference §4.2 batch_events, §5.12 close code 4200)."""

from __future__ import annotations

import json
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flask_pusher.server import AppConfig
from flask_pusher.server import LocalServer
from flask_pusher.testing import TEST_APP_ID
from flask_pusher.testing import TEST_KEY
from flask_pusher.testing import TEST_SECRET
from tests.server.redis_server import free_port

from ..needs import unavailable
from .conftest import make_app
from .test_outbox import relay_env
from .test_outbox import ROOT

OUTAGE = 30.0  # seconds, the number
THREADS = 4
EVENTS = 1000
CHANNELS = [f"outage-{i}" for i in range(20)]
SUBSCRIBER = Path(__file__).with_name("subscriber.js")


class Subscriber:
    """pusher-js in Node; its lines arrive in :attr:`lines`."""

    def __init__(self, port: int) -> None:
        config = {"key": TEST_KEY, "wsPort": port, "channels": CHANNELS}
        self.proc = subprocess.Popen(
            ["node", str(SUBSCRIBER), json.dumps(config)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def wait_for(self, done: Any, timeout: float) -> None:
        """Read lines (keeping events) until ``done(line)`` is true."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"pusher-js: timed out after {len(self.events)} events")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if "event" in line:
                self.events.append(line)
            if done(line):
                return

    def wait_subscribed(self, timeout: float = 60) -> None:
        pending = set(CHANNELS)

        def done(line: dict[str, Any]) -> bool:
            pending.discard(line.get("subscribed", ""))
            return not pending

        self.wait_for(done, timeout)

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=10)


@pytest.fixture
def subscriber_ready() -> None:
    if shutil.which("node") is None or not (ROOT / "node_modules" / "pusher-js").is_dir():
        unavailable("needs node and `npm ci` (pusher-js in node_modules).")


@pytest.fixture
def server() -> Iterator[LocalServer]:
    running = LocalServer(
        [AppConfig(TEST_APP_ID, TEST_KEY, TEST_SECRET)], port=free_port(), metrics=False
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.timeout(240)
def test_nothing_committed_is_lost_while_pusher_is_away(
    subscriber_ready: None, server: LocalServer, tmp_path: Path
) -> None:
    uri = f"sqlite:///{tmp_path / 'outage.db'}"
    config = {
        "PUSHER_APP_ID": TEST_APP_ID,
        "PUSHER_KEY": TEST_KEY,
        "PUSHER_SECRET": TEST_SECRET,
        "PUSHER_HOST": "127.0.0.1",
        "PUSHER_PORT": server.port,
        "PUSHER_SSL": False,
    }
    app, db, pusher = make_app(uri, config, PUSHER_OUTBOX=True)
    subscriber = Subscriber(server.port)
    relay = subprocess.Popen(
        [sys.executable, "-m", "flask", "pusher", "relay"],
        env=relay_env(uri, server.port),
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    phases = [threading.Event() for _ in range(2)]  # outage started, server back
    done = [threading.Barrier(THREADS + 1) for _ in range(3)]
    errors: list[BaseException] = []
    per_thread = EVENTS // THREADS

    def write(thread: int) -> None:
        try:
            with app.app_context():
                sent = 0
                transaction = 0
                for phase, end in enumerate((per_thread // 4, per_thread * 3 // 4, per_thread)):
                    if phase:
                        phases[phase - 1].wait(120)
                    while sent < end:
                        transaction += 1
                        if transaction % 7 == 0:  # a transaction that rolls back
                            pusher.trigger(CHANNELS[thread], "e", {"t": thread, "lost": True})
                            db.session.rollback()
                        size = min(1 + transaction % 4, end - sent)
                        for _ in range(size):
                            channel = CHANNELS[(thread * 7 + sent) % len(CHANNELS)]
                            pusher.trigger(channel, "e", {"t": thread, "n": sent})
                            sent += 1
                        db.session.commit()
                    done[phase].wait(120)
        except BaseException as e:
            errors.append(e)
            for barrier in done:
                barrier.abort()

    writers = [threading.Thread(target=write, args=(t,), daemon=True) for t in range(THREADS)]
    try:
        subscriber.wait_subscribed()
        for w in writers:
            w.start()
        done[0].wait(120)  # a quarter committed (and relayed) before the outage
        server.stop()
        outage_began = time.monotonic()
        phases[0].set()
        done[1].wait(120)  # half of the events committed while Pusher is away
        assert not errors, errors
        threading.Event().wait(max(0.0, OUTAGE - (time.monotonic() - outage_began)))
        # Pusher does not replay an event to a connection that was not there:
        # the relay waits (SIGSTOP) until pusher-js has reconnected and resubscribed.
        relay.send_signal(signal.SIGSTOP)
        server.start()
        subscriber.wait_subscribed()
        relay.send_signal(signal.SIGCONT)
        phases[1].set()
        done[2].wait(120)
        assert not errors, errors
        subscriber.wait_for(lambda _: len(subscriber.events) >= EVENTS, timeout=120)
    finally:
        relay.send_signal(signal.SIGCONT)
        relay.send_signal(signal.SIGTERM)
        _, err = relay.communicate(timeout=30)
        for w in writers:
            w.join(10)
    assert relay.returncode == 0, err
    stats = json.loads(err.rsplit("Relay stopped: ", 1)[1].splitlines()[0])
    # A last event, sent after the relay stopped: whatever the relay sent is before it.
    with app.app_context():
        pusher.trigger(CHANNELS[0], "marker", {}, outbox=False)
    subscriber.wait_for(lambda line: line.get("event") == "marker", timeout=30)
    subscriber.close()

    got = [e for e in subscriber.events if e["event"] == "e"]
    assert not [e for e in got if e["data"].get("lost")], "a rolled-back event was sent"
    seen = Counter((e["data"]["t"], e["data"]["n"]) for e in got)
    expected = {(t, n) for t in range(THREADS) for n in range(per_thread)}
    assert set(seen) == expected, f"{len(expected - set(seen))} committed events never arrived"
    duplicates = sum(seen.values()) - len(expected)
    print(f"outage: {len(got)} events received, {duplicates} duplicates, relay stats {stats}")
    if stats["unknown_outcome"] == 0:
        assert duplicates == 0
    else:
        assert duplicates <= stats["unknown_outcome"]
    # In order per channel: each writer's events, first copies only.
    last: dict[tuple[str, int], int] = {}
    first_copies: set[tuple[int, int]] = set()
    for event in got:
        thread, n = event["data"]["t"], event["data"]["n"]
        if (thread, n) in first_copies:
            continue
        first_copies.add((thread, n))
        key = (event["channel"], thread)
        assert n > last.get(key, -1), f"{event} overtook an earlier event of its channel"
        last[key] = n
    assert stats["retries"] > 0  # it did fail while the server was away
