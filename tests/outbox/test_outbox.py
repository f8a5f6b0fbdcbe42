"""The transactional outbox on SQLite: events written in the caller's transaction,
sent by the relay to the real local server in order per channel, 10 to a
batch_events request (reference §4.2, §4.4), retried, set aside, purged."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import inspect
from sqlalchemy import select

from flask_pusher import ConfigurationError
from flask_pusher import Pusher
from flask_pusher.server import LocalServer
from flask_pusher.testing import record_events

from ..listener import Listener
from .conftest import AppFactory
from .conftest import relay_for

ROOT = Path(__file__).resolve().parents[2]


def rows(app: Flask) -> list[Any]:
    pusher: Pusher = app.extensions["pusher"]
    db: SQLAlchemy = app.extensions["sqlalchemy"]
    with app.app_context():
        table = pusher.outbox.table  # type: ignore[union-attr]
        return list(db.session.execute(select(table).order_by(table.c.id)))


def test_outbox_needs_flask_sqlalchemy_and_a_shared_database(
    pusher_config: dict[str, Any],
) -> None:
    app = Flask("no_db")
    app.config.update(pusher_config, PUSHER_OUTBOX=True)
    with pytest.raises(
        ConfigurationError, match=r"PUSHER_OUTBOX needs Flask-SQLAlchemy.*db\.init_app"
    ):
        Pusher(app)
    app = Flask("memory")
    app.config.update(pusher_config, PUSHER_OUTBOX=True, SQLALCHEMY_DATABASE_URI="sqlite://")
    SQLAlchemy(app)
    with pytest.raises(ConfigurationError, match="in-memory SQLite"):
        Pusher(app)


def test_create_all_creates_the_outbox_table(make: AppFactory) -> None:
    app, db, _ = make(PUSHER_OUTBOX=True)
    with app.app_context():
        tables = inspect(db.engine).get_table_names()
    assert {"flask_pusher_outbox", "flask_pusher_outbox_lease", "note"} <= set(tables)


def test_events_exist_exactly_when_the_data_does(make: AppFactory) -> None:
    app, db, pusher = make(PUSHER_OUTBOX=True)
    Note = app.extensions["note_model"]
    with app.app_context():
        db.session.add(Note(text="kept"))
        pusher.trigger(["a", "b"], "created", {"text": "kept"})
        pusher.trigger_batch([{"channel": "c", "name": "batched", "data": {"n": 1}}])
        pusher.send_to_user("42", "hello", {"to": "you"})
        db.session.commit()
        db.session.add(Note(text="lost"))
        pusher.trigger("a", "created", {"text": "lost"})
        db.session.rollback()
    got = [(r.channel, r.name, json.loads(r.data), r.sent_at) for r in rows(app)]
    assert got == [
        ("a", "created", {"text": "kept"}, None),
        ("b", "created", {"text": "kept"}, None),
        ("c", "batched", {"n": 1}, None),
        ("#server-to-user-42", "hello", {"to": "you"}, None),
    ]


def test_savepoints_and_call_order(make: AppFactory) -> None:
    """Rows are inserted at the commit, in call order; a rolled-back savepoint's
    never are, a released one's stay with the enclosing transaction."""
    app, db, pusher = make(PUSHER_OUTBOX=True)
    with app.app_context():
        pusher.trigger("a", "e", {"n": 1})
        with db.session.begin_nested():
            pusher.trigger("a", "e", {"n": 2})
        savepoint = db.session.begin_nested()
        pusher.trigger("a", "e", {"n": 3})
        savepoint.rollback()
        pusher.trigger("a", "e", {"n": 4})
        db.session.commit()
        with db.session.begin_nested():
            pusher.trigger("a", "e", {"n": 5})
        db.session.rollback()
        pusher.trigger("a", "e", {"n": 6})
        db.session.close()  # never committed
    assert [json.loads(r.data)["n"] for r in rows(app)] == [1, 2, 4]


def test_record_events_records_at_the_commit(make: AppFactory) -> None:
    app, db, pusher = make(PUSHER_OUTBOX=True)
    with record_events(app) as events, app.app_context():
        pusher.trigger("a", "e", {"n": 1})
        assert events == []
        db.session.commit()
        pusher.trigger("a", "e", {"n": 2})
        db.session.rollback()
    assert [(e.channels, e.json) for e in events] == [(("a",), {"n": 1})]
    assert rows(app) == []


def test_the_relay_sends_in_order_in_batches_of_10(
    make: AppFactory, pusher_server: LocalServer
) -> None:
    app, db, pusher = make(PUSHER_OUTBOX=True)
    relay = relay_for(app)
    with Listener(pusher_server, ["a", "b"]) as listener:
        with app.app_context():
            for n in range(15):
                pusher.trigger("a" if n % 3 else "b", "e", {"n": n})
            db.session.commit()
        assert relay.run_once() == 15
        assert relay.run_once() == 0
        got = listener.take(15)
    assert [d["n"] for c, _, d in got if c == "a"] == [n for n in range(15) if n % 3]
    assert [d["n"] for c, _, d in got if c == "b"] == [n for n in range(15) if not n % 3]
    assert relay.stats.requests == 2  # 10 + 5
    assert all(r.sent_at is not None for r in rows(app))
    assert relay.status().backlog == 0
    assert relay.status().sent_kept == 15
    relay.retention = 0.0
    assert relay.purge() == 15
    assert rows(app) == []


def test_refused_events_are_set_aside_with_the_reason(
    make: AppFactory, pusher_server: LocalServer
) -> None:
    """Too much data (reference §4.4: Pusher's 10 KB; pusher-http-python's trigger
    lets 20 KB through): the server answers the batch 413, the relay resends it one
    event at a time and sets the big one aside; the others are sent, in order."""
    app, db, pusher = make(PUSHER_OUTBOX=True)
    relay = relay_for(app)
    with Listener(pusher_server, ["a"]) as listener:
        with app.app_context():
            pusher.trigger("a", "e", {"n": 0})
            pusher.trigger("a", "big", "x" * 20_000)
            pusher.trigger("a", "e", {"n": 2})
            db.session.commit()
        relay.run_once()
        assert listener.take(2) == [("a", "e", {"n": 0}), ("a", "e", {"n": 2})]
    status = relay.status()
    assert (status.backlog, status.set_aside) == (0, 1)
    aside = [r for r in rows(app) if r.failed_at is not None]
    assert [r.name for r in aside] == ["big"]
    assert aside[0].error.startswith("HTTP 413")


def test_network_errors_are_retried_with_backoff_in_order(
    make: AppFactory, pusher_server: LocalServer, unused_port: int
) -> None:
    """Pusher unreachable (a refused connection): retried after a backoff; another
    relay of the same database sends them once it is reachable."""
    app, db, pusher = make(PUSHER_OUTBOX=True, PUSHER_PORT=unused_port)
    down = relay_for(app, retry_base=0.05, retry_max=0.1)
    with Listener(pusher_server, ["a"]) as listener:
        with app.app_context():
            for n in range(3):
                pusher.trigger("a", "e", {"n": n})
            db.session.commit()
        assert down.run_once() == 3
        assert down.stats.retries == 3 and down.stats.unknown_outcome == 0
        status = down.status()
        assert status.backlog == 3 and status.oldest_age >= 0
        assert down.run_once() == 0  # backing off: nothing is due yet
        down.release()
        up_app, _, _ = make(PUSHER_OUTBOX=True)
        up = relay_for(up_app)
        deadline = time.monotonic() + 5
        while up.run_once() == 0:
            assert time.monotonic() < deadline, "the retry never came due"
            time.sleep(0.02)  # waiting for the backoff to pass, by the clock
        assert listener.take(3) == [("a", "e", {"n": n}) for n in range(3)]
    assert [r.attempts for r in rows(app)] == [1, 1, 1]


def test_on_sqlite_one_relay_works_at_a_time(make: AppFactory, pusher_server: LocalServer) -> None:
    app, db, pusher = make(PUSHER_OUTBOX=True)
    first, second = relay_for(app), relay_for(app)
    with app.app_context():
        pusher.trigger("a", "e", {})
        db.session.commit()
    assert second._take_lease()
    assert first.run_once() == 0  # the second holds the lease
    second.release()
    assert first.run_once() == 1
    assert second.run_once() == 0 and not second._take_lease()


def test_the_in_process_relay_is_woken_by_the_commit(
    make: AppFactory, pusher_server: LocalServer
) -> None:
    """PUSHER_OUTBOX_RELAY_THREAD: a poll interval of an hour, yet the event arrives."""
    app, db, pusher = make(
        PUSHER_OUTBOX=True, PUSHER_OUTBOX_RELAY_THREAD=True, PUSHER_OUTBOX_POLL_INTERVAL=3600
    )
    try:
        with Listener(pusher_server, ["a"]) as listener:
            for n in range(3):
                with app.app_context():
                    pusher.trigger("a", "e", {"n": n})
                    db.session.commit()
                assert listener.take(1, timeout=5) == [("a", "e", {"n": n})]
    finally:
        with app.app_context():
            thread = pusher.outbox.thread  # type: ignore[union-attr]
        assert thread is not None
        thread.stop()
        assert not thread.is_alive()


def relay_env(uri: str, port: int, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "FLASK_APP": "tests.outbox.relay_app",
        "OUTBOX_DATABASE_URI": uri,
        "OUTBOX_PUSHER_PORT": str(port),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def test_flask_pusher_relay_runs_until_sigterm(
    make: AppFactory, sqlite_uri: str, pusher_server: LocalServer
) -> None:
    app, db, pusher = make(PUSHER_OUTBOX=True)
    env = relay_env(sqlite_uri, pusher_server.port)
    with Listener(pusher_server, ["a"]) as listener:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flask", "pusher", "relay"],
            env=env,
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            with app.app_context():
                pusher.trigger("a", "e", {"n": 1})
                db.session.commit()
            assert listener.take(1) == [("a", "e", {"n": 1})]
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "Relay stopped" in err and '"sent": 1' in err
    status = subprocess.run(
        [sys.executable, "-m", "flask", "pusher", "outbox"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert json.loads(status.stdout) == {
        "backlog": 0,
        "oldest_age": 0.0,
        "set_aside": 0,
        "sent_kept": 1,
    }


def test_relay_threads_need_postgresql(make: AppFactory, sqlite_uri: str) -> None:
    make(PUSHER_OUTBOX=True)  # creates the tables
    result = subprocess.run(
        [sys.executable, "-m", "flask", "pusher", "relay", "--threads", "2"],
        env=relay_env(sqlite_uri, 1),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--threads needs PostgreSQL" in result.stderr


def test_relay_without_the_outbox_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "tests.cli_app", "pusher", "relay"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "PUSHER_OUTBOX is off" in result.stderr


def test_flask_pusher_relay_once(
    make: AppFactory, sqlite_uri: str, pusher_server: LocalServer
) -> None:
    app, db, pusher = make(PUSHER_OUTBOX=True)
    with Listener(pusher_server, ["a"]) as listener:
        with app.app_context():
            for n in range(12):
                pusher.trigger("a", "e", {"n": n})
            db.session.commit()
        result = subprocess.run(
            [sys.executable, "-m", "flask", "pusher", "relay", "--once"],
            env=relay_env(sqlite_uri, pusher_server.port),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        stats = json.loads(result.stdout)
        assert (stats["sent"], stats["requests"]) == (12, 2)
        assert listener.take(12) == [("a", "e", {"n": n}) for n in range(12)]
