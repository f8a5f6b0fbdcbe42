"""The transactional outbox: events written in the caller's transaction, sent by a relay.

With ``PUSHER_OUTBOX`` on, :meth:`flask_pusher.Pusher.trigger`,
:meth:`~flask_pusher.Pusher.trigger_batch` and
:meth:`~flask_pusher.Pusher.send_to_user` insert their events into the
``flask_pusher_outbox`` table through ``db.session``, in the transaction of the
data they describe; :class:`~flask_pusher.outbox.relay.Relay` sends the
committed ones (``flask pusher relay``, or a thread in the app process with
``PUSHER_OUTBOX_RELAY_THREAD``). See :doc:`/reliable-delivery`.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any
from typing import TYPE_CHECKING

from sqlalchemy import insert

from ..errors import ConfigurationError
from ..transactions import after_commit
from ..transactions import hold_rows
from .table import lease_table
from .table import outbox_table

if TYPE_CHECKING:
    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy
    from sqlalchemy.orm import Session

    from ..settings import PusherSettings
    from .relay import Relay
    from .relay import RelayThread

__all__ = ["Outbox", "find_db"]


def find_db(app: Flask, needed_by: str) -> SQLAlchemy:
    """The app's Flask-SQLAlchemy extension, ``app.extensions["sqlalchemy"]``.

    :param needed_by: the config key that needs it, for the error message.
    :raises ConfigurationError: Flask-SQLAlchemy is not installed or not
        initialised on ``app`` before ``pusher.init_app(app)``.
    """
    db = app.extensions.get("sqlalchemy")
    if db is None:
        raise ConfigurationError(
            f"{needed_by} needs Flask-SQLAlchemy on the app: install it (pip install"
            " 'Flask-Pusher[sqlalchemy]'), create 'db = SQLAlchemy()' and call"
            " db.init_app(app) before pusher.init_app(app)."
        )
    return db  # type: ignore[no-any-return]


class Outbox:
    """One app's outbox: the table in the app's metadata, and the relay's wake-up.

    :param app: the app (kept as a weak reference, for the relay thread).
    :param db: the app's Flask-SQLAlchemy extension; the table is defined in
        ``db.metadata``, so ``db.create_all()`` and Alembic autogenerate see it.
    :param settings: the app's settings (``PUSHER_OUTBOX_*``).
    """

    def __init__(self, app: Flask, db: SQLAlchemy, settings: PusherSettings) -> None:
        self._app = weakref.ref(app)
        self.db = db
        self.settings = settings
        #: The ``flask_pusher_outbox`` table.
        self.table = outbox_table(db.metadata)
        #: The ``flask_pusher_outbox_lease`` table (one relay at a time on SQLite).
        self.lease_table = lease_table(db.metadata)
        #: Set after each commit that wrote events: the in-process relay wakes up.
        self.wake = threading.Event()
        self.thread: RelayThread | None = None
        self._lock = threading.Lock()

    def write(self, items: Iterable[dict[str, Any]], session: Session | None = None) -> int:
        """Add ``batch_events`` items to the outbox, in ``session``'s transaction.

        The rows are inserted just before the outermost transaction commits (in
        SQLAlchemy's ``before_commit`` event), in call order, in one statement;
        rows of a rolled-back savepoint are never inserted
        (:func:`flask_pusher.transactions.hold_rows`).

        :param items: dicts with ``channel``, ``name``, ``data`` (an encoded
            string) and optional ``socket_id``, as
            :func:`flask_pusher.delivery.batch_items` makes them.
        :param session: default ``db.session()``, the current scoped session.
        :returns: the number of rows written. Nothing is committed here.
        """
        session = session if session is not None else self.db.session()
        now = time.time()
        rows = [
            {
                "channel": item["channel"],
                "name": item["name"],
                "data": item["data"],
                "socket_id": item.get("socket_id") or None,
                "created_at": now,
                "attempts": 0,
                "next_attempt_at": 0.0,
            }
            for item in items
        ]
        if not rows:
            return 0
        hold_rows(session, self, self._insert, rows)
        after_commit(session, self.committed, key=self)
        return len(rows)

    def _insert(self, session: Session, rows: list[dict[str, Any]]) -> None:
        # With RETURNING, SQLAlchemy batches the rows into one INSERT ... VALUES
        # statement ("insertmanyvalues"): one round trip, where psycopg's
        # executemany pipeline takes several.
        table = self.table
        session.execute(insert(table).returning(table.c.id), rows).all()

    def committed(self) -> None:
        """Called after a commit that wrote events: wake the in-process relay
        (started here with ``PUSHER_OUTBOX_RELAY_THREAD`` if it is not running)."""
        if self.settings.outbox_relay_thread and (
            self.thread is None or not self.thread.is_alive()
        ):
            app = self._app()
            if app is not None:
                self.start_thread(app)
        self.wake.set()

    def start_before_request(self) -> None:
        """A ``before_request`` function: start the relay thread at the first request,
        so the backlog left by an earlier run is sent."""
        if self.thread is None:
            app = self._app()
            if app is not None:
                self.start_thread(app)

    def make_relay(self, **options: Any) -> Relay:
        """A :class:`~flask_pusher.outbox.relay.Relay` for this outbox, in the app context.

        :param options: keyword arguments of :class:`~flask_pusher.outbox.relay.Relay`.
        """
        from flask import current_app

        from .relay import Relay

        client = current_app.extensions["pusher"].client
        return Relay(self.db.engine, self, client, **options)

    def start_thread(self, app: Flask) -> RelayThread:
        """Start the in-process relay thread for ``app`` once (``PUSHER_OUTBOX_RELAY_THREAD``).

        :returns: the running thread.
        """
        with self._lock:
            if self.thread is None or not self.thread.is_alive():
                from .relay import RelayThread

                self.thread = RelayThread(app, self)
                self.thread.start()
            return self.thread


def check_database(db: SQLAlchemy, app: Flask) -> None:
    """Refuse an in-memory SQLite database: the relay's connection would not see
    the app's rows (or would share one connection between threads)."""
    uri = str(app.config.get("SQLALCHEMY_DATABASE_URI") or "")
    if uri.startswith("sqlite") and (
        uri in ("sqlite://", "sqlite:///:memory:") or "mode=memory" in uri
    ):
        raise ConfigurationError(
            "PUSHER_OUTBOX needs a database the relay can open too: an in-memory"
            " SQLite database is private to one connection. Use a file"
            " (SQLALCHEMY_DATABASE_URI = 'sqlite:///app.db') or a server database."
        )
