"""Fixtures for after-commit and the outbox: Flask-SQLAlchemy apps on a SQLite
file (and on PostgreSQL, see ``postgres.py``), pointed at the session's local server."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from flask_pusher import Pusher
from flask_pusher.outbox.relay import Relay
from tests.server.redis_server import free_port

from .postgres import PostgresServer

AppFactory = Callable[..., tuple[Flask, SQLAlchemy, Pusher]]


def make_app(
    uri: str, pusher_config: dict[str, Any], **config: Any
) -> tuple[Flask, SQLAlchemy, Pusher]:
    """An app with a ``Note`` model, Flask-SQLAlchemy on ``uri`` and Pusher on the local server."""

    class Base(DeclarativeBase):  # one registry per app: the tests make many apps
        pass

    db = SQLAlchemy(model_class=Base)

    class Note(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "note"
        id: Mapped[int] = mapped_column(primary_key=True)
        text: Mapped[str]

    app = Flask("outbox_app")
    app.config.update({**pusher_config, **config}, TESTING=True, SQLALCHEMY_DATABASE_URI=uri)
    db.init_app(app)
    pusher = Pusher(app)
    app.extensions["note_model"] = Note
    with app.app_context():
        db.create_all()
    return app, db, pusher


@pytest.fixture
def sqlite_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'app.db'}"


@pytest.fixture
def make(sqlite_uri: str, pusher_config: dict[str, Any]) -> Iterator[AppFactory]:
    """``make(**config)``: a SQLite app; its engines are disposed of afterwards."""
    made: list[tuple[Flask, SQLAlchemy]] = []

    def factory(**config: Any) -> tuple[Flask, SQLAlchemy, Pusher]:
        app, db, pusher = make_app(config.pop("uri", sqlite_uri), pusher_config, **config)
        made.append((app, db))
        return app, db, pusher

    yield factory
    for app, db in made:
        with app.app_context():
            db.engine.dispose()


def relay_for(app: Flask, **kwargs: Any) -> Relay:
    """A relay for ``app``'s outbox, as ``flask pusher relay`` builds it."""
    pusher: Pusher = app.extensions["pusher"]
    with app.app_context():
        outbox = pusher.outbox
        assert outbox is not None
        return outbox.make_relay(**kwargs)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session (skipped without Debian's binaries, unless CI).

    Its files are in a new directory of the system's temporary directory, which
    the ``postgres`` user can reach when the tests run as root (pytest's own
    temporary directories may be inside a home it cannot enter).
    """
    directory = Path(tempfile.mkdtemp(prefix="flask-pusher-postgres-"))
    try:
        server = PostgresServer.for_tests(directory)
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def unused_port() -> int:
    """A port nothing listens on (a connection to it is refused)."""
    return free_port()
