"""Bounded benchmark of the transactional outbox (issue 17), loopback only.

Three measurements, each repeated ``--runs`` times in the same run (medians):

- *view*: a Flask view that commits one row through Flask-SQLAlchemy, and the
  same view that also triggers 3 events through the outbox (``PUSHER_OUTBOX``),
  called alternately with the test client; the ratio of their times per
  request, on SQLite (a file) and on PostgreSQL (Debian's binaries, started here
  in a temporary directory as ``tests/outbox/postgres.py`` does; skipped
  without them). Target: at most 1.3x.
- *relay*: ``--backlog`` committed events over 20 channels, sent by one
  :class:`~flask_pusher.outbox.relay.Relay` to a local server
  (``python -m flask_pusher.server`` in its own process), and on PostgreSQL
  also by 4 relays in threads (``flask pusher relay --threads 4``); events per
  second. Target: at least 2,000 events/s.
- *latency*: commit-to-delivery with the in-process relay thread
  (``PUSHER_OUTBOX_RELAY_THREAD``): one event committed at a time, received by
  a raw WebSocket subscriber; p50 and p99. Target: p50 at most 50 ms.

The load average is printed before and after: the machine may be shared.
Run: ``python benchmarks/outbox.py`` (about a minute; ``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flask import Flask  # noqa: E402
from flask_sqlalchemy import SQLAlchemy  # noqa: E402

from flask_pusher import Pusher  # noqa: E402
from tests.outbox.postgres import postgres_bin  # noqa: E402
from tests.outbox.postgres import PostgresServer  # noqa: E402
from tests.server.redis_server import free_port  # noqa: E402

APP_ID, KEY, SECRET = "1", "bench-key", "bench-secret"
CHANNELS = [f"bench-{i}" for i in range(20)]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def make_app(uri: str, port: int, **config: Any) -> tuple[Flask, SQLAlchemy, Pusher, Any]:
    db = SQLAlchemy()

    class Note(db.Model):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)
        text = db.Column(db.String(100), nullable=False)

    app = Flask("bench")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=uri,
        PUSHER_APP_ID=APP_ID,
        PUSHER_KEY=KEY,
        PUSHER_SECRET=SECRET,
        PUSHER_HOST="127.0.0.1",
        PUSHER_PORT=port,
        PUSHER_SSL=False,
        PUSHER_OUTBOX=True,
        **config,
    )
    db.init_app(app)
    pusher = Pusher(app)

    @app.post("/plain")
    def plain() -> dict[str, Any]:
        db.session.add(Note(text="x"))
        db.session.commit()
        return {}

    @app.post("/events")
    def events() -> dict[str, Any]:
        note = Note(text="x")
        db.session.add(note)
        for n in range(3):
            pusher.trigger(CHANNELS[n], "note", {"n": n, "text": "x"})
        db.session.commit()
        return {}

    with app.app_context():
        db.create_all()
    return app, db, pusher, Note


def view_ratio(uri: str, requests: int, runs: int) -> tuple[float, float, float]:
    """Median seconds per request without and with events, and their ratio."""
    app, db, _, _ = make_app(uri, 1)
    client = app.test_client()
    for path in ("/plain", "/events"):  # warm up
        for _ in range(20):
            client.post(path)
    plain: list[float] = []
    events: list[float] = []
    for _ in range(runs):
        for path, into in (("/plain", plain), ("/events", events)):
            start = time.perf_counter()
            for _ in range(requests):
                assert client.post(path).status_code == 200
            into.append((time.perf_counter() - start) / requests)
    with app.app_context():
        db.engine.dispose()
    a, b = statistics.median(plain), statistics.median(events)
    return a, b, b / a


class Server:
    """``python -m flask_pusher.server`` on a free port, in its own process."""

    def __init__(self) -> None:
        self.port = free_port()
        env = {**os.environ, "PUSHER_SECRET": SECRET, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flask_pusher.server",
                "--app-id",
                APP_ID,
                "--key",
                KEY,
                "--port",
                str(self.port),
                "--no-metrics",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import urllib.request

        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # waiting for a process to listen

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


def relay_throughput(uri: str, port: int, backlog: int, runs: int, relays: int = 1) -> list[float]:
    """Events per second of ``relays`` relays (threads) emptying a committed backlog."""
    app, db, pusher, _ = make_app(uri, port)
    rates = []
    for _ in range(runs):
        with app.app_context():
            for n in range(backlog):
                pusher.trigger(CHANNELS[n % len(CHANNELS)], "e", {"n": n})
                if n % 500 == 499:
                    db.session.commit()
            db.session.commit()
            outbox: Any = pusher.outbox
            workers = [outbox.make_relay(limit=500) for _ in range(relays)]

        def drain(relay: Any) -> None:
            while relay.run_once():
                pass

        threads = [threading.Thread(target=drain, args=(r,)) for r in workers]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
        for relay in workers:
            relay.release()  # the next run's relay takes the SQLite lease at once
        sent = sum(relay.stats.sent for relay in workers)
        assert sent == backlog, [relay.stats for relay in workers]
        rates.append(backlog / elapsed)
    with app.app_context():
        db.engine.dispose()
    return rates


class Subscriber:
    """A raw WebSocket on ``channel`` (reference §5.5), in a thread; arrival times."""

    def __init__(self, port: int, channel: str) -> None:
        self.port, self.channel = port, channel
        self.arrivals: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self.ready = threading.Event()
        threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True).start()
        if not self.ready.wait(10):
            raise RuntimeError("the subscriber did not subscribe")

    async def _run(self) -> None:
        import aiohttp

        url = f"ws://127.0.0.1:{self.port}/app/{KEY}?protocol=7"
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            await ws.receive_json()
            await ws.send_json({"event": "pusher:subscribe", "data": {"channel": self.channel}})
            async for message in ws:
                frame = json.loads(message.data)
                if frame["event"] == "pusher_internal:subscription_succeeded":
                    self.ready.set()
                elif not frame["event"].startswith("pusher"):
                    self.arrivals.put((time.perf_counter(), json.loads(frame["data"])))


def latency(uri: str, port: int, count: int) -> list[float]:
    """Commit-to-delivery seconds of ``count`` events, one at a time."""
    app, db, pusher, Note = make_app(
        uri, port, PUSHER_OUTBOX_RELAY_THREAD=True, PUSHER_OUTBOX_POLL_INTERVAL=3600
    )
    subscriber = Subscriber(port, CHANNELS[0])
    times = []
    try:
        for n in range(count + 10):
            with app.app_context():
                db.session.add(Note(text="x"))
                pusher.trigger(CHANNELS[0], "e", {"n": n})
                start = time.perf_counter()
                db.session.commit()
            arrived, data = subscriber.arrivals.get(timeout=10)
            assert data == {"n": n}, data
            if n >= 10:  # the first ones start the thread and warm up
                times.append(arrived - start)
    finally:
        with app.app_context():
            thread = pusher.outbox.thread  # type: ignore[union-attr]
            if thread is not None:
                thread.stop()
            db.engine.dispose()
    return times


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200, help="per view and run")
    parser.add_argument("--backlog", type=int, default=5000, help="events per relay run")
    parser.add_argument("--latency-events", type=int, default=300)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.requests, args.backlog, args.latency_events = 2, 30, 500, 30
    print(f"load average before: {load()}")
    workdir = Path(tempfile.mkdtemp(prefix="outbox-bench-"))
    databases = {"sqlite": lambda name: f"sqlite:///{workdir / name}.db"}
    postgres = None
    if postgres_bin() is not None:
        # Its own directory in /tmp: the postgres user must reach it when run as root.
        pgdir = Path(tempfile.mkdtemp(prefix="flask-pusher-postgres-"))
        postgres = PostgresServer(pgdir, postgres_bin())  # type: ignore[arg-type]
        postgres.start()
        databases["postgresql"] = postgres.create_database
    else:
        print("PostgreSQL: skipped (no /usr/lib/postgresql/*/bin)")
    server = Server()
    try:
        print(f"\nview: commit 1 row, vs. 1 row + 3 events through the outbox ({args.runs} runs)")
        for name, database in databases.items():
            plain, events, ratio = view_ratio(database("view"), args.requests, args.runs)
            verdict = "ok" if ratio <= 1.3 else "over target"
            print(
                f"  {name:10s} {plain * 1000:7.2f} ms -> {events * 1000:7.2f} ms"
                f"  x{ratio:.2f}  (target <= 1.3: {verdict})"
            )
        print(f"\nrelay: {args.backlog} committed events over 20 channels ({args.runs} runs)")
        setups = [(name, database, 1) for name, database in databases.items()]
        if "postgresql" in databases:
            setups.append(("postgresql", databases["postgresql"], 4))
        for name, database, relays in setups:
            rates = relay_throughput(
                database(f"relay{relays}"), server.port, args.backlog, args.runs, relays
            )
            median = statistics.median(rates)
            verdict = "ok" if median >= 2000 else "under target"
            runs = ", ".join(f"{r:.0f}" for r in rates)
            label = f"{name} x{relays}"
            print(
                f"  {label:14s} {median:7.0f} events/s (runs: {runs})  (target >= 2000: {verdict})"
            )
        print(f"\nlatency: commit to delivery, relay thread, {args.latency_events} events")
        for name, database in databases.items():
            times = latency(database("latency"), server.port, args.latency_events)
            p50, p99 = percentile(times, 50) * 1000, percentile(times, 99) * 1000
            verdict = "ok" if p50 <= 50 else "over target"
            print(
                f"  {name:10s} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  (target p50 <= 50: {verdict})"
            )
    finally:
        server.stop()
        if postgres is not None:
            postgres.stop()
            shutil.rmtree(postgres.directory, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nload average after: {load()}")


if __name__ == "__main__":
    main()
