"""``trigger(..., after_commit=True)`` and ``PUSHER_AFTER_COMMIT``: events leave only
once ``db.session``'s transaction commits (SQLAlchemy session events), against the
real local server (reference §4.2) and Flask-SQLAlchemy on a SQLite file."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from flask_pusher import ConfigurationError
from flask_pusher import Pusher
from flask_pusher.server import LocalServer

from ..listener import Listener
from .conftest import AppFactory


def note(app: Flask, db: SQLAlchemy, text: str) -> None:
    db.session.add(app.extensions["note_model"](text=text))


def marker(pusher: Pusher) -> None:
    """An event sent at once: whatever arrives before it was sent before it."""
    pusher.trigger("notes", "marker", {}, after_commit=False)


def test_an_event_leaves_after_the_commit_and_not_before(
    make: AppFactory, pusher_server: LocalServer
) -> None:
    app, db, pusher = make()
    with Listener(pusher_server, ["notes"]) as listener, app.app_context():
        note(app, db, "a")
        pusher.trigger("notes", "created", {"text": "a"}, after_commit=True)
        marker(pusher)
        db.session.commit()
        assert listener.take(2) == [("notes", "marker", {}), ("notes", "created", {"text": "a"})]


def test_a_rollback_sends_nothing(make: AppFactory, pusher_server: LocalServer) -> None:
    app, db, pusher = make(PUSHER_AFTER_COMMIT=True)
    with Listener(pusher_server, ["notes"]) as listener, app.app_context():
        note(app, db, "a")
        pusher.trigger("notes", "created", {"text": "a"})
        db.session.rollback()
        note(app, db, "b")
        pusher.trigger("notes", "created", {"text": "b"})
        db.session.commit()
        assert listener.take(1) == [("notes", "created", {"text": "b"})]
        marker(pusher)
        assert listener.take(1) == [("notes", "marker", {})]


def test_a_view_that_never_commits_sends_nothing(
    make: AppFactory, pusher_server: LocalServer
) -> None:
    app, db, pusher = make(PUSHER_AFTER_COMMIT=True)

    @app.post("/forgets")
    def forgets() -> dict[str, Any]:
        note(app, db, "lost")
        pusher.trigger("notes", "created", {"text": "lost"})
        return {}  # no commit: Flask-SQLAlchemy closes the session at teardown

    @app.post("/fails")
    def fails() -> dict[str, Any]:
        note(app, db, "failed")
        pusher.trigger("notes", "created", {"text": "failed"})
        db.session.flush()
        raise RuntimeError("the view failed after a flush")

    @app.post("/saves")
    def saves() -> dict[str, Any]:
        note(app, db, "saved")
        pusher.trigger("notes", "created", {"text": "saved"})
        db.session.commit()
        return {}

    app.config["PROPAGATE_EXCEPTIONS"] = False
    client = app.test_client()
    with Listener(pusher_server, ["notes"]) as listener:
        assert client.post("/forgets").status_code == 200
        assert client.post("/fails").status_code == 500
        assert client.post("/saves").status_code == 200
        assert listener.take(1) == [("notes", "created", {"text": "saved"})]
        with app.app_context():
            marker(pusher)
        assert listener.take(1) == [("notes", "marker", {})]


def test_savepoints(make: AppFactory, pusher_server: LocalServer) -> None:
    """A rolled-back savepoint drops its events; a released one keeps them until the
    outer transaction ends, which decides (begin_nested)."""
    app, db, pusher = make(PUSHER_AFTER_COMMIT=True)
    with Listener(pusher_server, ["notes"]) as listener, app.app_context():
        note(app, db, "outer")
        pusher.trigger("notes", "e", {"n": 1})
        with db.session.begin_nested():
            pusher.trigger("notes", "e", {"n": 2})
        savepoint = db.session.begin_nested()
        pusher.trigger("notes", "e", {"n": 3})
        savepoint.rollback()
        with db.session.begin_nested():
            pusher.trigger("notes", "e", {"n": 4})
            with db.session.begin_nested():
                pusher.trigger("notes", "e", {"n": 5})
        db.session.commit()
        assert [d for _, _, d in listener.take(3)] == [{"n": 1}, {"n": 2}, {"n": 4}, {"n": 5}][:3]
        assert listener.take(1) == [("notes", "e", {"n": 5})]
        # Released savepoints, then an outer rollback: nothing.
        note(app, db, "again")
        with db.session.begin_nested():
            pusher.trigger("notes", "e", {"n": 6})
        db.session.rollback()
        marker(pusher)
        assert listener.take(1) == [("notes", "marker", {})]


def test_with_no_transaction_in_progress_the_next_commit_sends(
    make: AppFactory, pusher_server: LocalServer
) -> None:
    app, db, pusher = make()
    with Listener(pusher_server, ["notes"]) as listener, app.app_context():
        pusher.trigger("notes", "first", {}, after_commit=True)
        marker(pusher)
        db.session.commit()
        assert listener.take(2) == [("notes", "marker", {}), ("notes", "first", {})]


def test_after_commit_then_after_the_response(make: AppFactory, pusher_server: LocalServer) -> None:
    """With PUSHER_DEFER too, a commit inside a view sends after the response."""
    app, db, pusher = make(PUSHER_AFTER_COMMIT=True, PUSHER_DEFER=True)

    @app.post("/save")
    def save() -> dict[str, Any]:
        note(app, db, "x")
        pusher.trigger("notes", "created", {"text": "x"})
        db.session.commit()
        pusher.trigger("notes", "now", {}, after_commit=False, defer=False)
        return {}

    with Listener(pusher_server, ["notes"]) as listener:
        response = app.test_client().post("/save")
        assert response.status_code == 200
        assert listener.take(1) == [("notes", "now", {})]
        response.close()  # the WSGI server closes the response once it is sent
        assert listener.take(1) == [("notes", "created", {"text": "x"})]


def test_batches_and_users_are_held_too(make: AppFactory, pusher_server: LocalServer) -> None:
    app, db, pusher = make(PUSHER_AFTER_COMMIT=True)
    with Listener(pusher_server, ["notes"]) as listener, app.app_context():
        pusher.trigger_batch([{"channel": "notes", "name": "b", "data": {"n": 1}}])
        db.session.rollback()
        pusher.trigger_batch([{"channel": "notes", "name": "b", "data": {"n": 2}}])
        db.session.commit()
        assert listener.take(1) == [("notes", "b", {"n": 2})]


def test_after_commit_needs_flask_sqlalchemy(pusher_config: dict[str, Any]) -> None:
    app = Flask("no_db")
    app.config.update(pusher_config, PUSHER_AFTER_COMMIT=True)
    with pytest.raises(ConfigurationError, match=r"PUSHER_AFTER_COMMIT needs Flask-SQLAlchemy"):
        Pusher(app)
    app = Flask("no_db_call")
    app.config.update(pusher_config)
    pusher = Pusher(app)
    with app.app_context(), pytest.raises(RuntimeError, match=r"db\.init_app"):
        pusher.trigger("notes", "e", {}, after_commit=True)


def test_two_binds_one_session(
    sqlite_uri: str, tmp_path: Any, pusher_config: dict[str, Any], pusher_server: LocalServer
) -> None:
    """SQLALCHEMY_BINDS: one session, one transaction over both databases; the event
    leaves once, after both have committed, and not at all on rollback."""

    class Base(DeclarativeBase):
        pass

    db = SQLAlchemy(model_class=Base)

    class Order(db.Model):  # type: ignore[name-defined,misc]
        id: Mapped[int] = mapped_column(primary_key=True)

    class Audit(db.Model):  # type: ignore[name-defined,misc]
        __bind_key__ = "audit"
        id: Mapped[int] = mapped_column(primary_key=True)

    app = Flask("binds")
    app.config.update(
        pusher_config,
        SQLALCHEMY_DATABASE_URI=sqlite_uri,
        SQLALCHEMY_BINDS={"audit": f"sqlite:///{tmp_path / 'audit.db'}"},
        PUSHER_AFTER_COMMIT=True,
    )
    db.init_app(app)
    pusher = Pusher(app)
    with Listener(pusher_server, ["orders"]) as listener, app.app_context():
        db.create_all()
        db.session.add_all([Order(id=1), Audit(id=1)])
        pusher.trigger("orders", "placed", {"id": 1})
        db.session.rollback()
        db.session.add_all([Order(id=2), Audit(id=2)])
        pusher.trigger("orders", "placed", {"id": 2})
        db.session.commit()
        assert listener.take(1) == [("orders", "placed", {"id": 2})]
        assert db.session.get(Audit, 2) is not None and db.session.get(Audit, 1) is None
        pusher.trigger("orders", "marker", {}, after_commit=False)
        assert listener.take(1) == [("orders", "marker", {})]  # nothing else came first
        for engine in db.engines.values():
            engine.dispose()
